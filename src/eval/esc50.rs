//! ESC-50 (K. J. Piczak): metadata, log-mel features computed once and cached, and the retrieval
//! protocol of `../shared/data/README.md` (database folds 1-4, queries fold 5, relevant = same
//! class; the zero-shot variant keeps classes 40-49 only).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::eval::metrics::{Agreement, CodeSet, RetrievalScores, retrieval_scores};
use crate::features::{FrameFeature, LOG_MEL_BANDS, LogMel, LogMelConfig, SAMPLE_RATE};
use crate::index::library_code::LibraryCode;
use crate::model::Encoded;
use crate::model::events::{EventsNet, encode_clips, trim_silence};
use crate::model::hash_head::{HashHead, Standardiser};
use crate::session::Encoders;

/// Default location of the data, relative to the project root.
pub const DEFAULT_DATA: &str = "../shared/data/esc50";
pub const QUERY_FOLD: u8 = 5;
/// The validation split's query fold (its database and training folds are 1-3).
pub const VALIDATION_FOLD: u8 = 4;
/// Zero-shot split: models train on targets below this, evaluation uses the rest.
pub const ZERO_SHOT_FIRST_CLASS: usize = 40;
/// Bumped when the cache layout or the features change.
const CACHE_VERSION: u32 = 1;
const CACHE_MAGIC: &[u8; 4] = b"ESLM";

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: ESC-50 not found here ({reason}); pass its folder with --data", path.display())]
    Missing { path: PathBuf, reason: String },
    #[error("{}: line {line}: {reason}", path.display())]
    Metadata {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone)]
pub struct Clip {
    pub path: PathBuf,
    pub fold: u8,
    pub target: usize,
}

/// The clip list and class names (by target).
pub struct Esc50 {
    pub clips: Vec<Clip>,
    pub labels: Vec<String>,
}

/// Which clips play which part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Folds 1-4 (all 50 classes) against fold 5.
    Standard,
    /// Classes 40-49 only (the model trained on 0-39).
    ZeroShot,
    /// Folds 1-3 against fold 4, all classes: for choosing a recipe without looking at fold 5.
    Validation,
    /// Folds 1-3 against fold 4, classes 30-39 only (the model trained on folds 1-3 of classes
    /// 0-29): for choosing how unseen classes are ranked without looking at fold 5 or at
    /// classes 40-49.
    ZeroShotValidation,
}

/// The first class [`Split::ZeroShotValidation`] leaves unseen.
pub const ZERO_SHOT_VALIDATION_FIRST_CLASS: usize = 30;

impl Split {
    pub fn in_database(self, c: &Clip) -> bool {
        c.fold < self.query_fold() && self.class_evaluated(c.target)
    }

    pub fn is_query(self, c: &Clip) -> bool {
        c.fold == self.query_fold() && self.class_evaluated(c.target)
    }

    /// Training clips: the database's folds, and for the zero-shot splits only the classes
    /// evaluation never sees.
    pub fn is_training(self, c: &Clip) -> bool {
        c.fold < self.query_fold()
            && match self {
                Split::Standard | Split::Validation => true,
                Split::ZeroShot => c.target < ZERO_SHOT_FIRST_CLASS,
                Split::ZeroShotValidation => c.target < ZERO_SHOT_VALIDATION_FIRST_CLASS,
            }
    }

    fn query_fold(self) -> u8 {
        match self {
            Split::Validation | Split::ZeroShotValidation => VALIDATION_FOLD,
            Split::Standard | Split::ZeroShot => QUERY_FOLD,
        }
    }

    fn class_evaluated(self, target: usize) -> bool {
        match self {
            Split::Standard | Split::Validation => true,
            Split::ZeroShot => target >= ZERO_SHOT_FIRST_CLASS,
            Split::ZeroShotValidation => {
                (ZERO_SHOT_VALIDATION_FIRST_CLASS..ZERO_SHOT_FIRST_CLASS).contains(&target)
            }
        }
    }
}

