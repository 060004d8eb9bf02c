//! Learning codes from a library's own labels (`earshot learn`, and the app's "Learn codes
//! from these labels"): a hash head is trained on the window embeddings the index already
//! keeps, its gain is measured on a held-out fifth of the labelled files, and then the head,
//! trained again on all of them, codes every segment. No audio file is read.
//!
//! This sits above the engine: it trains (`train`) and measures (`eval`), then hands the index
//! a [`LibraryCode`] of plain weights, which the engine searches like any other code.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::eval::esc50::{ClipWindows, head_codes, library_codes, uncoded};
use crate::eval::metrics::{
    Agreement, Fusion, RetrievalScores, margin_scores, reranked_scores, retrieval_scores,
};
use crate::index::library_code::{
    CodeSource, LIBRARY_CODE_BITS, LibraryCode, MIN_SEGMENTS_TO_LEARN, labels_describe_library,
};
use crate::index::{Index, IndexError, ModeIndex, format};
use crate::library::LabelMap;
use crate::library::marks::Marks;
use crate::model::Mode;
use crate::model::hash_head::HashHead;
use crate::search::rerank::PARTIAL_LABELS_CODE_WEIGHT;
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
        "{}: learning codes reads every embedding of the index, which a Milvus server keeps to itself; learn on a local index (`earshot index --db DIR ...`, then `earshot learn --db DIR`)",
        db.display()
    )]
    OnServer { db: PathBuf },
    #[error(
        "{}: too few labels to learn from: {reason}. Learning needs at least {MIN_LABELS} labels with at least {MIN_FILES_PER_LABEL} files each: label files by their folders, pass a CSV with --labels, or mark results relevant or not and learn from the marks with --marks",
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
    /// The same, by the codes learned from the labels as search ranks them: by their
    /// agreement with the query's bit margins (beside cosine when the labels cover a small part
    /// of the library).
    pub after: RetrievalScores,
    /// Segments coded again.
    pub segments: usize,
    /// Files in the library.
    pub library_files: usize,
    /// Whether the labels cover enough of the library for search to rank by the learned codes
    /// alone (else beside cosine: see [`LibraryCode::describes_library`]).
    pub describes_library: bool,
    /// Labels of marks left out for too few files (with `--marks`), each with its count.
    pub left_out: Vec<String>,
    pub elapsed: Duration,
}

/// A labelled file's window embeddings (all of them, or those of its marked moments).
struct LabelledFile<'a> {
    path: &'a Path,
    label: usize,
    windows: Cow<'a, [f32]>,
}

/// Where the labels come from.
#[derive(Debug, Clone, Copy)]
pub enum LabelSource<'a> {
    /// Each file's own label, as indexed (its folder's name by default).
    Files,
    /// A `path,label` CSV.
    Csv(&'a LabelMap),
    /// The relevant / not-relevant marks set on results.
    Marks(&'a Marks),
}

/// Learns codes from the labels of the files in `db` and saves the index with them.
pub fn learn(
    db: &Path,
    labels: LabelSource<'_>,
    on_progress: &dyn Fn(&str),
) -> Result<LearnReport, LearnError> {
    let started = Instant::now();
    if crate::index::is_remote(db) {
        return Err(LearnError::OnServer { db: db.to_owned() });
    }
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
    labels: LabelSource<'_>,
    on_progress: &dyn Fn(&str),
) -> Result<(LibraryCode, LearnReport), LearnError> {
    let (mut names, mut files) = labelled_files(index, data, &labels);
    // Marks grow query by query: one whose results hold few relevant moments does not stop
    // the others from teaching the code.
    let left_out = match labels {
        LabelSource::Marks(_) => leave_out_thin_labels(&mut names, &mut files),
        _ => Vec::new(),
    };
    check_labels(db, &names, &files, &left_out)?;
    let set = TrainingSet {
        dim: data.embedding_dim,
        labels: names.len(),
        backbone: &data.encoder.name,
        describes_library: labels_describe_library(files.len(), index.files.len()),
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
        describes_library: set.describes_library,
        library_files: index.files.len(),
        held_out: held_out.len(),
        before,
        after,
        segments: data.segments.len(),
        left_out,
        elapsed: Duration::ZERO,
    };
    Ok((code, report))
}

/// The labels in use (sorted) and every labelled file with segments.
fn labelled_files<'a>(
    index: &'a Index,
    data: &'a ModeIndex,
    labels: &'a LabelSource<'a>,
) -> (Vec<String>, Vec<LabelledFile<'a>>) {
    let examples = match labels {
        LabelSource::Files => file_examples(index, data, |f| f.label.as_str()),
        LabelSource::Csv(map) => {
            file_examples(index, data, |f| map.get(&f.path).unwrap_or_default())
        }
        LabelSource::Marks(marks) => marked_examples(index, data, marks),
    };
    let names: Vec<String> = examples
        .iter()
        .map(|(label, _)| label.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let files = examples
        .into_iter()
        .filter_map(|(label, mut file)| {
            file.label = names.binary_search(&label).ok()?;
            Some(file)
        })
        .collect();
    (names, files)
}

/// Each indexed file with segments and a label (`label_of`), its windows the example.
fn file_examples<'a>(
    index: &'a Index,
    data: &'a ModeIndex,
    label_of: impl Fn(&'a crate::library::FileRecord) -> &'a str,
) -> Vec<(String, LabelledFile<'a>)> {
    let dim = data.embedding_dim;
    let ranges = data.file_segments(index.files.len());
    index
        .files
        .iter()
        .zip(&ranges)
        .filter(|(f, r)| !r.is_empty() && !label_of(f).is_empty())
        .map(|(f, r)| {
            let windows = &data.embeddings[r.start * dim..r.end * dim];
            let file = LabelledFile {
                path: &f.path,
                label: 0,
                windows: Cow::Borrowed(windows),
            };
            (label_of(f).to_string(), file)
        })
        .collect()
}

/// The marked moments (see [`Marks::labelled_moments`]), one example per file and label: the
/// windows that overlap its marked moments. Marks of files no longer indexed are left out.
fn marked_examples<'a>(
    index: &'a Index,
    data: &'a ModeIndex,
    marks: &Marks,
) -> Vec<(String, LabelledFile<'a>)> {
    let dim = data.embedding_dim;
    let frame_s = data.input.frame_s();
    let ranges = data.file_segments(index.files.len());
    let position: std::collections::HashMap<&Path, usize> = (index.files.iter().enumerate())
        .map(|(i, f)| (f.path.as_path(), i))
        .collect();
    let mut examples: BTreeMap<(String, usize), Vec<f32>> = BTreeMap::new();
    for moment in marks.labelled_moments() {
        let Some(&file) = position.get(moment.path.as_path()) else {
            continue;
        };
        for s in ranges[file].clone() {
            let segment = &data.segments[s];
            let start_s = f64::from(segment.start_frame) * frame_s;
            let end_s = start_s + f64::from(segment.n_frames) * frame_s;
            if start_s < moment.end_s && moment.start_s < end_s {
                let windows = examples.entry((moment.label.clone(), file)).or_default();
                windows.extend_from_slice(&data.embeddings[s * dim..(s + 1) * dim]);
            }
        }
    }
    examples
        .into_iter()
        .map(|((label, file), windows)| {
            let file = LabelledFile {
                path: &index.files[file].path,
                label: 0,
                windows: Cow::Owned(windows),
            };
            (label, file)
        })
        .collect()
}

