//! The engine work the app runs on background threads: loading models and indexes, indexing,
//! decoding and searching a query, preparing the inspector and the map. Nothing here touches the
//! UI; each function takes plain data and returns plain data (or a message for the user).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::features::{FrameFeature, LOG_MEL_BANDS, LogMel, LogMelConfig};
use crate::index::build::{BuildEvent, BuildOptions, BuildReport, Encoders};
use crate::index::{Index, IndexError, format};
use crate::model::{AttentionMap, Mode, encoder_for};
use crate::search::{Engine, Hit, MAX_QUERY_S, Searcher};

/// Seconds of context shown either side of a result in the inspector.
pub const INSPECTOR_CONTEXT_S: f64 = 3.0;

/// Both modes' encoders: the trained models where installed, else the baselines.
pub fn load_encoders() -> Result<Arc<Encoders>, String> {
    let mut encoders: Encoders = BTreeMap::new();
    for mode in Mode::ALL {
        let encoder = encoder_for(mode, None).map_err(|e| e.to_string())?;
        encoders.insert(mode, encoder);
    }
    Ok(Arc::new(encoders))
}

/// The index in `db`, or `None` when nothing was indexed there yet.
pub fn load_index(db: &Path) -> Result<Option<Arc<Index>>, String> {
    if !format::exists(db) {
        return Ok(None);
    }
    format::load(db)
        .map(|i| Some(Arc::new(i)))
        .map_err(|e| e.to_string())
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
}

impl IndexProgress {
    pub fn real_time_factor(&self) -> f64 {
        self.done_audio_s / self.elapsed.as_secs_f64().max(1e-3)
    }
}

pub struct IndexOutcome {
    pub result: Result<BuildReport, IndexError>,
    pub index: Result<Option<Arc<Index>>, String>,
}

/// Creates or updates the index of `folders` in `db`; `progress` is called after every file.
pub fn index_library(
    db: &Path,
    folders: &[PathBuf],
    encoders: &Encoders,
    rebuild: bool,
    cancel: &std::sync::atomic::AtomicBool,
    progress: &(dyn Fn(IndexProgress) + Sync),
) -> IndexOutcome {
    let started = Instant::now();
    let state = std::sync::Mutex::new(IndexProgress::default());
    let on_event = |event: BuildEvent| {
        let Ok(mut p) = state.lock() else { return };
        match event {
            BuildEvent::Planned { files, audio_s } => {
                p.planned_files = files;
                p.planned_audio_s = audio_s;
            }
            BuildEvent::FileDone {
                path,
                audio_s,
                error,
            } => {
                p.done_files += 1;
                p.done_audio_s += audio_s;
                if let Some(reason) = error {
                    p.failed.push((path, reason));
                }
            }
            BuildEvent::Checkpoint => return,
        }
        p.elapsed = started.elapsed();
        progress(p.clone());
    };
    let options = BuildOptions {
        labels: None,
        rebuild,
        checkpoint_every: Duration::from_secs(10),
        cancel: Some(cancel),
    };
    let result = crate::index::build::build(db, folders, encoders, &options, &on_event);
    IndexOutcome {
        result,
        index: load_index(db),
    }
}

/// A log-mel spectrogram ready to draw: one image column per `frames_per_column` frames, low
/// frequencies at the bottom.
#[derive(Clone)]
pub struct Spectrogram {
    pub image: egui::ColorImage,
    pub frames: usize,
    pub frames_per_column: usize,
}

/// Widest spectrogram image (textures have a size limit; the screen is narrower anyway).
const MAX_COLUMNS: usize = 4096;

pub fn spectrogram(log_mel: &[f32]) -> Spectrogram {
    let frames = log_mel.len() / LOG_MEL_BANDS;
    let per_column = frames.div_ceil(MAX_COLUMNS).max(1);
    let columns = frames.div_ceil(per_column).max(1);
    let top = log_mel.iter().copied().fold(f32::MIN, f32::max);
    let floor = top - 80.0;
    let mut pixels = vec![egui::Color32::BLACK; columns * LOG_MEL_BANDS];
    for c in 0..columns {
        let span = c * per_column..((c + 1) * per_column).min(frames);
        for band in 0..LOG_MEL_BANDS {
            let db = span
                .clone()
                .map(|t| log_mel[t * LOG_MEL_BANDS + band])
                .fold(f32::MIN, f32::max);
            let row = LOG_MEL_BANDS - 1 - band;
            pixels[row * columns + c] = colormap((db - floor) / 80.0);
        }
    }
    Spectrogram {
        image: egui::ColorImage::new([columns, LOG_MEL_BANDS], pixels),
        frames,
        frames_per_column: per_column,
    }
}