impl Esc50 {
    /// Reads `meta/esc50.csv` under `root`.
    pub fn load(root: &Path) -> Result<Self, DataError> {
        let meta = root.join("meta").join("esc50.csv");
        let mut reader = csv::Reader::from_path(&meta).map_err(|e| DataError::Missing {
            path: meta.clone(),
            reason: e.to_string(),
        })?;
        let mut clips = Vec::new();
        let mut labels: Vec<String> = Vec::new();
        for (i, row) in reader.records().enumerate() {
            let bad = |reason: String| DataError::Metadata {
                path: meta.clone(),
                line: i + 2,
                reason,
            };
            let row = row.map_err(|e| bad(e.to_string()))?;
            let field = |n: usize| {
                row.get(n)
                    .ok_or_else(|| bad(format!("no column {}", n + 1)))
            };
            let fold: u8 = field(1)?
                .parse()
                .map_err(|_| bad("fold is not a number".into()))?;
            let target: usize = field(2)?
                .parse()
                .map_err(|_| bad("target is not a number".into()))?;
            if target >= 1000 {
                return Err(bad(format!("target {target} out of range")));
            }
            if labels.len() <= target {
                labels.resize(target + 1, String::new());
            }
            labels[target] = field(3)?.to_string();
            clips.push(Clip {
                path: root.join("audio").join(field(0)?),
                fold,
                target,
            });
        }
        if clips.is_empty() {
            return Err(DataError::Missing {
                path: meta,
                reason: "no clips listed".into(),
            });
        }
        Ok(Self { clips, labels })
    }
}

/// Per clip, its log-mel frames (frame-major, 64 bands); `None` where the clip could not be read.
pub struct Features {
    pub clips: Vec<Option<Vec<f32>>>,
    /// Clips that could not be read, with the reason.
    pub failed: Vec<(PathBuf, String)>,
}

impl Features {
    /// Every clip with its edge silence trimmed, as the encoder sees it (empty where missing).
    pub fn trimmed(&self) -> Vec<&[f32]> {
        self.clips
            .iter()
            .map(|c| c.as_deref().map_or(&[][..], trim_silence))
            .collect()
    }
}

/// Log-mel features of every clip, from the cache when it holds this clip list and these
/// settings, else decoded in parallel and cached. `cache_dir: None` disables the cache.
pub fn features(data: &Esc50, cache_dir: Option<&Path>) -> Result<Features, DataError> {
    let cache = cache_dir.map(|d| d.join(format!("esc50-{:08x}.bin", cache_key(data, ""))));
    if let Some(c) = cache.as_deref()
        && let Some(clips) = read_cache(c, data.clips.len())
    {
        return Ok(Features {
            clips,
            failed: Vec::new(),
        });
    }
    let results: Vec<Result<Vec<f32>, String>> = data
        .clips
        .par_iter()
        .map(|clip| {
            let audio =
                crate::audio::decode_file(&clip.path, SAMPLE_RATE).map_err(|e| e.reason())?;
            Ok(LogMel::new(&LogMelConfig::default())
                .compute(&audio.samples)
                .data)
        })
        .collect();
    let mut failed = Vec::new();
    let clips = results
        .into_iter()
        .zip(&data.clips)
        .map(|(r, clip)| r.map_err(|e| failed.push((clip.path.clone(), e))).ok())
        .collect::<Vec<_>>();
    if let Some(c) = cache.as_deref()
        && failed.is_empty()
    {
        write_cache(c, &clips)?;
    }
    Ok(Features { clips, failed })
}

/// Changes when the clip list, the file sizes, the feature settings or the encoder (its weights
/// hash, for embedding caches) change.
fn cache_key(data: &Esc50, encoder: &str) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&CACHE_VERSION.to_le_bytes());
    h.update(format!("{:?}", LogMelConfig::default()).as_bytes());
    h.update(encoder.as_bytes());
    for c in &data.clips {
        h.update(c.path.as_os_str().as_encoded_bytes());
        let size = std::fs::metadata(&c.path).map_or(0, |m| m.len());
        h.update(&size.to_le_bytes());
    }
    h.finalize()
}

