//! Creating and updating an index: scan the roots, diff against what the index holds, encode new
//! and changed files in parallel, drop removed ones, and save checkpoints along the way.
//!
//! Every checkpoint is a complete, consistent index (files are added whole), written atomically,
//! so a killed run loses at most the work since its last checkpoint.

use std::collections::{BTreeMap, HashSet};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rayon::prelude::*;

use super::{EncodedFile, Index, IndexError, ModeIndex, SegmentEncodings, format};
use crate::audio::AudioSource;
use crate::features::segment::{Segment, SegmentStream, is_silent};
use crate::features::{FrameFeature, LogMel};
use crate::library::{self, FileRecord, LabelMap, ScanProblem};
use crate::model::{Encoded, Encoder, Mode};

/// Segments handed to the encoder at once.
const ENCODE_BATCH: usize = 64;

pub struct BuildOptions<'a> {
    pub labels: Option<&'a LabelMap>,
    /// Start from an empty index instead of updating the existing one.
    pub rebuild: bool,
    /// Longest time between checkpoints.
    pub checkpoint_every: Duration,
    /// Set from another thread to stop after the files under way (the index keeps them).
    pub cancel: Option<&'a AtomicBool>,
}

/// The encoders of the modes to build, by mode.
pub type Encoders = BTreeMap<Mode, Box<dyn Encoder>>;

/// Progress reported while building.
#[derive(Debug, Clone)]
pub enum BuildEvent {
    /// Scanning found this much to encode.
    Planned {
        files: usize,
        audio_s: f64,
    },
    /// A file was encoded (or failed: `error` says why).
    FileDone {
        path: PathBuf,
        audio_s: f64,
        error: Option<String>,
    },
    Checkpoint,
}

#[derive(Debug, Default)]
pub struct BuildReport {
    pub added: usize,
    pub updated: usize,
    pub removed: usize,
    pub relabelled: usize,
    pub unchanged: usize,
    /// Files and folders that could not be read, with the reason.
    pub failed: Vec<ScanProblem>,
    pub encoded_audio_s: f64,
    pub checkpoints: usize,
    pub cancelled: bool,
    pub elapsed: Duration,
}

/// Creates or updates the index in `db` with the audio under `paths` (and the roots it had).
pub fn build(
    db: &Path,
    paths: &[PathBuf],
    encoders: &Encoders,
    options: &BuildOptions<'_>,
    on_event: &(dyn Fn(BuildEvent) + Sync),
) -> Result<BuildReport, IndexError> {
    let started = Instant::now();
    format::remove_stale_temp_files(db);
    let mut index = if format::exists(db) && !options.rebuild {
        format::load(db)?
    } else {
        Index::new()
    };
    let mut report = BuildReport::default();
    let mode_added = prepare_modes(&mut index, encoders, db)?;
    add_roots(&mut index, paths);

    let scan = library::scan(&index.roots, options.labels, &|_| {});
    report.failed = scan.problems;
    let mut changes = library::diff(&index.files, &scan.files);
    if mode_added {
        // Files indexed before this mode existed need its segments too: encode everything.
        let known: HashSet<&Path> = index.files.iter().map(|f| f.path.as_path()).collect();
        let (changed, added) = scan
            .files
            .into_iter()
            .partition(|r| known.contains(r.path.as_path()));
        changes = library::Changes {
            added,
            changed,
            relabelled: Vec::new(),
            removed: changes.removed,
            unchanged: 0,
        };
    }
    let drop: HashSet<PathBuf> = changes
        .removed
        .iter()
        .cloned()
        .chain(changes.changed.iter().map(|r| r.path.clone()))
        .collect();
    index.remove(&drop);
    index.relabel(&changes.relabelled);
    (report.removed, report.relabelled, report.unchanged) = (
        changes.removed.len(),
        changes.relabelled.len(),
        changes.unchanged,
    );

    let todo: Vec<(FileRecord, bool)> = changes
        .added
        .into_iter()
        .map(|r| (r, false))
        .chain(changes.changed.into_iter().map(|r| (r, true)))
        .collect();
    on_event(BuildEvent::Planned {
        files: todo.len(),
        audio_s: todo.iter().map(|(r, _)| r.duration_s).sum(),
    });
    encode_all(
        &mut index,
        db,
        todo,
        encoders,
        options,
        on_event,
        &mut report,
    )?;

    format::save(&index, db)?;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Makes sure the index has a section per encoder, refusing sections made by other encoders.
/// Returns whether a section was added to an index that already held files.
fn prepare_modes(index: &mut Index, encoders: &Encoders, db: &Path) -> Result<bool, IndexError> {
    for (mode, existing) in &index.modes {
        let Some(encoder) = encoders.get(mode) else {
            continue;
        };
        let want = encoder.info();
        if &existing.encoder != want {
            return Err(IndexError::encoder_mismatch(
                db,
                *mode,
                &existing.encoder,
                want,
            ));
        }
    }
    let mut added = false;
    for (&mode, encoder) in encoders {
        if let std::collections::btree_map::Entry::Vacant(slot) = index.modes.entry(mode) {
            slot.insert(ModeIndex::new(
                mode,
                encoder.info().clone(),
                encoder.segmentation(),
            ));
            added |= !index.files.is_empty();
        }
    }
    Ok(added)
}

fn add_roots(index: &mut Index, paths: &[PathBuf]) {
    for p in paths {
        let root = library::canonical_root(p);
        if !index.roots.contains(&root) {
            index.roots.push(root);
        }
    }
}

/// Encodes files on all cores while this thread adds them to the index and saves checkpoints.
fn encode_all(
    index: &mut Index,
    db: &Path,
    todo: Vec<(FileRecord, bool)>,
    encoders: &Encoders,
    options: &BuildOptions<'_>,
    on_event: &(dyn Fn(BuildEvent) + Sync),
    report: &mut BuildReport,
) -> Result<(), IndexError> {
    let stop = AtomicBool::new(false);
    let cancelled = || {
        stop.load(Ordering::Relaxed) || options.cancel.is_some_and(|c| c.load(Ordering::Relaxed))
    };
    let (tx, rx) = std::sync::mpsc::channel::<(bool, Result<EncodedFile, ScanProblem>)>();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            todo.into_par_iter()
                .for_each_with(tx, |tx, (record, was_indexed)| {
                    if !cancelled() {
                        let _ = tx.send((was_indexed, encode_file(record, encoders)));
                    }
                });
        });
        let mut last_checkpoint = Instant::now();
        for (was_indexed, result) in rx {
            match result {
                Ok(file) => {
                    let (path, audio_s) = (file.record.path.clone(), file.record.duration_s);
                    report.encoded_audio_s += audio_s;
                    *(if was_indexed {
                        &mut report.updated
                    } else {
                        &mut report.added
                    }) += 1;
                    index.add(file);
                    on_event(BuildEvent::FileDone {
                        path,
                        audio_s,
                        error: None,
                    });
                }
                Err(problem) => {
                    on_event(BuildEvent::FileDone {
                        path: problem.path.clone(),
                        audio_s: 0.0,
                        error: Some(problem.reason.clone()),
                    });
                    report.failed.push(problem);
                }
            }
            if last_checkpoint.elapsed() >= options.checkpoint_every {
                if let Err(e) = format::save(index, db) {
                    stop.store(true, Ordering::Relaxed);
                    return Err(e);
                }
                report.checkpoints += 1;
                on_event(BuildEvent::Checkpoint);
                last_checkpoint = Instant::now();
            }
        }
        report.cancelled = cancelled();
        Ok(())
    })
}