/// Dark blue through purple and orange to pale yellow, for 0..1 (a magma-like ramp).
pub fn colormap(x: f32) -> egui::Color32 {
    const STOPS: [(f32, [u8; 3]); 5] = [
        (0.0, [0, 0, 4]),
        (0.3, [59, 15, 112]),
        (0.55, [183, 55, 121]),
        (0.8, [252, 137, 97]),
        (1.0, [252, 253, 191]),
    ];
    let x = x.clamp(0.0, 1.0);
    let i = STOPS.iter().rposition(|s| s.0 <= x).unwrap_or(0).min(3);
    let ((x0, a), (x1, b)) = (STOPS[i], STOPS[i + 1]);
    let t = (x - x0) / (x1 - x0);
    let mix = |k: usize| (f32::from(a[k]) + t * (f32::from(b[k]) - f32::from(a[k]))) as u8;
    egui::Color32::from_rgb(mix(0), mix(1), mix(2))
}

pub fn log_mel(samples: &[f32]) -> Vec<f32> {
    let mut frames = Vec::new();
    let mut lm = LogMel::new(&LogMelConfig::default());
    let mut push = |f: &[f32]| frames.extend_from_slice(f);
    lm.push(samples, &mut push);
    lm.finish(&mut push);
    frames
}

/// A clip decoded and ready to search: the query, or a result in the inspector.
#[derive(Clone)]
pub struct Clip {
    pub name: String,
    /// The file it came from (none for a recording).
    pub path: Option<PathBuf>,
    /// Mono, 16 kHz.
    pub samples: Arc<Vec<f32>>,
    /// Where `samples` starts in the file, in seconds.
    pub offset_s: f64,
    pub log_mel: Arc<Vec<f32>>,
    pub spectrogram: Spectrogram,
    /// Something the user should know (e.g. the clip was cut).
    pub note: Option<String>,
}

impl Clip {
    /// The samples between two times (seconds from the clip's start), clamped to the clip.
    pub fn between(&self, (from_s, to_s): (f64, f64)) -> &[f32] {
        let rate = f64::from(crate::audio::TARGET_SAMPLE_RATE);
        let n = self.samples.len();
        let from = ((from_s * rate) as usize).min(n);
        let to = ((to_s * rate) as usize).clamp(from, n);
        &self.samples[from..to]
    }

    pub fn duration_s(&self) -> f64 {
        self.samples.len() as f64 / f64::from(crate::audio::TARGET_SAMPLE_RATE)
    }

    pub fn from_samples(
        name: String,
        path: Option<PathBuf>,
        mut samples: Vec<f32>,
        offset_s: f64,
    ) -> Self {
        let max = (MAX_QUERY_S * f64::from(crate::audio::TARGET_SAMPLE_RATE)) as usize;
        let note = (samples.len() > max).then(|| {
            samples.truncate(max);
            format!("only the first {} minutes are used", MAX_QUERY_S / 60.0)
        });
        let log_mel = log_mel(&samples);
        Self {
            name,
            path,
            spectrogram: spectrogram(&log_mel),
            samples: Arc::new(samples),
            offset_s,
            log_mel: Arc::new(log_mel),
            note,
        }
    }