fn read_cache(path: &Path, n: usize) -> Option<Vec<Option<Vec<f32>>>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .read_to_end(&mut bytes)
        .ok()?;
    let (head, mut rest) = bytes.split_at_checked(8)?;
    if &head[..4] != CACHE_MAGIC || u32::from_le_bytes(head[4..8].try_into().ok()?) as usize != n {
        return None;
    }
    let mut clips = Vec::with_capacity(n);
    for _ in 0..n {
        let (len, tail) = rest.split_at_checked(4)?;
        let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
        let (values, tail) = tail.split_at_checked(len.checked_mul(4)?)?;
        clips.push(Some(
            values
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        ));
        rest = tail;
    }
    rest.is_empty().then_some(clips)
}

/// Written to a temporary file and renamed, so a killed run never leaves half a cache.
fn write_cache(path: &Path, clips: &[Option<Vec<f32>>]) -> Result<(), DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io)?);
    out.write_all(CACHE_MAGIC).map_err(io)?;
    out.write_all(&(clips.len() as u32).to_le_bytes())
        .map_err(io)?;
    for values in clips.iter().flatten() {
        out.write_all(&(values.len() as u32).to_le_bytes())
            .map_err(io)?;
        for v in values {
            out.write_all(&v.to_le_bytes()).map_err(io)?;
        }
    }
    out.into_inner()
        .map_err(|e| io(e.into_error()))?
        .sync_all()
        .map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Earshot's cache folder for features (`~/.cache/earshot/features`).
pub fn default_cache_dir() -> Option<PathBuf> {
    crate::fsutil::cache_dir().map(|d| d.join("features"))
}

/// Scores of one evaluation, and how long encoding took.
pub struct Evaluation {
    pub scores: RetrievalScores,
    pub encode_seconds: f64,
    /// Share of the queries whose classification-head class is right (only meaningful when the
    /// model was trained on the query classes).
    pub query_accuracy: f64,
    /// Audio run through the encoder (clips after edge-silence trimming), in seconds.
    pub encoded_audio_s: f64,
}

/// Encodes the split's database and queries (`clips`: trimmed log-mel per clip, empty where a
/// clip is missing) and scores every query against the database.
pub fn evaluate(
    net: &EventsNet,
    data: &Esc50,
    clips: &[&[f32]],
    split: Split,
) -> candle_core::Result<Evaluation> {
    let pick = |keep: &dyn Fn(&Clip) -> bool| -> Vec<usize> {
        (0..data.clips.len())
            .filter(|&i| keep(&data.clips[i]) && !clips[i].is_empty())
            .collect()
    };
    let (db, queries) = (
        pick(&|c| split.in_database(c)),
        pick(&|c| split.is_query(c)),
    );
    let started = std::time::Instant::now();
    let encode = |ids: &[usize]| -> candle_core::Result<(Encoded, Vec<usize>)> {
        let mut e = Encoded::default();
        let set: Vec<&[f32]> = ids.iter().map(|&i| clips[i]).collect();
        let classes = encode_clips(net, &set, &mut e)?;
        Ok((e, classes))
    };
    let ((db_enc, _), (q_enc, predicted)) = (encode(&db)?, encode(&queries)?);
    let encode_seconds = started.elapsed().as_secs_f64();
    let frames: usize = db
        .iter()
        .chain(&queries)
        .map(|&i| clips[i].len() / LOG_MEL_BANDS)
        .sum();
    let n = db.len().max(1);
    let (words, dim) = (db_enc.codes.len() / n, db_enc.embeddings.len() / n);
    let labels = |ids: &[usize]| {
        ids.iter()
            .map(|&i| data.clips[i].target)
            .collect::<Vec<_>>()
    };
    let correct = predicted
        .iter()
        .zip(&queries)
        .filter(|&(&p, &i)| p == data.clips[i].target)
        .count();
    let scores = retrieval_scores(
        &code_set(&db_enc, words, dim),
        &labels(&db),
        &code_set(&q_enc, words, dim),
        &labels(&queries),
    );
    Ok(Evaluation {
        scores,
        encode_seconds,
        query_accuracy: correct as f64 / queries.len().max(1) as f64,
        encoded_audio_s: frames as f64 / LogMelConfig::default().frames_per_second(),
    })
}

