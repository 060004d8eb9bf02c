//! Learning codes from a library's own labels (`earshot learn`, and the app's "Learn codes
//! from these labels"): a hash head is trained on the window embeddings the index already
//! keeps, its gain is measured on a held-out fifth of the labelled files, and then the head,
//! trained again on all of them, codes every segment. No audio file is read.
//!
//! This sits above the engine: it trains (`train`) and measures (`eval`), then hands the index
//! a [`LibraryCode`] of plain weights, which the engine searches like any other code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::eval::esc50::{ClipWindows, head_codes, library_codes, uncoded};
use crate::eval::metrics::{Fusion, RetrievalScores, reranked_scores, retrieval_scores};
use crate::index::library_code::{
    CodeSource, LIBRARY_CODE_BITS, LibraryCode, MIN_SEGMENTS_TO_LEARN,
};
use crate::index::{Index, IndexError, ModeIndex, format};
use crate::library::LabelMap;
use crate::model::Mode;
use crate::model::hash_head::HashHead;
use crate::train::TrainError;
use crate::train::hash_head::{HeadOptions, LabelledEmbeddings, train_head};

/// A label needs this many files to be learned (and one of them held out to measure it).
pub const MIN_FILES_PER_LABEL: usize = 5;
/// Labels needed: one class alone teaches nothing about telling sounds apart.
pub const MIN_LABELS: usize = 2;
/// Every `HELD_OUT_EVERY`th file of each label (by path) is held out to measure the gain.
const HELD_OUT_EVERY: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(
        "{}: its similar-sounds codes come from {encoder}, a trained model; codes are learned on a backbone's embeddings: rebuild the index with `earshot index --db {} --rebuild --model birdnet-v2.4 PATH...`",
        db.display(), db.display()
    )]
    NotABackbone { db: PathBuf, encoder: String },
    #[error(
        "{}: too few labels to learn from: {reason}. Learning needs at least {MIN_LABELS} labels with at least {MIN_FILES_PER_LABEL} files each: label files by their folders, or pass a CSV with --labels",
        db.display()
    )]
    TooFewLabels { db: PathBuf, reason: String },
    #[error("training the codes failed: {0}")]
    Train(#[from] TrainError),
    #[error("training the codes failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// What learning did and gained.
#[derive(Debug, Clone)]
pub struct LearnReport {
    pub labels: usize,
    pub files: usize,
    /// Files held out to measure the gain (trained on the rest, then queried).
    pub held_out: usize,
    /// Held-out files searched among the others as search ranks a library without labels (by
    /// a code learned on its embeddings, re-ranked by cosine; by cosine alone below
    /// [`MIN_SEGMENTS_TO_LEARN`] windows).
    pub before: RetrievalScores,
    /// The same, by the codes learned from the labels (as search ranks them: by distance,
    /// ties by cosine).
    pub after: RetrievalScores,
    /// Segments coded again.
    pub segments: usize,
    pub elapsed: Duration,
}

/// A labelled file's window embeddings.
struct LabelledFile<'a> {
    path: &'a Path,
    label: usize,
    windows: &'a [f32],
}

