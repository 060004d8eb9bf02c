//! Ingest: creating and updating an index. Scan the roots, diff against what the index holds, encode new
//! and changed files in parallel, drop removed ones, and save checkpoints along the way.
//!
//! Every checkpoint is a complete, consistent index (files are added whole), written atomically,
//! so a killed run loses at most the work since its last checkpoint.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rayon::prelude::*;

use super::Encoders;
use crate::audio::AudioSource;
use crate::features::segment::{Segment, SegmentStream};
use crate::features::{FrameFeature, FrontEnd};
use crate::index::store::Store;
use crate::index::{EncodedFile, Index, IndexError, ModeIndex, SegmentEncodings};
use crate::library::{self, FileRecord, LabelMap, ScanProblem};
use crate::model::{Encoded, Encoder, EncoderInput, Mode};

/// Segments handed to the encoder at once.
const ENCODE_BATCH: usize = 64;
/// Seconds of a file's audio between [`BuildEvent::Decoding`] reports while it is encoded: a
/// long recording moves the progress as it goes, not only once it is done.
const PROGRESS_EVERY_S: f64 = 10.0;

pub struct BuildOptions<'a> {
    pub labels: Option<&'a LabelMap>,
    /// Start from an empty index instead of updating the existing one.
    pub rebuild: bool,
    /// The paths given are all the index's roots: a root indexed before and not given again is
    /// forgotten, with its files (a folder removed from a library). Otherwise they are added.
    pub only_given_roots: bool,
    /// Longest time between checkpoints.
    pub checkpoint_every: Duration,
    /// Set from another thread to stop after the files under way (the index keeps them).
    pub cancel: Option<&'a AtomicBool>,
}