fn code_set(e: &Encoded, words: usize, dim: usize) -> CodeSet<'_> {
    CodeSet {
        words,
        codes: &e.codes,
        embeddings: &e.embeddings,
        dim,
        margins: &[],
    }
}

/// What [`evaluate_embeddings`] measures: the clip embeddings ranked by cosine as they are, and
/// standardised (each dimension centred and scaled by the database's mean and deviation, as the
/// prototype did), from one encoding pass.
pub struct EmbeddingEvaluation {
    pub raw: RetrievalScores,
    pub standardised: RetrievalScores,
    /// The same with each clip's embedding as the index keeps it (8 bits, see
    /// [`crate::index::quantize`]).
    pub raw_8bit: RetrievalScores,
    pub standardised_8bit: RetrievalScores,
    pub encode_seconds: f64,
    pub encoded_audio_s: f64,
    /// Clips that could not be decoded, with the reason (left out).
    pub failed: Vec<(PathBuf, String)>,
}

/// The split scored by cosine on clip embeddings of any encoder (`encoders` holds the one to
/// measure): each clip is encoded as a library file is, and its window embeddings averaged.
pub fn evaluate_embeddings(encoders: &Encoders, data: &Esc50, split: Split) -> EmbeddingEvaluation {
    let keep = |keep: &dyn Fn(&Clip) -> bool| -> Vec<usize> {
        (0..data.clips.len())
            .filter(|&i| keep(&data.clips[i]))
            .collect()
    };
    let (db, queries) = (
        keep(&|c| split.in_database(c)),
        keep(&|c| split.is_query(c)),
    );
    let started = std::time::Instant::now();
    let all: Vec<usize> = db.iter().chain(&queries).copied().collect();
    let results: Vec<(usize, Result<ClipEmbedding, String>)> = all
        .par_iter()
        .map(|&i| (i, clip_embedding(encoders, &data.clips[i].path)))
        .collect();
    let encode_seconds = started.elapsed().as_secs_f64();
    let mut embeddings = vec![None; data.clips.len()];
    let (mut failed, mut audio_s) = (Vec::new(), 0.0);
    for (i, r) in results {
        match r {
            Ok(clip) => {
                audio_s += clip.seconds;
                embeddings[i] = Some(clip.mean);
            }
            Err(reason) => failed.push((data.clips[i].path.clone(), reason)),
        }
    }
    let dim = encoders
        .values()
        .next()
        .map_or(0, |e| e.info().embedding_dim);
    let (db, queries): (Vec<usize>, Vec<usize>) = (
        db.into_iter()
            .filter(|&i| embeddings[i].is_some())
            .collect(),
        queries
            .into_iter()
            .filter(|&i| embeddings[i].is_some())
            .collect(),
    );
    let gather = |ids: &[usize]| -> Vec<f32> {
        ids.iter()
            .flat_map(|&i| embeddings[i].clone().unwrap_or_default())
            .collect()
    };
    let (db_raw, q_raw) = (gather(&db), gather(&queries));
    let stored = |e: &[f32]| -> Vec<f32> {
        e.chunks_exact(dim.max(1))
            .flat_map(crate::index::quantize::round_trip)
            .collect()
    };
    let (db_8bit, q_8bit) = (stored(&db_raw), stored(&q_raw));
    let labels = |ids: &[usize]| {
        ids.iter()
            .map(|&i| data.clips[i].target)
            .collect::<Vec<_>>()
    };
    let score = |db_e: &[f32], q_e: &[f32]| {
        let set = |embeddings| CodeSet {
            words: 0,
            codes: &[],
            embeddings,
            dim,
            margins: &[],
        };
        retrieval_scores(&set(db_e), &labels(&db), &set(q_e), &labels(&queries))
    };
    let (standardise, standardise_8bit) = (
        Standardiser::fit(&db_raw, dim),
        Standardiser::fit(&db_8bit, dim),
    );
    let unit = |e: &[f32], s: Option<&Standardiser>| -> Vec<f32> {
        e.chunks_exact(dim.max(1))
            .flat_map(|row| {
                let mut v = row.to_vec();
                if let Some(s) = s {
                    s.apply(&mut v);
                }
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.iter_mut().for_each(|x| *x /= norm.max(f32::MIN_POSITIVE));
                v
            })
            .collect()
    };
    EmbeddingEvaluation {
        raw: score(&unit(&db_raw, None), &unit(&q_raw, None)),
        standardised: score(
            &unit(&db_raw, Some(&standardise)),
            &unit(&q_raw, Some(&standardise)),
        ),
        raw_8bit: score(&unit(&db_8bit, None), &unit(&q_8bit, None)),
        standardised_8bit: score(
            &unit(&db_8bit, Some(&standardise_8bit)),
            &unit(&q_8bit, Some(&standardise_8bit)),
        ),
        encode_seconds,
        encoded_audio_s: audio_s,
        failed,
    }
}

