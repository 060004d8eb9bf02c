//! The index: file table, and per search mode a segment table, packed codes and embeddings.
//!
//! On disk it is one file, `index.earshot`, in the index folder, replaced atomically (see
//! [`format`]), so a crash or a kill at any moment leaves the last completed state.

pub mod buckets;
pub mod format;
pub mod hamming;
pub mod hnsw;
pub mod library_code;
pub mod milvus;
pub mod quantize;
pub mod store;
pub mod vector;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::library::FileRecord;
use crate::model::{Encoded, Encoder, EncoderInfo, EncoderInput, Mode, Segmentation};
use library_code::{LibraryCode, LibraryCodeError};

/// Bumped whenever the file layout or the meaning of its contents changes. Format 5 stores the
/// codes deflated, each XORed with the one before (see [`format`]). Format 4 may keep a
/// code learned on the library (see [`library_code`]) after a section's embeddings; format 3
/// records each mode's encoder input (front end and segmentation) where format 2 had one
/// log-mel setting for all, and keeps embeddings in 8 bits. Formats 2 and 3 are still read.
pub const FORMAT_VERSION: u32 = 5;
pub const INDEX_FILE_NAME: &str = "index.earshot";

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not an Earshot index", path.display())]
    NotAnIndex { path: PathBuf },
    #[error("{}: the index is damaged ({detail}); rebuild it with `earshot index --db {} --rebuild PATH...`", path.display(), db.display())]
    Corrupt {
        path: PathBuf,
        db: PathBuf,
        detail: String,
    },
    #[error("{}: written in index format {found}, this Earshot reads format {expected}; rebuild it with `earshot index --db {} --rebuild PATH...`", path.display(), db.display())]
    Version {
        path: PathBuf,
        db: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("{}: its {mode} codes come from encoder {found}, this Earshot uses {expected}; rebuild it with `earshot index --db {} --rebuild PATH...`", Index::index_path(db).display(), db.display())]
    EncoderMismatch {
        db: PathBuf,
        mode: &'static str,
        found: String,
        expected: String,
    },
    #[error("{}: holds no {mode} index; add one with `earshot index --db {} --mode {mode} PATH...`", db.display(), db.display())]
    MissingMode { db: PathBuf, mode: &'static str },
    #[error("{}: no index here yet; create one with `earshot index --db {} PATH...`", db.display(), db.display())]
    Missing { db: PathBuf },
    #[error(
        "{address}: not a Milvus address: {why} (write milvus://HOST:PORT, milvus://HOST:PORT/PREFIX, or either with ?nlist=N&nprobe=P)"
    )]
    BadAddress { address: String, why: String },
    #[error(transparent)]
    Milvus(#[from] milvus::MilvusError),
    #[error("cannot learn a code on the library's embeddings: {0}")]
    LibraryCode(#[from] LibraryCodeError),
}

/// Human-readable summary stored at the head of the index file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub earshot_version: String,
    /// Per mode, in the order of the binary sections.
    pub modes: Vec<ModeManifest>,
    /// The files indexed with problems (an addition within format 5: older readers pass over it,
    /// and an index without it has none recorded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub damaged: Vec<DamagedFile>,
}

/// A file indexed with problems, as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DamagedFile {
    /// Position in [`Index::files`].
    pub file: u32,
    /// What was wrong, and where (see [`FileRecord::damage`]).
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModeManifest {
    pub mode: Mode,
    pub encoder: EncoderInfo,
    pub input: EncoderInput,
    pub segments: usize,
    /// The code learned on the library, where its encoder gives none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub library_code: Option<LibraryCodeManifest>,
}

/// A library code as the manifest describes it (its numbers follow the section's embeddings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LibraryCodeManifest {
    pub bits: usize,
    #[serde(flatten)]
    pub source: library_code::CodeSource,
    /// Segments the library held when the code was learned.
    pub learned_on: usize,
    pub sign: library_code::SignRule,
    /// Each dense layer's `[inputs, outputs]`.
    pub layers: Vec<[usize; 2]>,
}