/// Progress reported while building.
#[derive(Debug, Clone)]
pub enum BuildEvent {
    /// Scanning found this much to encode.
    Planned {
        files: usize,
        audio_s: f64,
    },
    /// A file was encoded (or failed: `error` says why; or was indexed with problems:
    /// `damage` says which).
    FileDone {
        path: PathBuf,
        audio_s: f64,
        error: Option<String>,
        damage: Option<String>,
    },
    /// This much of a file being encoded (seconds from its start) is decoded so far; reported
    /// every [`PROGRESS_EVERY_S`], before the file's [`BuildEvent::FileDone`].
    Decoding {
        path: PathBuf,
        audio_s: f64,
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
    /// Files indexed with problems: damaged, but readable up to or around the damage (cut off,
    /// holes, samples that were not numbers), with what and where.
    pub damaged: Vec<ScanProblem>,
    pub encoded_audio_s: f64,
    pub checkpoints: usize,
    /// Sections that learned a code on the library's own embeddings in this run (see
    /// [`ModeIndex::refresh_library_code`]), with the segments it was learned on.
    pub codes_learned: Vec<LearnedCode>,
    pub cancelled: bool,
    pub elapsed: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LearnedCode {
    pub mode: Mode,
    pub bits: usize,
    pub segments: usize,
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
    let mut store = crate::index::open_store(db)?;
    let mut index = if store.exists()? && !options.rebuild {
        store.load()?
    } else {
        Index::new()
    };
    if options.rebuild {
        store.clear(&mut index)?;
    }
    let mut report = BuildReport::default();
    let mode_added = prepare_modes(&mut index, encoders, db)?;
    if options.only_given_roots {
        let given: HashSet<PathBuf> = paths.iter().map(|p| library::canonical_root(p)).collect();
        index.roots.retain(|root| given.contains(root));
    }
    let missing = add_roots(&mut index, paths);

    let scan = library::scan(&index.roots, options.labels, &|_| {});
    report.failed = scan.problems;
    report.failed.extend(missing);
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
    store.remove(&mut index, &drop)?;
    store.relabel(&mut index, &changes.relabelled)?;
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
        store.as_mut(),
        todo,
        encoders,
        options,
        on_event,
        &mut report,
    )?;
    let learning = store.learns_library_codes();
    for (&mode, data) in index.modes.iter_mut().filter(|_| learning) {
        if data.refresh_library_code()? {
            report.codes_learned.push(LearnedCode {
                mode,
                bits: data.bits(),
                segments: data.segments.len(),
            });
        }
    }
    store.checkpoint(&index)?;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Makes sure the index has a section per encoder, refusing sections made by other encoders.
/// Returns whether a section was added to an index that already held files.
fn prepare_modes(index: &mut Index, encoders: &Encoders, db: &Path) -> Result<bool, IndexError> {
    for (&mode, encoder) in encoders {
        if index.modes.contains_key(&mode) {
            index.section_for(db, mode, encoder.as_ref())?;
        }
    }
    let mut added = false;
    for (&mode, encoder) in encoders {
        if let std::collections::btree_map::Entry::Vacant(slot) = index.modes.entry(mode) {
            slot.insert(ModeIndex::new(
                mode,
                encoder.info().clone(),
                encoder.input(),
            ));
            added |= !index.files.is_empty();
        }
    }
    Ok(added)
}

/// Adds the folders and files of `paths` that exist to the index's roots; the others are
/// returned as problems (a mistyped path must not stay a root that every run reports).
fn add_roots(index: &mut Index, paths: &[PathBuf]) -> Vec<ScanProblem> {
    let mut missing = Vec::new();
    for p in paths {
        if !p.exists() {
            missing.push(ScanProblem {
                path: p.clone(),
                reason: "does not exist".into(),
            });
            continue;
        }
        let root = library::canonical_root(p);
        if !index.roots.contains(&root) {
            index.roots.push(root);
        }
    }
    missing
}

/// Encodes files on all cores while this thread adds them to the index and saves checkpoints.
fn encode_all(
    index: &mut Index,
    store: &mut dyn Store,
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
                        let path = record.path.clone();
                        let on_decoded = |audio_s| {
                            let path = path.clone();
                            on_event(BuildEvent::Decoding { path, audio_s });
                        };
                        let encoded = encode_file_reporting(record, encoders, &on_decoded);
                        let _ = tx.send((was_indexed, encoded));
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
                    let damage = file.record.damage.clone();
                    if let Some(reason) = &damage {
                        report.damaged.push(ScanProblem {
                            path: path.clone(),
                            reason: reason.clone(),
                        });
                    }
                    if let Err(e) = store.add(index, file) {
                        stop.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                    on_event(BuildEvent::FileDone {
                        path,
                        audio_s,
                        error: None,
                        damage,
                    });
                }
                Err(problem) => {
                    on_event(BuildEvent::FileDone {
                        path: problem.path.clone(),
                        audio_s: 0.0,
                        error: Some(problem.reason.clone()),
                        damage: None,
                    });
                    report.failed.push(problem);
                }
            }
            if last_checkpoint.elapsed() >= options.checkpoint_every {
                if let Err(e) = store.checkpoint(index) {
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
/// one batch of segments whatever the file's length). The file is decoded once per sample rate
/// its encoders read, and each distinct front end runs once for the modes that share it.
pub fn encode_file(record: FileRecord, encoders: &Encoders) -> Result<EncodedFile, ScanProblem> {
    encode_file_reporting(record, encoders, &|_| {})
}

/// [`encode_file`], calling `on_decoded` with the seconds decoded so far every
/// [`PROGRESS_EVERY_S`] of the file's audio.
fn encode_file_reporting(
    mut record: FileRecord,
    encoders: &Encoders,
    on_decoded: &dyn Fn(f64),
) -> Result<EncodedFile, ScanProblem> {
    let problem = |reason: String| ScanProblem {
        path: record.path.clone(),
        reason,
    };
    let mut modes = Vec::new();
    let mut duration_s = None;
    let mut damage = None;
    for (g, group) in by_rate(encoders).into_iter().enumerate() {
        let source = AudioSource::open(&record.path)
            .and_then(|s| s.resampled_to(group.rate))
            .map_err(|e| problem(e.reason()))?;
        let mut front_ends = group.front_ends;
        let mut failure: Option<String> = None;
        // The first decode reports progress; a second one, at another rate, repeats the file.
        let mut decoded = (g == 0).then_some(DecodedSoFar {
            rate: f64::from(group.rate),
            ..DecodedSoFar::default()
        });
        let stats = source
            .stream(|chunk| {
                for f in &mut front_ends {
                    f.push(chunk, &mut failure);
                }
                if let Some(d) = &mut decoded {
                    d.add(chunk.len(), on_decoded);
                }
                ControlFlow::Continue(())
            })
            .map_err(|e| problem(e.reason()))?;
        for f in &mut front_ends {
            f.finish(&mut failure);
        }
        if let Some(reason) = failure {
            return Err(problem(reason));
        }
        duration_s.get_or_insert(stats.duration_s());
        damage = damage.or(stats.damage());
        for f in front_ends {
            for m in f.modes {
                modes.push(m.finish().map_err(problem)?);
            }
        }
    }
    record.duration_s = duration_s.unwrap_or(0.0);
    record.damage = damage;
    Ok(EncodedFile { record, modes })
}

/// How much of a file is decoded, for [`BuildEvent::Decoding`].
#[derive(Default)]
struct DecodedSoFar {
    rate: f64,
    samples: usize,
    reported_s: f64,
}

impl DecodedSoFar {
    fn add(&mut self, samples: usize, on_decoded: &dyn Fn(f64)) {
        self.samples += samples;
        let seconds = self.samples as f64 / self.rate.max(1.0);
        if seconds - self.reported_s >= PROGRESS_EVERY_S {
            self.reported_s = seconds;
            on_decoded(seconds);
        }
    }
}

/// [`encode_file`] for a file outside any library (no label, nothing known of it yet).
pub fn encode_path(path: &Path, encoders: &Encoders) -> Result<EncodedFile, ScanProblem> {
    let record = FileRecord {
        path: path.to_owned(),
        size: 0,
        modified: None,
        duration_s: 0.0,
        label: String::new(),
        damage: None,
    };
    encode_file(record, encoders)
}

/// The front ends that read one sample rate.
struct RateGroup<'a> {
    rate: u32,
    front_ends: Vec<FrontEndRun<'a>>,
}

/// The encoders grouped by the rate they read, then by front end.
fn by_rate(encoders: &Encoders) -> Vec<RateGroup<'_>> {
    let mut groups: Vec<RateGroup<'_>> = Vec::new();
    for (&mode, encoder) in encoders {
        let front_end = encoder.input().front_end;
        let rate = front_end.sample_rate();
        let g = groups
            .iter()
            .position(|g| g.rate == rate)
            .unwrap_or_else(|| {
                groups.push(RateGroup {
                    rate,
                    front_ends: Vec::new(),
                });
                groups.len() - 1
            });
        let runs = &mut groups[g].front_ends;
        let r = runs
            .iter()
            .position(|f| f.front_end == front_end)
            .unwrap_or_else(|| {
                runs.push(FrontEndRun {
                    front_end,
                    stream: front_end.stream(),
                    modes: Vec::new(),
                });
                runs.len() - 1
            });
        runs[r].modes.push(ModeEncoder::new(mode, encoder.as_ref()));
    }
    groups
}

/// One front end streaming a file, and the modes that read its frames.
struct FrontEndRun<'a> {
    front_end: FrontEnd,
    stream: Box<dyn FrameFeature + Send>,
    modes: Vec<ModeEncoder<'a>>,
}

impl FrontEndRun<'_> {
    fn push(&mut self, samples: &[f32], failure: &mut Option<String>) {
        let modes = &mut self.modes;
        self.stream
            .push(samples, &mut |frame| frame_to_modes(modes, frame, failure));
    }