/// Decodes one file and encodes its segments for every mode, streaming (memory is bounded by
/// one batch of segments whatever the file's length).
pub fn encode_file(
    mut record: FileRecord,
    encoders: &Encoders,
) -> Result<EncodedFile, ScanProblem> {
    let problem = |reason: String| ScanProblem {
        path: record.path.clone(),
        reason,
    };
    let source = AudioSource::open(&record.path).map_err(|e| problem(e.reason()))?;
    let mut log_mel = LogMel::new(&Default::default());
    let mut modes: Vec<ModeEncoder<'_>> = encoders
        .iter()
        .map(|(&mode, e)| ModeEncoder::new(mode, e.as_ref()))
        .collect();
    let mut failure: Option<String> = None;
    let mut on_frame = |frame: &[f32]| {
        for m in &mut modes {
            if let Err(e) = m.push(frame) {
                failure.get_or_insert(e);
            }
        }
    };
    let stats = source
        .stream(|chunk| {
            log_mel.push(chunk, &mut on_frame);
            ControlFlow::Continue(())
        })
        .map_err(|e| problem(e.reason()))?;
    log_mel.finish(&mut on_frame);
    if let Some(reason) = failure {
        return Err(problem(reason));
    }
    record.duration_s = stats.duration_s();
    let modes = modes
        .into_iter()
        .map(ModeEncoder::finish)
        .collect::<Result<Vec<_>, _>>()
        .map_err(problem)?;
    Ok(EncodedFile { record, modes })
}

/// Segments and encodings of one file for one mode, built up as frames arrive.
struct ModeEncoder<'a> {
    mode: Mode,
    encoder: &'a dyn Encoder,
    stream: SegmentStream,
    pending: Vec<Segment>,
    segments: Vec<(u32, u32)>,
    encoded: Encoded,
}

impl<'a> ModeEncoder<'a> {
    fn new(mode: Mode, encoder: &'a dyn Encoder) -> Self {
        let s = encoder.segmentation();
        let stream = SegmentStream::new(s.window, s.hop, crate::features::LOG_MEL_BANDS);
        Self {
            mode,
            encoder,
            stream,
            pending: Vec::new(),
            segments: Vec::new(),
            encoded: Encoded::default(),
        }
    }

    fn push(&mut self, frame: &[f32]) -> Result<(), String> {
        let pending = &mut self.pending;
        self.stream.push(frame, &mut |s| keep_sound(pending, s));
        if self.pending.len() >= ENCODE_BATCH {
            self.flush()
        } else {
            Ok(())
        }
    }

    fn flush(&mut self) -> Result<(), String> {
        let values: Vec<&[f32]> = self.pending.iter().map(|s| s.values.as_slice()).collect();
        self.encoder
            .encode(&values, &mut self.encoded)
            .map_err(|e| e.to_string())?;
        self.segments.extend(
            self.pending
                .drain(..)
                .map(|s| (s.start_frame as u32, s.n_frames as u32)),
        );
        Ok(())
    }

    fn finish(mut self) -> Result<SegmentEncodings, String> {
        let pending = &mut self.pending;
        self.stream.finish(&mut |s| keep_sound(pending, s));
        self.flush()?;
        Ok(SegmentEncodings {
            mode: self.mode,
            segments: self.segments,
            encoded: self.encoded,
        })
    }
}

/// Silent segments are left out of the index: silence would match all other silence.
fn keep_sound(pending: &mut Vec<Segment>, segment: Segment) {
    if !is_silent(&segment.values) {
        pending.push(segment);
    }
}