/// A clip's mean window embedding, and its length.
struct ClipEmbedding {
    mean: Vec<f32>,
    seconds: f64,
}

/// Each clip goes through ingest exactly as a library file does (same windows, silence left
/// out), and its window embeddings are averaged.
fn clip_embedding(encoders: &Encoders, path: &Path) -> Result<ClipEmbedding, String> {
    let (windows, seconds) = clip_windows(encoders, path)?;
    let dim = encoders
        .values()
        .next()
        .map_or(1, |e| e.info().embedding_dim.max(1));
    Ok(ClipEmbedding {
        mean: mean_row(&windows, dim),
        seconds,
    })
}

/// A clip's window embeddings (flat) as ingest computes them for a library file, and its
/// length in seconds.
fn clip_windows(encoders: &Encoders, path: &Path) -> Result<(Vec<f32>, f64), String> {
    let file = crate::session::ingest::encode_path(path, encoders).map_err(|p| p.reason)?;
    match file.modes.into_iter().next() {
        Some(mode) if !mode.segments.is_empty() => {
            Ok((mode.encoded.embeddings, file.record.duration_s))
        }
        _ => Err("silent".into()),
    }
}

/// The mean of `rows` (`dim` values each).
pub fn mean_row(rows: &[f32], dim: usize) -> Vec<f32> {
    let n = (rows.len() / dim.max(1)).max(1) as f32;
    let mut mean = vec![0.0f32; dim];
    for row in rows.chunks_exact(dim.max(1)) {
        mean.iter_mut().zip(row).for_each(|(m, x)| *m += x / n);
    }
    mean
}

/// Per clip, a backbone's window embeddings (flat, `dim` values each) as ingest computes them
/// for library files; `None` where the clip could not be read.
pub struct WindowEmbeddings {
    pub dim: usize,
    pub clips: Vec<Option<Vec<f32>>>,
    pub failed: Vec<(PathBuf, String)>,
}