    fn finish(&mut self, failure: &mut Option<String>) {
        let modes = &mut self.modes;
        self.stream
            .finish(&mut |frame| frame_to_modes(modes, frame, failure));
    }
}

fn frame_to_modes(modes: &mut [ModeEncoder<'_>], frame: &[f32], failure: &mut Option<String>) {
    for m in modes {
        if let Err(e) = m.push(frame) {
            failure.get_or_insert(e);
        }
    }
}

/// Segments and encodings of one file for one mode, built up as frames arrive.
struct ModeEncoder<'a> {
    mode: Mode,
    encoder: &'a dyn Encoder,
    input: EncoderInput,
    stream: SegmentStream,
    pending: Vec<Segment>,
    segments: Vec<(u32, u32)>,
    encoded: Encoded,
}

impl<'a> ModeEncoder<'a> {
    fn new(mode: Mode, encoder: &'a dyn Encoder) -> Self {
        let input = encoder.input();
        let s = input.segmentation;
        let stream = SegmentStream::new(s.window, s.hop, input.front_end.dims());
        Self {
            mode,
            encoder,
            input,
            stream,
            pending: Vec::new(),
            segments: Vec::new(),
            encoded: Encoded::default(),
        }
    }

    fn push(&mut self, frame: &[f32]) -> Result<(), String> {
        let (pending, input) = (&mut self.pending, &self.input);
        self.stream
            .push(frame, &mut |s| keep_sound(pending, input, s));
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
        let (pending, input) = (&mut self.pending, &self.input);
        self.stream.finish(&mut |s| keep_sound(pending, input, s));
        self.flush()?;
        Ok(SegmentEncodings {
            mode: self.mode,
            segments: self.segments,
            encoded: self.encoded,
        })
    }
}

/// Silent segments are left out of the index: silence would match all other silence.
fn keep_sound(pending: &mut Vec<Segment>, input: &EncoderInput, segment: Segment) {
    if !input.front_end.is_silent(&segment.values) {
        pending.push(segment);
    }
}