/// Learns codes from the labels of the files in `db` (`labels` when given, else each file's
/// own label, its folder's name by default) and saves the index with them.
pub fn learn(
    db: &Path,
    labels: Option<&LabelMap>,
    on_progress: &dyn Fn(&str),
) -> Result<LearnReport, LearnError> {
    let started = Instant::now();
    let mut index = format::load(db)?;
    let data = index.mode(Mode::Events, db)?;
    if data.encoder.bits != 0 || data.embedding_dim == 0 {
        return Err(LearnError::NotABackbone {
            db: db.to_owned(),
            encoder: data.encoder.name.clone(),
        });
    }
    let (code, mut report) = learn_code(db, &index, data, labels, on_progress)?;
    if let Some(section) = index.modes.get_mut(&Mode::Events) {
        section.set_library_code(code);
    }
    on_progress("saving the index");
    format::save(&index, db)?;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// The code learned from the labels of `data`'s files, and how it did on the held-out fifth.
fn learn_code(
    db: &Path,
    index: &Index,
    data: &ModeIndex,
    labels: Option<&LabelMap>,
    on_progress: &dyn Fn(&str),
) -> Result<(LibraryCode, LearnReport), LearnError> {
    let (names, files) = labelled_files(index, data, labels);
    check_labels(db, &names, &files)?;
    let set = TrainingSet {
        dim: data.embedding_dim,
        labels: names.len(),
        backbone: &data.encoder.name,
    };
    let (train, held_out) = split(&files);
    on_progress("measuring on a held-out fifth");
    let (before, after) = set.measure(&train, &held_out)?;
    on_progress("training on all labelled files");
    let all: Vec<&LabelledFile> = files.iter().collect();
    let head = set.train(&all)?;
    let source = CodeSource::Labels {
        classes: names.len(),
        files: files.len(),
    };
    let code = LibraryCode::from_head(&head, source, data.segments.len())?;
    let report = LearnReport {
        labels: names.len(),
        files: files.len(),
        held_out: held_out.len(),
        before,
        after,
        segments: data.segments.len(),
        elapsed: Duration::ZERO,
    };
    Ok((code, report))
}

/// The labels in use (sorted) and every labelled file with segments.
fn labelled_files<'a>(
    index: &'a Index,
    data: &'a ModeIndex,
    labels: Option<&'a LabelMap>,
) -> (Vec<String>, Vec<LabelledFile<'a>>) {
    let dim = data.embedding_dim;
    let ranges = data.file_segments(index.files.len());
    let label_of = |f: &'a crate::library::FileRecord| match labels {
        Some(map) => map.get(&f.path).unwrap_or_default(),
        None => f.label.as_str(),
    };
    let names: Vec<String> = index
        .files
        .iter()
        .map(label_of)
        .filter(|l| !l.is_empty())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(str::to_string)
        .collect();
    let files = index
        .files
        .iter()
        .zip(&ranges)
        .filter(|(_, r)| !r.is_empty())
        .filter_map(|(f, r)| {
            let label = names
                .binary_search_by(|n| n.as_str().cmp(label_of(f)))
                .ok()?;
            Some(LabelledFile {
                path: &f.path,
                label,
                windows: &data.embeddings[r.start * dim..r.end * dim],
            })
        })
        .collect();
    (names, files)
}

/// Refuses too few labels, naming them.
fn check_labels(db: &Path, names: &[String], files: &[LabelledFile]) -> Result<(), LearnError> {
    let mut counts = vec![0usize; names.len()];
    files.iter().for_each(|f| counts[f.label] += 1);
    let too_few: Vec<String> = names
        .iter()
        .zip(&counts)
        .filter(|(_, n)| **n < MIN_FILES_PER_LABEL)
        .map(|(name, n)| format!("\"{name}\" has {n}"))
        .collect();
    let mut reasons = Vec::new();
    if names.len() < MIN_LABELS {
        reasons.push(format!("{} label(s) among the indexed files", names.len()));
    }
    if !too_few.is_empty() {
        reasons.push(format!("{} file(s)", too_few.join(", ")));
    }
    if reasons.is_empty() {
        return Ok(());
    }
    let reason = reasons.join("; ");
    Err(LearnError::TooFewLabels {
        db: db.to_owned(),
        reason,
    })
}