/// Every clip's window embeddings from the one encoder in `encoders`, from the cache when it
/// holds this clip list and this encoder's weights, else computed in parallel and cached.
pub fn window_embeddings(
    encoders: &Encoders,
    data: &Esc50,
    cache_dir: Option<&Path>,
) -> Result<WindowEmbeddings, DataError> {
    let info = encoders.values().next().map(|e| e.info().clone());
    let (name, weights, dim) = info.map_or((String::new(), String::new(), 0), |i| {
        (i.name, i.weights_hash, i.embedding_dim)
    });
    let cache = cache_dir.map(|d| {
        d.join(format!(
            "esc50-{name}-{:08x}.bin",
            cache_key(data, &weights)
        ))
    });
    if let Some(c) = cache.as_deref()
        && let Some(clips) = read_cache(c, data.clips.len())
    {
        return Ok(WindowEmbeddings {
            dim,
            clips,
            failed: Vec::new(),
        });
    }
    let results: Vec<Result<Vec<f32>, String>> = data
        .clips
        .par_iter()
        .map(|clip| clip_windows(encoders, &clip.path).map(|(w, _)| w))
        .collect();
    let mut failed = Vec::new();
    let clips: Vec<Option<Vec<f32>>> = results
        .into_iter()
        .zip(&data.clips)
        .map(|(r, clip)| r.map_err(|e| failed.push((clip.path.clone(), e))).ok())
        .collect();
    if let Some(c) = cache.as_deref()
        && failed.is_empty()
    {
        write_cache(c, &clips)?;
    }
    Ok(WindowEmbeddings { dim, clips, failed })
}

/// What one way of ranking scores on the split.
pub struct CodeEvaluation {
    pub scores: RetrievalScores,
    /// Queries per second of the ranking (codes, re-rank), encoding not included.
    pub queries_per_s: f64,
}

/// How clip codes and standardised embeddings are ranked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ranking {
    /// Fewest differing bits, ties by cosine (as the engine ranks codes alone).
    Hamming,
    /// By the query's bit margins on the database's bits
    /// ([`crate::search::rerank::margin_agreement`]; the database keeps only bits).
    Margins,
    /// The codes' best [`crate::search::rerank::RERANK_CANDIDATES`] re-ranked by cosine with
    /// query expansion, plus `code_weight` times their code agreement.
    Reranked {
        code_weight: f32,
        agreement: Agreement,
    },
}

/// A split's clips as a head encodes them: per clip, its code and its standardised mean
/// embedding (unit length).
pub struct ClipCodes {
    pub ids: Vec<usize>,
    pub bits: usize,
    pub words: usize,
    pub codes: Vec<u64>,
    pub dim: usize,
    pub embeddings: Vec<f32>,
    /// Per clip, each bit's distance from its threshold (`bits` values; empty for codes that
    /// have none): a query ranked asymmetrically weighs each bit by it.
    pub margins: Vec<f32>,
}

impl ClipCodes {
    /// The clips as the retrieval metrics read them.
    pub fn set(&self) -> CodeSet<'_> {
        CodeSet {
            words: self.words,
            codes: &self.codes,
            embeddings: &self.embeddings,
            dim: self.dim,
            margins: &self.margins,
        }
    }
}

/// Clips given by their window embeddings (`dim` values each), with an id each (a position in
/// `Esc50::clips`, or whatever the caller numbers them by).
pub struct ClipWindows<'a> {
    pub dim: usize,
    pub ids: Vec<usize>,
    pub clips: Vec<&'a [f32]>,
}

impl WindowEmbeddings {
    /// The clips `ids` that could be read.
    pub fn select(&self, ids: &[usize]) -> ClipWindows<'_> {
        let (ids, clips) = ids
            .iter()
            .filter_map(|&i| self.clips[i].as_deref().map(|c| (i, c)))
            .unzip();
        ClipWindows {
            dim: self.dim,
            ids,
            clips,
        }
    }
}