    /// Decodes `path`, keeping `window` (seconds in the file) when given.
    pub fn decode(path: &Path, window: Option<(f64, f64)>) -> Result<Self, String> {
        // Past the longest query (and a second, to tell it was longer) nothing is decoded: a
        // ten-hour file dropped on the window costs ten minutes of samples.
        let until = window.map_or(MAX_QUERY_S + 1.0, |(_, to)| to);
        let audio = crate::audio::decode_prefix(path, until).map_err(|e| e.to_string())?;
        let rate = f64::from(crate::audio::TARGET_SAMPLE_RATE);
        let (start_s, samples) = match window {
            Some((a, b)) => {
                let n = audio.samples.len();
                let (from, to) = (((a * rate) as usize).min(n), ((b * rate) as usize).min(n));
                (
                    from as f64 / rate,
                    audio.samples[from..to.max(from)].to_vec(),
                )
            }
            None => (0.0, audio.samples),
        };
        Ok(Self::from_samples(
            super::results_panel::file_name(path),
            Some(path.to_owned()),
            samples,
            start_s,
        ))
    }

    /// The attention mask of the clip between two times (seconds from the clip's start), with
    /// its frames counted from the clip's start.
    pub fn attention(
        &self,
        encoders: &Encoders,
        mode: Mode,
        region: (f64, f64),
    ) -> Option<AttentionMap> {
        let fps = LogMelConfig::default().frames_per_second();
        let frames = self.log_mel.len() / LOG_MEL_BANDS;
        let from = ((region.0 * fps) as usize).min(frames);
        let to = ((region.1 * fps).ceil() as usize).clamp(from, frames);
        let slice = &self.log_mel[from * LOG_MEL_BANDS..to * LOG_MEL_BANDS];
        let mut map = encoders.get(&mode)?.attention(slice).ok()??;
        map.frames = map.frames.start + from..map.frames.end + from;
        Some(map)
    }
}

/// What a search found, for the results table and the inspector.
pub struct SearchOutcome {
    pub mode: Mode,
    pub hits: Vec<Hit>,
    pub attention: Option<AttentionMap>,
    pub elapsed: Duration,
    /// The region searched, seconds from the clip's start.
    pub region: (f64, f64),
}

/// Searches the library with `region` of the clip (the whole clip when `None`).
pub fn search(
    clip: &Clip,
    region: Option<(f64, f64)>,
    mode: Mode,
    db: &Path,
    index: &Index,
    encoders: &Encoders,
    top: usize,
) -> Result<SearchOutcome, String> {
    let started = Instant::now();
    let data = index.mode(mode, db).map_err(|e| e.to_string())?;
    let encoder = encoders
        .get(&mode)
        .ok_or_else(|| format!("no {} encoder", mode.name()))?;
    if encoder.info() != &data.encoder {
        return Err(
            IndexError::encoder_mismatch(db, mode, &data.encoder, encoder.info()).to_string()
                + " (use \"Rebuild index\" in the library panel)",
        );
    }
    let region = region.unwrap_or((0.0, clip.duration_s()));
    let searcher = Searcher::new(
        index,
        mode,
        data,
        encoder.as_ref(),
        Engine::default_for(mode),
    )
    .map_err(|e| e.to_string())?;
    let hits = searcher
        .search(clip.between(region), top)
        .map_err(|e| e.to_string())?;
    Ok(SearchOutcome {
        mode,
        attention: clip.attention(encoders, mode, region),
        hits,
        elapsed: started.elapsed(),
        region,
    })
}

/// The inspector's view of a result: the file around the match, with its attention.
pub struct Inspected {
    pub hit: Hit,
    pub clip: Clip,
    pub attention: Option<AttentionMap>,
}

pub fn inspect(hit: Hit, mode: Mode, encoders: &Encoders) -> Result<Inspected, String> {
    let window = (
        (hit.start_s - INSPECTOR_CONTEXT_S).max(0.0),
        hit.end_s + INSPECTOR_CONTEXT_S,
    );
    let clip = Clip::decode(&hit.path, Some(window))?;
    let matched = (hit.start_s - clip.offset_s, hit.end_s - clip.offset_s);
    let attention = clip.attention(encoders, mode, (matched.0.max(0.0), matched.1));
    Ok(Inspected {
        hit,
        clip,
        attention,
    })
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
    let codes = crate::projection::file_codes(data, index.files.len());
    let (files, kept): (Vec<usize>, Vec<&[u64]>) = codes
        .iter()
        .enumerate()
        .filter_map(|(f, c)| c.as_deref().map(|c| (f, c)))
        .unzip();
    let rows = crate::projection::signs(&kept, data.encoder.bits);
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