impl LibraryCodeManifest {
    pub fn of(code: &LibraryCode) -> Self {
        Self {
            bits: code.bits(),
            source: code.source.clone(),
            learned_on: code.learned_on,
            sign: code.sign,
            layers: code.layers.iter().map(|l| [l.inputs, l.outputs]).collect(),
        }
    }
}

/// One segment of a library file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentRef {
    /// Position in [`Index::files`].
    pub file: u32,
    pub start_frame: u32,
    pub n_frames: u32,
}

/// The searchable data of one mode.
#[derive(Debug, Clone)]
pub struct ModeIndex {
    pub encoder: EncoderInfo,
    /// What the encoder read: segment starts count its front end's frames.
    pub input: EncoderInput,
    pub segments: Vec<SegmentRef>,
    /// `segments.len() * words` packed code words.
    pub codes: Vec<u64>,
    /// Floats kept per segment: the encoder's `embedding_dim`, or 0 where the mode keeps none.
    pub embedding_dim: usize,
    /// `segments.len() * embedding_dim` floats.
    pub embeddings: Vec<f32>,
    /// For an encoder that gives embeddings only (a backbone): the code learned on this
    /// library's own embeddings, which wrote `codes` (see [`Self::refresh_library_code`]).
    pub library_code: Option<LibraryCode>,
}

impl ModeIndex {
    pub fn new(mode: Mode, encoder: EncoderInfo, input: EncoderInput) -> Self {
        let embedding_dim = if mode.keeps_embeddings() {
            encoder.embedding_dim
        } else {
            0
        };
        Self {
            encoder,
            input,
            segments: Vec::new(),
            codes: Vec::new(),
            embedding_dim,
            embeddings: Vec::new(),
            library_code: None,
        }
    }

    /// Bits per segment code: the encoder's, or the library code's.
    pub fn bits(&self) -> usize {
        self.library_code
            .as_ref()
            .map_or(self.encoder.bits, LibraryCode::bits)
    }

    pub fn words(&self) -> usize {
        self.bits().div_ceil(64)
    }

    /// Learns a code on the library's own embeddings when its encoder gives none and the
    /// library has reached [`library_code::MIN_SEGMENTS_TO_LEARN`] segments, or has outgrown
    /// the code it has; then codes every segment again from its stored embedding (no file is
    /// read). Returns whether it learned one.
    pub fn refresh_library_code(&mut self) -> Result<bool, LibraryCodeError> {
        let n = self.segments.len();
        let wanted = self.encoder.bits == 0
            && self.embedding_dim >= library_code::LIBRARY_CODE_BITS
            && n >= library_code::MIN_SEGMENTS_TO_LEARN
            && self.library_code.as_ref().is_none_or(|c| c.is_outgrown(n));
        if !wanted {
            return Ok(false);
        }
        let code = LibraryCode::learn_for_library(&self.embeddings, self.embedding_dim)?;
        self.set_library_code(code);
        Ok(true)
    }

    /// Makes `code` this section's code, and codes every segment with it from its stored
    /// embedding.
    pub fn set_library_code(&mut self, code: LibraryCode) {
        self.codes.clear();
        code.encode(&self.embeddings, &mut self.codes);
        self.library_code = Some(code);
    }

    pub fn segmentation(&self) -> Segmentation {
        self.input.segmentation
    }

    pub fn code(&self, i: usize) -> &[u64] {
        let w = self.words();
        &self.codes[i * w..(i + 1) * w]
    }

    /// Each file's segments, as ranges of segment numbers (empty for a file without any). A file's
    /// segments are contiguous and in time order: they enter together, in the order the segment
    /// stream cut them, and removal keeps the order.
    pub fn file_segments(&self, files: usize) -> Vec<std::ops::Range<usize>> {
        let mut ranges = vec![0..0; files];
        let mut start = 0;
        for (i, s) in self.segments.iter().enumerate() {
            let next = self.segments.get(i + 1).map(|n| n.file);
            if next != Some(s.file) {
                if let Some(r) = ranges.get_mut(s.file as usize) {
                    *r = start..i + 1;
                }
                start = i + 1;
            }
        }
        ranges
    }