/// Encodes each clip's mean window embedding with `code` (a trained head or a library code),
/// which writes the clip's code and standardises its embedding in place.
pub fn clip_codes<E>(
    clips: &ClipWindows<'_>,
    bits: usize,
    mut code: impl FnMut(&mut Vec<f32>, &mut Vec<u64>, &mut Vec<f32>) -> Result<(), E>,
) -> Result<ClipCodes, E> {
    let (dim, words) = (clips.dim, bits.div_ceil(64));
    let mut out = ClipCodes {
        ids: clips.ids.clone(),
        bits,
        words,
        codes: Vec::with_capacity(clips.ids.len() * words),
        dim,
        embeddings: Vec::with_capacity(clips.ids.len() * dim),
        margins: Vec::new(),
    };
    for windows in &clips.clips {
        let mut mean = mean_row(windows, dim);
        code(&mut mean, &mut out.codes, &mut out.margins)?;
        crate::index::vector::normalise(&mut mean);
        out.embeddings.extend(mean);
    }
    Ok(out)
}

/// Each clip's mean window embedding at unit length, without codes (ranked by cosine alone).
pub fn uncoded(clips: &ClipWindows<'_>) -> ClipCodes {
    match clip_codes(clips, 0, |_, _, _| Ok::<(), std::convert::Infallible>(())) {
        Ok(c) => c,
    }
}

/// The split's database and query clips (indices into `data.clips`).
pub fn split_ids(data: &Esc50, split: Split) -> (Vec<usize>, Vec<usize>) {
    let pick = |keep: &dyn Fn(&Clip) -> bool| -> Vec<usize> {
        (0..data.clips.len())
            .filter(|&i| keep(&data.clips[i]))
            .collect()
    };
    (
        pick(&|c| split.in_database(c)),
        pick(&|c| split.is_query(c)),
    )
}

/// Clips coded by a trained head.
pub fn head_codes(
    head: &HashHead,
    bits: usize,
    clips: &ClipWindows<'_>,
) -> candle_core::Result<ClipCodes> {
    clip_codes(clips, bits, |mean, codes, margins| {
        let mut encoded = crate::model::Encoded::default();
        head.encode(mean, &mut encoded)?;
        codes.extend(encoded.codes);
        margins.extend(encoded.margins);
        Ok(())
    })
}

/// Clips coded by a code learned on a library's own windows (no labels).
pub fn library_codes(code: &LibraryCode, clips: &ClipWindows<'_>) -> ClipCodes {
    let coded = clip_codes(clips, code.bits(), |mean, codes, _| {
        code.encode(mean, codes);
        code.standardiser.apply(mean);
        Ok::<(), std::convert::Infallible>(())
    });
    match coded {
        Ok(c) => c,
    }
}

/// Every window of the clips `ids` (the library a code is learned on).
pub fn windows_of(windows: &WindowEmbeddings, ids: &[usize]) -> Vec<f32> {
    ids.iter()
        .filter_map(|&i| windows.clips[i].as_deref())
        .flatten()
        .copied()
        .collect()
}

/// Scores queries against the database, by `ranking`.
pub fn score_codes(
    data: &Esc50,
    db: &ClipCodes,
    queries: &ClipCodes,
    ranking: Ranking,
) -> CodeEvaluation {
    let labels =
        |c: &ClipCodes| -> Vec<usize> { c.ids.iter().map(|&i| data.clips[i].target).collect() };
    let started = std::time::Instant::now();
    let scores = match ranking {
        Ranking::Hamming => {
            retrieval_scores(&db.set(), &labels(db), &queries.set(), &labels(queries))
        }
        Ranking::Margins => crate::eval::metrics::margin_scores(
            &db.set(),
            &labels(db),
            &queries.set(),
            &labels(queries),
        ),
        Ranking::Reranked {
            code_weight,
            agreement,
        } => crate::eval::metrics::reranked_scores(
            &db.set(),
            &labels(db),
            &queries.set(),
            &labels(queries),
            crate::eval::metrics::Fusion {
                bits: db.bits,
                code_weight,
                agreement,
            },
        ),
    };
    CodeEvaluation {
        scores,
        queries_per_s: queries.ids.len() as f64 / started.elapsed().as_secs_f64().max(1e-9),
    }
}