/// Drops the labels with fewer than [`MIN_FILES_PER_LABEL`] files (renumbering the rest), and
/// names each with its count.
fn leave_out_thin_labels(names: &mut Vec<String>, files: &mut Vec<LabelledFile>) -> Vec<String> {
    let mut counts = vec![0usize; names.len()];
    files.iter().for_each(|f| counts[f.label] += 1);
    let kept: Vec<usize> = (0..names.len())
        .filter(|&l| counts[l] >= MIN_FILES_PER_LABEL)
        .collect();
    let left_out = (0..names.len())
        .filter(|&l| counts[l] < MIN_FILES_PER_LABEL)
        .map(|l| format!("\"{}\" ({} file(s))", names[l], counts[l]))
        .collect();
    files.retain_mut(|f| match kept.binary_search(&f.label) {
        Ok(new) => {
            f.label = new;
            true
        }
        Err(_) => false,
    });
    *names = kept.iter().map(|&l| names[l].clone()).collect();
    left_out
}

/// Refuses too few labels, naming them.
fn check_labels(
    db: &Path,
    names: &[String],
    files: &[LabelledFile],
    left_out: &[String],
) -> Result<(), LearnError> {
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
        if !left_out.is_empty() {
            reasons.push(format!("{} left out", left_out.join(", ")));
        }
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
    /// Search will rank by the learned codes alone (else beside cosine).
    describes_library: bool,
}

impl TrainingSet<'_> {
    fn train(&self, files: &[&LabelledFile]) -> Result<HashHead, LearnError> {
        let set = LabelledEmbeddings {
            dim: self.dim,
            clips: files.iter().map(|f| f.windows.as_ref()).collect(),
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
        let after = match self.describes_library {
            true => margin_scores(&db.set(), &db_labels, &queries.set(), &query_labels),
            false => {
                let beside_cosine = Fusion {
                    bits: LIBRARY_CODE_BITS,
                    code_weight: PARTIAL_LABELS_CODE_WEIGHT,
                    agreement: Agreement::Margins,
                };
                let (db, queries) = (db.set(), queries.set());
                reranked_scores(&db, &db_labels, &queries, &query_labels, beside_cosine)
            }
        };
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
        let windows: Vec<f32> = train
            .iter()
            .flat_map(|f| f.windows.iter())
            .copied()
            .collect();
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
            agreement: Agreement::Bits,
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
    fn clips<'f>(&self, files: &[&'f LabelledFile<'_>]) -> ClipWindows<'f> {
        ClipWindows {
            dim: self.dim,
            ids: (0..files.len()).collect(),
            clips: files.iter().map(|f| f.windows.as_ref()).collect(),
        }
    }
}

fn labels(files: &[&LabelledFile]) -> Vec<usize> {
    files.iter().map(|f| f.label).collect()
}