    /// The segment of `file` (its range from [`Self::file_segments`]) that starts at `frame`.
    pub fn segment_at(&self, range: &std::ops::Range<usize>, frame: i64) -> Option<usize> {
        let frame = u32::try_from(frame).ok()?;
        let within = &self.segments[range.clone()];
        within
            .binary_search_by_key(&frame, |s| s.start_frame)
            .ok()
            .map(|k| range.start + k)
    }

    /// Segment `i`'s embedding (empty where the mode keeps none).
    pub fn embedding(&self, i: usize) -> &[f32] {
        let d = self.embedding_dim;
        &self.embeddings[i * d..(i + 1) * d]
    }

    /// Appends one segment as a store kept it (after the file's earlier segments).
    pub fn push_stored(&mut self, segment: SegmentRef, code: &[u64], embedding: &[f32]) {
        self.segments.push(segment);
        self.codes.extend_from_slice(code);
        if self.embedding_dim > 0 {
            self.embeddings.extend_from_slice(embedding);
        }
    }

    fn push(&mut self, file: u32, segments: &[(u32, u32)], encoded: &Encoded) {
        self.segments
            .extend(segments.iter().map(|&(start_frame, n_frames)| SegmentRef {
                file,
                start_frame,
                n_frames,
            }));
        match &self.library_code {
            Some(code) => code.encode(&encoded.embeddings, &mut self.codes),
            None => self.codes.extend_from_slice(&encoded.codes),
        }
        if self.embedding_dim > 0 {
            self.embeddings.extend_from_slice(&encoded.embeddings);
        }
    }

    /// Keeps the segments whose file survives, renumbering files with `new_number`.
    fn retain_files(&mut self, new_number: &[Option<u32>]) {
        let (w, d) = (self.words(), self.embedding_dim);
        let mut kept = 0;
        for i in 0..self.segments.len() {
            let Some(file) = new_number[self.segments[i].file as usize] else {
                continue;
            };
            self.segments[kept] = SegmentRef {
                file,
                ..self.segments[i]
            };
            self.codes.copy_within(i * w..(i + 1) * w, kept * w);
            self.embeddings.copy_within(i * d..(i + 1) * d, kept * d);
            kept += 1;
        }
        self.segments.truncate(kept);
        self.codes.truncate(kept * w);
        self.embeddings.truncate(kept * d);
    }
}

/// Everything a folder's index holds.
#[derive(Debug, Clone)]
pub struct Index {
    /// Folders and files the index covers; `index` re-scans them all.
    pub roots: Vec<PathBuf>,
    pub files: Vec<FileRecord>,
    pub modes: BTreeMap<Mode, ModeIndex>,
}

/// The encodings of one file, ready to enter an index.
#[derive(Debug, Clone)]
pub struct EncodedFile {
    pub record: FileRecord,
    pub modes: Vec<SegmentEncodings>,
}

/// One file's segments for one mode: `(start frame, frame count)` each, and their encodings.
#[derive(Debug, Clone)]
pub struct SegmentEncodings {
    pub mode: Mode,
    pub segments: Vec<(u32, u32)>,
    pub encoded: Encoded,
}

impl Index {
    pub fn new() -> Self {
        Self {
            roots: Vec::new(),
            files: Vec::new(),
            modes: BTreeMap::new(),
        }
    }

    pub fn index_path(db: &Path) -> PathBuf {
        db.join(INDEX_FILE_NAME)
    }

    pub fn mode(&self, mode: Mode, db: &Path) -> Result<&ModeIndex, IndexError> {
        self.modes
            .get(&mode)
            .ok_or_else(|| IndexError::MissingMode {
                db: db.to_owned(),
                mode: mode.name(),
            })
    }