/// Four fifths to train on and a fifth held out: every [`HELD_OUT_EVERY`]th file of each
/// label, in path order (the same files every time).
fn split<'f, 'a>(
    files: &'f [LabelledFile<'a>],
) -> (Vec<&'f LabelledFile<'a>>, Vec<&'f LabelledFile<'a>>) {
    let mut by_label: BTreeMap<usize, Vec<&LabelledFile>> = BTreeMap::new();
    for f in files {
        by_label.entry(f.label).or_default().push(f);
    }
    let (mut train, mut held_out) = (Vec::new(), Vec::new());
    for mut group in by_label.into_values() {
        group.sort_by_key(|f| f.path);
        for (k, f) in group.into_iter().enumerate() {
            match k % HELD_OUT_EVERY == HELD_OUT_EVERY - 1 {
                true => held_out.push(f),
                false => train.push(f),
            }
        }
    }
    (train, held_out)
}

/// What a head is trained on: the backbone's embeddings and the labels.
struct TrainingSet<'a> {
    dim: usize,
    labels: usize,
    backbone: &'a str,
}

impl TrainingSet<'_> {
    fn train(&self, files: &[&LabelledFile]) -> Result<HashHead, LearnError> {
        let set = LabelledEmbeddings {
            dim: self.dim,
            clips: files.iter().map(|f| f.windows).collect(),
            targets: files.iter().map(|f| f.label).collect(),
            classes: self.labels,
        };
        let (_, head) = train_head(
            &set,
            self.backbone,
            LIBRARY_CODE_BITS,
            &HeadOptions::default(),
        )?;
        Ok(head)
    }

    /// mAP of `held_out` files searched among `train`, ranked as search ranks them: by a code
    /// learned without labels on `train` (before), and by a head trained on `train`'s labels
    /// (after).
    fn measure(
        &self,
        train: &[&LabelledFile],
        held_out: &[&LabelledFile],
    ) -> Result<(RetrievalScores, RetrievalScores), LearnError> {
        let (db, queries) = (self.clips(train), self.clips(held_out));
        let (db_labels, query_labels) = (labels(train), labels(held_out));
        let before = self.before(train, &db, &queries, &db_labels, &query_labels)?;
        let head = self.train(train)?;
        let (db, queries) = (
            head_codes(&head, LIBRARY_CODE_BITS, &db)?,
            head_codes(&head, LIBRARY_CODE_BITS, &queries)?,
        );
        let after = retrieval_scores(&db.set(), &db_labels, &queries.set(), &query_labels);
        Ok((before, after))
    }

    /// The held-out clips searched among the training ones as search ranks a library without
    /// labels: by a code learned on its windows, re-ranked by cosine; or, a library too small
    /// for a code of its own, by cosine alone.
    fn before(
        &self,
        train: &[&LabelledFile],
        db: &ClipWindows<'_>,
        queries: &ClipWindows<'_>,
        db_labels: &[usize],
        query_labels: &[usize],
    ) -> Result<RetrievalScores, LearnError> {
        let windows: Vec<f32> = train.iter().flat_map(|f| f.windows).copied().collect();
        if windows.len() / self.dim.max(1) < MIN_SEGMENTS_TO_LEARN {
            let (db, queries) = (uncoded(db), uncoded(queries));
            return Ok(retrieval_scores(
                &db.set(),
                db_labels,
                &queries.set(),
                query_labels,
            ));
        }
        let code = LibraryCode::learn_for_library(&windows, self.dim)
            .map_err(|e| TrainError::NoData(e.to_string()))?;
        let (db, queries) = (library_codes(&code, db), library_codes(&code, queries));
        let plain = Fusion {
            bits: code.bits(),
            code_weight: 0.0,
        };
        Ok(reranked_scores(
            &db.set(),
            db_labels,
            &queries.set(),
            query_labels,
            plain,
        ))
    }

    /// Files as clips of window embeddings, numbered by position.
    fn clips<'a>(&self, files: &[&LabelledFile<'a>]) -> ClipWindows<'a> {
        ClipWindows {
            dim: self.dim,
            ids: (0..files.len()).collect(),
            clips: files.iter().map(|f| f.windows).collect(),
        }
    }
}

fn labels(files: &[&LabelledFile]) -> Vec<usize> {
    files.iter().map(|f| f.label).collect()
}