    /// The section for `mode`, checked to hold the codes of `encoder`, computed from the input
    /// it reads: the one place an index built by another encoder is refused (with the command
    /// that rebuilds it).
    pub fn section_for(
        &self,
        db: &Path,
        mode: Mode,
        encoder: &dyn Encoder,
    ) -> Result<&ModeIndex, IndexError> {
        let data = self.mode(mode, db)?;
        if &data.encoder != encoder.info() || data.input != encoder.input() {
            return Err(IndexError::encoder_mismatch(db, mode, data, encoder));
        }
        Ok(data)
    }

    /// Adds a file (replacing any earlier entry for the same path).
    pub fn add(&mut self, file: EncodedFile) {
        self.remove(&HashSet::from([file.record.path.clone()]));
        let number = self.files.len() as u32;
        for m in &file.modes {
            if let Some(data) = self.modes.get_mut(&m.mode) {
                data.push(number, &m.segments, &m.encoded);
            }
        }
        self.files.push(file.record);
    }

    /// Drops files and their segments.
    pub fn remove(&mut self, paths: &HashSet<PathBuf>) {
        if paths.is_empty() || !self.files.iter().any(|f| paths.contains(&f.path)) {
            return;
        }
        let mut next = 0u32;
        let new_number: Vec<Option<u32>> = self
            .files
            .iter()
            .map(|f| {
                (!paths.contains(&f.path)).then(|| {
                    next += 1;
                    next - 1
                })
            })
            .collect();
        for m in self.modes.values_mut() {
            m.retain_files(&new_number);
        }
        self.files.retain(|f| !paths.contains(&f.path));
    }

    /// Updates labels in place.
    pub fn relabel(&mut self, records: &[FileRecord]) {
        let labels: HashMap<&Path, &str> = records
            .iter()
            .map(|r| (r.path.as_path(), r.label.as_str()))
            .collect();
        for f in &mut self.files {
            if let Some(label) = labels.get(f.path.as_path()) {
                f.label = label.to_string();
            }
        }
    }

    pub fn total_duration_s(&self) -> f64 {
        self.files.iter().map(|f| f.duration_s).sum()
    }

    pub fn manifest(&self) -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            earshot_version: env!("CARGO_PKG_VERSION").to_string(),
            modes: self
                .modes
                .iter()
                .map(|(&mode, m)| ModeManifest {
                    mode,
                    encoder: m.encoder.clone(),
                    input: m.input,
                    segments: m.segments.len(),
                    library_code: m.library_code.as_ref().map(LibraryCodeManifest::of),
                })
                .collect(),
            damaged: (self.files.iter().enumerate())
                .filter_map(|(i, f)| {
                    let reason = f.damage.clone()?;
                    Some(DamagedFile {
                        file: i as u32,
                        reason,
                    })
                })
                .collect(),
        }
    }
}

/// Opens the store `db` names: a Milvus server for `milvus://HOST:PORT[/PREFIX]`, else a
/// folder.
pub fn open_store(db: &Path) -> Result<Box<dyn store::Store>, IndexError> {
    match milvus::Address::parse(db)? {
        Some(address) => Ok(Box::new(milvus::MilvusStore::connect(&address)?)),
        None => Ok(Box::new(store::FolderStore::new(db))),
    }
}

/// Whether `db` names a Milvus server rather than a folder.
pub fn is_remote(db: &Path) -> bool {
    db.to_str().is_some_and(|s| s.starts_with(milvus::SCHEME))
}

impl IndexError {
    /// An index section built by another encoder (or from another input) than `expected`.
    fn encoder_mismatch(db: &Path, mode: Mode, found: &ModeIndex, expected: &dyn Encoder) -> Self {
        let describe = |e: &EncoderInfo, input: &EncoderInput| {
            format!(
                "{} ({}) reading {} frames at {} Hz",
                e.name,
                e.weights_hash,
                input.front_end.name(),
                input.sample_rate()
            )
        };
        IndexError::EncoderMismatch {
            db: db.to_owned(),
            mode: mode.name(),
            found: describe(&found.encoder, &found.input),
            expected: describe(expected.info(), &expected.input()),
        }
    }
}

impl Default for Index {
    fn default() -> Self {
        Self::new()
    }
}
