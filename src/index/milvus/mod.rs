//! An index kept on a Milvus server (`--db milvus://HOST:PORT[/PREFIX]`): for users whose
//! library outgrows one machine's memory. The server keeps every segment and finds the ones
//! nearest a query's; Earshot keeps the catalog (roots, files, sections) and ranks the files
//! those segments belong to exactly as it ranks a local index (see [`MilvusStore::shortlist`]).
//!
//! Collections, each named `PREFIX_...` (`earshot_...` by default):
//! - `meta`: one row, the catalog's settings as JSON (format, roots, each section's encoder and
//!   input);
//! - `files`: a row per file: its id, its record as JSON (path, size, mtime, duration, label,
//!   damage), and whether its segments are all stored (`complete`);
//! - one per mode (`events`, `fingerprint`): a row per segment: file id, start and length in
//!   frames, the code as a binary vector (Hamming); for `events` the embedding as a float vector
//!   (cosine), as the index file would give it back (8 bits, see [`quantize`]); for
//!   `fingerprint` the code's 16-bit substrings as integers, by which the server finds the codes
//!   in the buckets exact-match search probes (see [`buckets`]).
//!
//! Consistency: a file's row is written `complete = false` before its segments, and set
//! `complete = true` only after they are flushed; search and ingest see complete files only,
//! and the next ingest deletes whatever an interrupted run left incomplete. So a killed
//! `index` leaves the state of its last checkpoint, as a local index does.

mod client;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use client::{Column, Columns, Field, FieldKind, Hits, Milvus, MilvusError, VectorIndex};

use super::store::{QueryCodes, Store, VotePlan};
use super::{EncodedFile, Index, IndexError, ModeIndex, SegmentRef, buckets, hamming, quantize};
use crate::library::FileRecord;
use crate::model::{EncoderInfo, EncoderInput, Mode};

/// How `--db` names a Milvus server.
pub const SCHEME: &str = "milvus://";
/// Collection names start with this unless the address gives a prefix.
const DEFAULT_PREFIX: &str = "earshot";
/// The catalog's layout; bumped when the collections change meaning.
const CATALOG_FORMAT: u32 = 1;
/// Segments a query segment brings back from the server's nearest-neighbour search.
const NEAREST_PER_QUERY_SEGMENT: usize = 256;
/// Rows sent in one insert.
const INSERT_BATCH_ROWS: usize = 10_000;
/// Longest JSON kept in a VarChar field (Milvus's limit).
const MAX_JSON_BYTES: u32 = 65_535;
/// Milvus needs a vector field in every collection; the catalog's collections carry this
/// placeholder.
const PLACEHOLDER_DIM: usize = 2;

/// Where a Milvus index is: the server, the prefix of its collections' names, and how the server
/// indexes their vectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub host: String,
    pub port: u16,
    pub prefix: String,
    /// `None`: exact indexes (`BIN_FLAT`, `FLAT`), whose answers are the local index's.
    pub clusters: Option<Clusters>,
}

/// An inverted-file index on the server (`?nlist=N[&nprobe=P]`): codes as `BIN_IVF_FLAT`,
/// embeddings as `IVF_FLAT`. A query reads the `nprobe` nearest of `nlist` clusters instead of
/// every vector: faster on millions of segments, at the cost of sometimes missing the nearest
/// (measure it with `cargo bench --bench milvus`). milvus-lite has no such index; a standalone
/// or distributed Milvus has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clusters {
    /// Clusters built when a collection is created (Milvus allows 1 to 65536).
    pub nlist: u32,
    /// Clusters a query reads (1 to `nlist`).
    pub nprobe: u32,
}

/// Clusters a query reads unless the address says (Milvus's own default is 8).
const DEFAULT_NPROBE: u32 = 16;
/// Milvus's largest `nlist`.
const MAX_NLIST: u32 = 65_536;

impl Address {
    /// `Some` for `milvus://HOST:PORT[/PREFIX][?nlist=N[&nprobe=P]]`, `None` for anything
    /// else (a folder).
    pub fn parse(db: &Path) -> Result<Option<Self>, IndexError> {
        let Some(rest) = db.to_str().and_then(|s| s.strip_prefix(SCHEME)) else {
            return Ok(None);
        };
        let bad = |why: &str| IndexError::BadAddress {
            address: db.to_string_lossy().into_owned(),
            why: why.to_string(),
        };
        let (rest, options) = rest.split_once('?').unwrap_or((rest, ""));
        let (server, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let (host, port) = server
            .rsplit_once(':')
            .ok_or_else(|| bad("it names no port"))?;
        let port = port
            .parse()
            .map_err(|_| bad("its port is not a number from 1 to 65535"))?;
        let prefix = match prefix.trim_end_matches('/') {
            "" => DEFAULT_PREFIX,
            p => p,
        };
        let valid = |c: char| c.is_ascii_alphanumeric() || c == '_';
        if host.is_empty() {
            return Err(bad("it names no host"));
        }
        if !prefix.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            || !prefix.chars().all(valid)
        {
            return Err(bad(
                "its prefix must be letters, digits and _, starting with a letter",
            ));
        }
        Ok(Some(Self {
            host: host.to_string(),
            port,
            prefix: prefix.to_string(),
            clusters: Clusters::parse(options).map_err(|why| bad(&why))?,
        }))
    }

    fn collection(&self, what: &str) -> String {
        format!("{}_{what}", self.prefix)
    }

    /// A connection to the server, its searches set to read `nprobe` clusters.
    pub fn connect(&self) -> Result<Milvus, MilvusError> {
        let mut milvus = Milvus::connect(&self.host, self.port)?;
        if let Some(c) = self.clusters {
            milvus.set_search_params(&[("nprobe", &c.nprobe.to_string())]);
        }
        Ok(milvus)
    }
}

impl Clusters {
    /// From an address's options (`nlist=N&nprobe=P`, or nothing); the error says what is
    /// wrong.
    fn parse(options: &str) -> Result<Option<Self>, String> {
        let (mut nlist, mut nprobe) = (None, None);
        for option in options.split('&').filter(|o| !o.is_empty()) {
            let (key, value) = option.split_once('=').unwrap_or((option, ""));
            let number = || -> Result<u32, String> {
                value
                    .parse()
                    .map_err(|_| format!("{key} must be a whole number, not {value:?}"))
            };
            match key {
                "nlist" => nlist = Some(number()?),
                "nprobe" => nprobe = Some(number()?),
                _ => {
                    return Err(format!(
                        "it has an unknown option {key:?} (known: nlist, nprobe)"
                    ));
                }
            }
        }
        let Some(nlist) = nlist else {
            return match nprobe {
                Some(_) => Err("nprobe needs nlist (the clusters it reads)".into()),
                None => Ok(None),
            };
        };
        if !(1..=MAX_NLIST).contains(&nlist) {
            return Err(format!("nlist must be from 1 to {MAX_NLIST}"));
        }
        let nprobe = nprobe.unwrap_or(DEFAULT_NPROBE.min(nlist));
        if !(1..=nlist).contains(&nprobe) {
            return Err(format!("nprobe must be from 1 to nlist ({nlist})"));
        }
        Ok(Some(Self { nlist, nprobe }))
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{SCHEME}{}:{}/{}", self.host, self.port, self.prefix)?;
        if let Some(c) = self.clusters {
            write!(f, "?nlist={}&nprobe={}", c.nlist, c.nprobe)?;
        }
        Ok(())
    }
}

/// The catalog's settings, kept in the `meta` collection.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Catalog {
    format: u32,
    earshot_version: String,
    roots: Vec<PathBuf>,
    sections: Vec<Section>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Section {
    mode: Mode,
    encoder: EncoderInfo,
    input: EncoderInput,
}

/// A file waiting for the next checkpoint: its row, and its segments per mode.
struct PendingFile {
    id: i64,
    record: FileRecord,
}

/// Segment rows waiting to be sent, per mode.
#[derive(Default)]
struct PendingSegments {
    ids: Vec<i64>,
    files: Vec<i64>,
    starts: Vec<i32>,
    lengths: Vec<i32>,
    codes: Vec<u8>,
    embeddings: Vec<f32>,
}

impl PendingSegments {
    fn len(&self) -> usize {
        self.ids.len()
    }
}

/// An index on a Milvus server (see the module's documentation).
pub struct MilvusStore {
    address: Address,
    milvus: Milvus,
    /// Each catalog file's id on the server, by path.
    ids: HashMap<PathBuf, i64>,
    /// The next id a new file gets: above every id the server has seen.
    next_id: i64,
    /// Files added since the last checkpoint: their rows are on the server with
    /// `complete = false` once [`Self::send_pending`] ran.
    pending_files: Vec<PendingFile>,
    /// Of those, the ones whose rows are sent.
    sent_files: usize,
    pending_segments: BTreeMap<Mode, PendingSegments>,
    /// Whether what an interrupted run left incomplete was deleted (before the first write).
    swept: bool,
}

impl MilvusStore {
    pub fn connect(address: &Address) -> Result<Self, IndexError> {
        let milvus = address.connect()?;
        let mut store = Self {
            address: address.clone(),
            milvus,
            ids: HashMap::new(),
            next_id: 0,
            pending_files: Vec::new(),
            sent_files: 0,
            pending_segments: BTreeMap::new(),
            swept: false,
        };
        // A catalog of another schema is named by `load`, and is no obstacle to a rebuild.
        if store.exists()? && store.check_schema(None).is_ok() {
            store.remember_files()?;
        }
        Ok(store)
    }

    /// Reads which id each file has, and the first id not taken.
    fn remember_files(&mut self) -> Result<(), IndexError> {
        for (id, record, complete) in self.read_files()? {
            self.next_id = self.next_id.max(id + 1);
            if complete {
                self.ids.insert(record.path, id);
            }
        }
        Ok(())
    }

    fn meta(&self) -> String {
        self.address.collection("meta")
    }

    fn files(&self) -> String {
        self.address.collection("files")
    }

    fn segments(&self, mode: Mode) -> String {
        self.address.collection(mode.name())
    }

    fn meta_fields() -> Vec<Field> {
        vec![
            Field::primary("id"),
            Field::varchar("catalog", MAX_JSON_BYTES),
            Field::float_vector("v", PLACEHOLDER_DIM as u32),
        ]
    }

    fn file_fields() -> Vec<Field> {
        vec![
            Field::primary("id"),
            Field::varchar("record", MAX_JSON_BYTES),
            Field::bool("complete"),
            Field::float_vector("v", PLACEHOLDER_DIM as u32),
        ]
    }

    /// A mode's segment collection for codes of `bits` and embeddings of `dim` (either may be
    /// 0: not kept).
    fn segment_fields(mode: Mode, bits: usize, dim: usize) -> Vec<Field> {
        let mut fields = vec![
            Field::primary("id"),
            Field::int64("file"),
            Field::int32("start_frame"),
            Field::int32("n_frames"),
        ];
        if bits > 0 {
            fields.push(Field::binary_vector("code", (code_bytes(bits) * 8) as u32));
        }
        if mode == Mode::Fingerprint && bits > 0 {
            let tables = buckets::tables_for(bits);
            fields.extend((0..tables).map(|t| Field::int32(substring_field(t))));
        }
        if dim > 0 {
            fields.push(Field::float_vector("embedding", dim as u32));
        }
        fields
    }

    fn section_fields(mode: Mode, data: &ModeIndex) -> Vec<Field> {
        Self::segment_fields(mode, data.bits(), data.embedding_dim)
    }

    /// Refuses collections whose fields are not the ones this Earshot writes (another
    /// program's, or another version's), naming the collection and the difference.
    fn check_schema(&self, index: Option<&Index>) -> Result<(), IndexError> {
        let mut expected = vec![
            (self.meta(), Self::meta_fields()),
            (self.files(), Self::file_fields()),
        ];
        if let Some(index) = index {
            for (&mode, data) in &index.modes {
                expected.push((self.segments(mode), Self::section_fields(mode, data)));
            }
        }
        for (name, fields) in expected {
            if !self.milvus.has_collection(&name)? {
                continue;
            }
            let found = self.milvus.describe(&name)?;
            if let Some(difference) = client::schema_mismatch(&fields, &found) {
                return Err(MilvusError::Schema {
                    collection: name,
                    detail: format!(
                        "{difference}: another program, or another version of Earshot, made it; give another prefix (milvus://{}:{}/OTHER), or rebuild it with --rebuild",
                        self.address.host, self.address.port
                    ),
                }
                .into());
            }
        }
        Ok(())
    }

    fn read_catalog(&self) -> Result<Option<Catalog>, IndexError> {
        let rows = self.milvus.query(&self.meta(), "id == 0", &["catalog"])?;
        let Some(json) = rows.strings("catalog")?.first() else {
            return Ok(None);
        };
        let catalog: Catalog = serde_json::from_str(json).map_err(|e| self.damaged(e))?;
        if catalog.format != CATALOG_FORMAT {
            return Err(IndexError::Version {
                path: PathBuf::from(self.meta()),
                db: PathBuf::from(self.address.to_string()),
                found: catalog.format,
                expected: CATALOG_FORMAT,
            });
        }
        Ok(Some(catalog))
    }

    fn damaged(&self, e: impl std::fmt::Display) -> IndexError {
        IndexError::Corrupt {
            path: PathBuf::from(self.meta()),
            db: PathBuf::from(self.address.to_string()),
            detail: e.to_string(),
        }
    }

    /// Every file row: id, record, complete.
    fn read_files(&self) -> Result<Vec<(i64, FileRecord, bool)>, IndexError> {
        if !self.milvus.has_collection(&self.files())? {
            return Ok(Vec::new());
        }
        let rows = (self.milvus).query(&self.files(), "", &["id", "record", "complete"])?;
        let (ids, records, complete) = (
            rows.i64("id")?,
            rows.strings("record")?,
            rows.bool("complete")?,
        );
        let mut files = Vec::with_capacity(ids.len());
        for ((&id, json), &complete) in ids.iter().zip(records).zip(complete) {
            let record: FileRecord = serde_json::from_str(json).map_err(|e| self.damaged(e))?;
            files.push((id, record, complete));
        }
        Ok(files)
    }

    fn write_catalog(&self, index: &Index) -> Result<(), IndexError> {
        let catalog = Catalog {
            format: CATALOG_FORMAT,
            earshot_version: env!("CARGO_PKG_VERSION").to_string(),
            roots: index.roots.clone(),
            sections: (index.modes.iter())
                .map(|(&mode, d)| Section {
                    mode,
                    encoder: d.encoder.clone(),
                    input: d.input,
                })
                .collect(),
        };
        let json = serde_json::to_string(&catalog).map_err(|e| self.damaged(e))?;
        self.ensure_collection(&self.meta(), &Self::meta_fields())?;
        let row = Columns::new()
            .with("id", Column::Int64(vec![0]))
            .with("catalog", Column::VarChar(vec![json]))
            .with("v", placeholder(1));
        self.milvus.upsert(&self.meta(), &row)?;
        Ok(())
    }

    fn ensure_collection(&self, name: &str, fields: &[Field]) -> Result<(), IndexError> {
        if !self.milvus.has_collection(name)? {
            self.milvus.create_collection(name, fields, &[])?;
        }
        Ok(())
    }

    /// Creates a mode's segment collection unless it exists, its vectors indexed as the
    /// address says.
    fn ensure_segments(&self, name: &str, fields: &[Field]) -> Result<(), IndexError> {
        if self.milvus.has_collection(name)? {
            return Ok(());
        }
        let vectors: Vec<&Field> = fields.iter().filter(|f| f.kind.is_vector()).collect();
        if vectors.len() > 1 {
            self.check_several_vectors()?;
        }
        let indexes: Vec<VectorIndex> = match self.address.clusters {
            None => Vec::new(),
            Some(c) => (vectors.iter())
                .map(|f| match f.kind {
                    FieldKind::BinaryVector { .. } => VectorIndex::bin_ivf_flat(&f.name, c.nlist),
                    _ => VectorIndex::ivf_flat_cosine(&f.name, c.nlist),
                })
                .collect(),
        };
        self.milvus.create_collection(name, fields, &indexes)?;
        Ok(())
    }

    /// Milvus keeps several vector fields in a collection from version 2.4 on; similar sounds
    /// keeps two (codes and embeddings).
    fn check_several_vectors(&self) -> Result<(), IndexError> {
        // milvus-lite does not say its version (it has several vectors): a server that does
        // not say is let try, and names its own refusal.
        let Ok(version) = self.milvus.server_version() else {
            return Ok(());
        };
        let numbers: Vec<u32> = (version.trim_start_matches('v').split(['.', '-']))
            .map_while(|n| n.parse().ok())
            .collect();
        if numbers.len() >= 2 && (numbers[0], numbers[1]) < (2, 4) {
            return Err(MilvusError::Unsupported {
                uri: format!("{}:{}", self.address.host, self.address.port),
                version,
                what: "keep a similar-sounds section (its codes and its embeddings are two vectors per segment; Milvus keeps several from 2.4 on)".into(),
                fix: "use Milvus 2.4 or later, or index exact match only there (--mode fingerprint)".into(),
            }
            .into());
        }
        Ok(())
    }

    /// Deletes what an interrupted run left: files not complete, and their segments.
    fn sweep(&mut self, index: &Index) -> Result<(), IndexError> {
        if self.swept {
            return Ok(());
        }
        self.swept = true;
        let incomplete: Vec<i64> = (self.read_files()?.into_iter())
            .filter(|(_, _, complete)| !complete)
            .map(|(id, _, _)| id)
            .collect();
        self.delete_files(index, &incomplete)
    }

    /// Hides files from search, then deletes their segments, then their rows: an interrupted
    /// deletion leaves rows that are not complete, which the next ingest sweeps.
    fn delete_files(&self, index: &Index, ids: &[i64]) -> Result<(), IndexError> {
        if ids.is_empty() {
            return Ok(());
        }
        let list = id_list(ids);
        for &mode in index.modes.keys() {
            let name = self.segments(mode);
            if self.milvus.has_collection(&name)? {
                self.milvus.delete(&name, &format!("file in [{list}]"))?;
            }
        }
        self.flush(&self.segment_collections(index))?;
        self.milvus
            .delete(&self.files(), &format!("id in [{list}]"))?;
        self.flush(&[self.files()])?;
        Ok(())
    }

    fn segment_collections(&self, index: &Index) -> Vec<String> {
        index.modes.keys().map(|&m| self.segments(m)).collect()
    }

    /// Flushes those of `names` that exist.
    fn flush(&self, names: &[String]) -> Result<(), IndexError> {
        let mut existing = Vec::new();
        for name in names {
            if self.milvus.has_collection(name)? {
                existing.push(name.as_str());
            }
        }
        if !existing.is_empty() {
            self.milvus.flush(&existing)?;
        }
        Ok(())
    }

    /// Sends the rows of files added since the last call (marked not complete), then their
    /// segments.
    fn send_pending(&mut self, index: &Index) -> Result<(), IndexError> {
        let unsent = &self.pending_files[self.sent_files..];
        if !unsent.is_empty() {
            self.ensure_collection(&self.files(), &Self::file_fields())?;
            self.milvus
                .insert(&self.files(), &self.file_rows(unsent, false)?)?;
            self.sent_files = self.pending_files.len();
        }
        for (mode, rows) in std::mem::take(&mut self.pending_segments) {
            let Some(data) = index.modes.get(&mode) else {
                continue;
            };
            let name = self.segments(mode);
            self.ensure_segments(&name, &Self::section_fields(mode, data))?;
            self.milvus
                .insert(&name, &segment_columns(mode, rows, data))?;
        }
        Ok(())
    }

    fn file_rows(&self, files: &[PendingFile], complete: bool) -> Result<Columns, IndexError> {
        let records = (files.iter())
            .map(|f| serde_json::to_string(&f.record).map_err(|e| self.damaged(e)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Columns::new()
            .with("id", Column::Int64(files.iter().map(|f| f.id).collect()))
            .with("record", Column::VarChar(records))
            .with("complete", Column::Bool(vec![complete; files.len()]))
            .with("v", placeholder(files.len())))
    }

    /// Segments of `files` (catalog positions) for `mode`, as an index of their own.
    fn fetch(&self, index: &Index, mode: Mode, files: &[usize]) -> Result<Index, IndexError> {
        let data = index.mode(mode, Path::new(&self.address.to_string()))?;
        let mut part = Index {
            roots: index.roots.clone(),
            files: files.iter().map(|&f| index.files[f].clone()).collect(),
            modes: BTreeMap::new(),
        };
        let mut section = ModeIndex::new(mode, data.encoder.clone(), data.input);
        // Each server id's position in `part.files`.
        let position: HashMap<i64, u32> = (files.iter().enumerate())
            .filter_map(|(i, &f)| Some((*self.ids.get(&index.files[f].path)?, i as u32)))
            .collect();
        if position.is_empty() {
            part.modes.insert(mode, section);
            return Ok(part);
        }
        let ids: Vec<i64> = position.keys().copied().collect();
        let mut fields = vec!["file", "start_frame", "n_frames"];
        let (bits, dim) = (data.bits(), data.embedding_dim);
        if bits > 0 {
            fields.push("code");
        }
        if dim > 0 {
            fields.push("embedding");
        }
        let rows = self.milvus.query(
            &self.segments(mode),
            &format!("file in [{}]", id_list(&ids)),
            &fields,
        )?;
        let (file_ids, starts, lengths) = (
            rows.i64("file")?,
            rows.i32("start_frame")?,
            rows.i32("n_frames")?,
        );
        let codes = if bits > 0 {
            rows.binary("code")?.1
        } else {
            &[]
        };
        let embeddings = if dim > 0 {
            rows.float_vectors("embedding")?.1
        } else {
            &[]
        };
        let mut order: Vec<usize> = (0..file_ids.len()).collect();
        let key = |i: usize| (position.get(&file_ids[i]).copied(), starts[i]);
        order.sort_by_key(|&i| key(i));
        let bytes = code_bytes(bits);
        for i in order {
            let Some(&file) = position.get(&file_ids[i]) else {
                continue;
            };
            let code = codes.get(i * bytes..(i + 1) * bytes).unwrap_or(&[]);
            let embedding = embeddings.get(i * dim..(i + 1) * dim).unwrap_or(&[]);
            section.push_stored(
                SegmentRef {
                    file,
                    start_frame: starts[i].max(0) as u32,
                    n_frames: lengths[i].max(0) as u32,
                },
                &words_of(code, data.words()),
                embedding,
            );
        }
        part.modes.insert(mode, section);
        Ok(part)
    }
}

impl Store for MilvusStore {
    fn exists(&self) -> Result<bool, IndexError> {
        Ok(self.milvus.has_collection(&self.meta())?)
    }

    fn load(&self) -> Result<Index, IndexError> {
        let catalog = match self.exists()? {
            true => {
                self.check_schema(None)?;
                self.read_catalog()?
            }
            false => None,
        };
        let Some(catalog) = catalog else {
            return Err(IndexError::Missing {
                db: PathBuf::from(self.address.to_string()),
            });
        };
        let mut index = Index::new();
        index.roots = catalog.roots;
        for s in catalog.sections {
            (index.modes).insert(s.mode, ModeIndex::new(s.mode, s.encoder, s.input));
        }
        self.check_schema(Some(&index))?;
        let mut files: Vec<(i64, FileRecord)> = (self.read_files()?.into_iter())
            .filter(|(_, _, complete)| *complete)
            .map(|(id, record, _)| (id, record))
            .collect();
        files.sort_by_key(|(id, _)| *id);
        index.files = files.into_iter().map(|(_, r)| r).collect();
        Ok(index)
    }

    fn clear(&mut self, index: &mut Index) -> Result<(), IndexError> {
        let mut names = vec![self.meta(), self.files()];
        names.extend(Mode::ALL.iter().map(|&m| self.segments(m)));
        for name in names {
            if self.milvus.has_collection(&name)? {
                self.milvus.drop_collection(&name)?;
            }
        }
        *index = Index::new();
        self.ids.clear();
        self.swept = true;
        Ok(())
    }

    fn add(&mut self, index: &mut Index, file: EncodedFile) -> Result<(), IndexError> {
        self.sweep(index)?;
        self.remove(index, &HashSet::from([file.record.path.clone()]))?;
        let id = self.next_id;
        self.next_id += 1;
        for m in &file.modes {
            let Some(data) = index.modes.get(&m.mode) else {
                continue;
            };
            let rows = self.pending_segments.entry(m.mode).or_default();
            let (w, d) = (data.words(), data.embedding_dim);
            for (k, &(start, n)) in m.segments.iter().enumerate() {
                rows.ids.push(id << 32 | k as i64);
                rows.files.push(id);
                rows.starts.push(start as i32);
                rows.lengths.push(n as i32);
                if w > 0 {
                    push_code_bytes(
                        &m.encoded.codes[k * w..(k + 1) * w],
                        data.bits(),
                        &mut rows.codes,
                    );
                }
                if d > 0 {
                    let stored = quantize::round_trip(&m.encoded.embeddings[k * d..(k + 1) * d]);
                    rows.embeddings.extend_from_slice(&stored);
                }
            }
        }
        self.ids.insert(file.record.path.clone(), id);
        index.files.push(file.record.clone());
        self.pending_files.push(PendingFile {
            id,
            record: file.record,
        });
        if self
            .pending_segments
            .values()
            .map(PendingSegments::len)
            .sum::<usize>()
            >= INSERT_BATCH_ROWS
        {
            self.send_pending(index)?;
        }
        Ok(())
    }

    fn remove(&mut self, index: &mut Index, paths: &HashSet<PathBuf>) -> Result<(), IndexError> {
        self.sweep(index)?;
        let ids: Vec<i64> = paths.iter().filter_map(|p| self.ids.remove(p)).collect();
        if ids.is_empty() {
            return Ok(());
        }
        // A file added and removed before a checkpoint may not have been sent yet.
        self.send_pending(index)?;
        self.pending_files
            .retain(|f| !paths.contains(&f.record.path));
        self.sent_files = self.pending_files.len();
        self.delete_files(index, &ids)?;
        index.files.retain(|f| !paths.contains(&f.path));
        Ok(())
    }

    fn relabel(&mut self, index: &mut Index, records: &[FileRecord]) -> Result<(), IndexError> {
        self.sweep(index)?;
        index.relabel(records);
        let changed: Vec<PendingFile> = (records.iter())
            .filter_map(|r| {
                let id = *self.ids.get(&r.path)?;
                let record = index.files.iter().find(|f| f.path == r.path)?.clone();
                Some(PendingFile { id, record })
            })
            .collect();
        if !changed.is_empty() {
            self.milvus
                .upsert(&self.files(), &self.file_rows(&changed, true)?)?;
        }
        Ok(())
    }

    fn checkpoint(&mut self, index: &Index) -> Result<(), IndexError> {
        self.sweep(index)?;
        self.write_catalog(index)?;
        self.send_pending(index)?;
        self.flush(&self.segment_collections(index))?;
        self.ensure_collection(&self.files(), &Self::file_fields())?;
        if !self.pending_files.is_empty() {
            let rows = self.file_rows(&self.pending_files, true)?;
            self.milvus.upsert(&self.files(), &rows)?;
        }
        self.flush(&[self.meta(), self.files()])?;
        self.pending_files.clear();
        self.sent_files = 0;
        Ok(())
    }

    fn learns_library_codes(&self) -> bool {
        false
    }

    fn segment_count(&self, _index: &Index, mode: Mode) -> Result<usize, IndexError> {
        let name = self.segments(mode);
        if !self.milvus.has_collection(&name)? {
            return Ok(0);
        }
        Ok(self.milvus.count(&name, "")? as usize)
    }

    fn shortlist(
        &self,
        index: &Index,
        mode: Mode,
        query: &QueryCodes<'_>,
    ) -> Result<Option<Index>, IndexError> {
        let data = index.mode(mode, Path::new(&self.address.to_string()))?;
        let name = self.segments(mode);
        let k = NEAREST_PER_QUERY_SEGMENT;
        let mut chosen = match (data.bits(), &query.votes) {
            (0, _) => {
                let (dim, embeddings) = (data.embedding_dim, &query.encoded.embeddings);
                let nearest = (self.milvus).search_float(
                    &name,
                    "embedding",
                    embeddings,
                    dim,
                    k,
                    None,
                    &[],
                )?;
                // A cosine: the larger, the nearer.
                shortlisted(self.files_by_best(index, &nearest, |s| -s), query.files)
            }
            (_, Some(plan)) => self.voted_files(index, &name, data, query, plan)?,
            (bits, None) => {
                let queries: Vec<Vec<u8>> = (query.encoded.codes.chunks_exact(data.words()))
                    .map(|c| {
                        let mut bytes = Vec::new();
                        push_code_bytes(c, bits, &mut bytes);
                        bytes
                    })
                    .collect();
                let nearest = (self.milvus).search_binary(&name, "code", &queries, k, None, &[])?;
                shortlisted(self.files_by_best(index, &nearest, |d| d), query.files)
            }
        };
        chosen.sort_unstable();
        self.fetch(index, mode, &chosen).map(Some)
    }
}

/// A catalog file and how near the query it came (lower is nearer).
struct NearFile {
    file: usize,
    nearness: f32,
}

/// A segment the server holds, as voting reads it.
struct StoredSegment {
    file: usize,
    start_frame: i32,
    code: Vec<u64>,
}

impl MilvusStore {
    /// Each catalog position by the file's id on the server.
    fn positions(&self, index: &Index) -> HashMap<i64, usize> {
        (index.files.iter().enumerate())
            .filter_map(|(i, f)| Some((*self.ids.get(&f.path)?, i)))
            .collect()
    }

    /// Files by their nearest segment to any query segment (`nearness` of a hit's score).
    fn files_by_best(
        &self,
        index: &Index,
        nearest: &[Hits],
        nearness: impl Fn(f32) -> f32,
    ) -> Vec<NearFile> {
        let position = self.positions(index);
        let mut best: HashMap<usize, f32> = HashMap::new();
        for &(id, score) in nearest.iter().flat_map(|h| &h.hits) {
            if let Some(&file) = position.get(&(id >> 32)) {
                let near = best.entry(file).or_insert(f32::INFINITY);
                *near = near.min(nearness(score));
            }
        }
        (best.into_iter())
            .map(|(file, nearness)| NearFile { file, nearness })
            .collect()
    }

    /// Every file fingerprint search would verify: the server finds the codes in the buckets
    /// its probes read (by the codes' stored substrings), they vote as they do in search, and
    /// the files of the heaviest votes are kept (with any vote as heavy as the last).
    fn voted_files(
        &self,
        index: &Index,
        name: &str,
        data: &ModeIndex,
        query: &QueryCodes<'_>,
        plan: &VotePlan<'_>,
    ) -> Result<Vec<usize>, IndexError> {
        let (bits, words) = (data.bits(), data.words());
        let codes: Vec<&[u64]> = query.encoded.codes.chunks_exact(words).collect();
        let keys: Vec<Vec<Vec<usize>>> = (codes.iter().enumerate())
            .map(|(j, code)| probe_keys(code, plan, j, bits))
            .collect();
        let stored = self.bucket_members(index, name, &keys, words)?;
        let mut members: HashMap<(usize, usize), Vec<usize>> = HashMap::new();
        for (i, s) in stored.iter().enumerate() {
            for t in 0..buckets::tables_for(bits) {
                members
                    .entry((t, buckets::substring(&s.code, t)))
                    .or_default()
                    .push(i);
            }
        }
        let max = plan.max_distance.max(1) as f32;
        let mut votes: HashMap<(usize, i64), f32> = HashMap::new();
        for (j, (code, keys)) in codes.iter().zip(&keys).enumerate() {
            let mut near: Vec<usize> = (keys.iter().enumerate())
                .flat_map(|(t, keys)| keys.iter().map(move |&k| (t, k)))
                .filter_map(|tk| members.get(&tk))
                .flatten()
                .copied()
                .collect();
            near.sort_unstable();
            near.dedup();
            for i in near {
                let d = hamming::distance(&stored[i].code, code);
                if d <= plan.max_distance {
                    let offset = i64::from(stored[i].start_frame) - query.starts[j] as i64;
                    *votes.entry((stored[i].file, offset)).or_default() += 1.0 - d as f32 / max;
                }
            }
        }
        Ok(heaviest_votes(votes, plan))
    }

    /// The segments in the buckets `keys` name (per query segment, per table), of catalog
    /// files.
    fn bucket_members(
        &self,
        index: &Index,
        name: &str,
        keys: &[Vec<Vec<usize>>],
        words: usize,
    ) -> Result<Vec<StoredSegment>, IndexError> {
        let position = self.positions(index);
        let tables = keys.first().map_or(0, Vec::len);
        let mut seen = HashSet::new();
        let mut stored = Vec::new();
        for t in 0..tables {
            let mut wanted: Vec<usize> = keys.iter().flat_map(|k| k[t].iter().copied()).collect();
            wanted.sort_unstable();
            wanted.dedup();
            let list = wanted
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let filter = format!("{} in [{list}]", substring_field(t));
            let rows =
                (self.milvus).query(name, &filter, &["id", "file", "start_frame", "code"])?;
            let (ids, files, starts) =
                (rows.i64("id")?, rows.i64("file")?, rows.i32("start_frame")?);
            let (bytes, codes) = rows.binary("code")?;
            for (r, (&id, file)) in ids.iter().zip(files).enumerate() {
                let Some(&file) = position.get(file) else {
                    continue;
                };
                if seen.insert(id) {
                    let code = words_of(&codes[r * bytes..(r + 1) * bytes], words);
                    let start_frame = starts[r];
                    stored.push(StoredSegment {
                        file,
                        start_frame,
                        code,
                    });
                }
            }
        }
        Ok(stored)
    }
}

/// The bucket keys fingerprint search probes for query segment `j` (see
/// [`buckets::BucketIndex::probe_unsure`] and [`buckets::BucketIndex::probe`]).
fn probe_keys(code: &[u64], plan: &VotePlan<'_>, j: usize, bits: usize) -> Vec<Vec<usize>> {
    let tables = buckets::tables_for(bits);
    match plan.certainty.get(j * bits..(j + 1) * bits) {
        Some(certainty) => buckets::unsure_keys(code, certainty, plan.unsure_bits, tables),
        None => buckets::keys_within(code, plan.substring_radius, tables),
    }
}

/// Sums of the same votes added in another order can differ in their last bits: a vote this
/// close to the last one verified is kept too.
const VOTE_TOLERANCE: f32 = 1e-3;

/// The files of the `plan.candidates` heaviest (file, offset) votes, at most one per hop of a
/// file as search picks them, and of every vote as heavy as the last of those.
fn heaviest_votes(votes: HashMap<(usize, i64), f32>, plan: &VotePlan<'_>) -> Vec<usize> {
    let mut ranked: Vec<((usize, i64), f32)> = votes.into_iter().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut picked: Vec<(usize, i64)> = Vec::new();
    let mut last = f32::INFINITY;
    for &((file, offset), vote) in &ranked {
        if picked.len() == plan.candidates {
            break;
        }
        if !(picked.iter()).any(|&(f, o)| f == file && (o - offset).abs() <= plan.hop) {
            picked.push((file, offset));
            last = vote;
        }
    }
    let mut files: Vec<usize> = (ranked.iter())
        .take_while(|(_, vote)| *vote >= last - VOTE_TOLERANCE)
        .map(|&((file, _), _)| file)
        .collect();
    files.sort_unstable();
    files.dedup();
    files
}

/// The nearest `files` files, and every file as near as the last of them (the ranking above
/// breaks such ties by its own measures, so they all go up to it).
fn shortlisted(mut found: Vec<NearFile>, files: usize) -> Vec<usize> {
    found.sort_by(|a, b| a.nearness.total_cmp(&b.nearness).then(a.file.cmp(&b.file)));
    let Some(last) = found.get(files.min(found.len()).saturating_sub(1)) else {
        return Vec::new();
    };
    let limit = last.nearness;
    (found.iter())
        .take_while(|f| f.nearness <= limit)
        .map(|f| f.file)
        .collect()
}

/// The field of a fingerprint code's `t`-th 16-bit substring: the server finds the codes in a
/// bucket of [`buckets`] by filtering on it.
fn substring_field(t: usize) -> String {
    format!("s{t}")
}

/// Bytes of a code of `bits` on the server (Milvus's binary vectors are whole bytes).
fn code_bytes(bits: usize) -> usize {
    bits.div_ceil(8)
}

/// A packed code's bytes: each word little-endian, cut to the code's whole bytes.
fn push_code_bytes(words: &[u64], bits: usize, out: &mut Vec<u8>) {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    out.extend_from_slice(&bytes[..code_bytes(bits).min(bytes.len())]);
}

/// The words of a code stored as `bytes`.
fn words_of(bytes: &[u8], words: usize) -> Vec<u64> {
    let mut out = vec![0u64; words];
    for (i, &b) in bytes.iter().enumerate().take(words * 8) {
        out[i / 8] |= u64::from(b) << (8 * (i % 8));
    }
    out
}

fn segment_columns(mode: Mode, rows: PendingSegments, data: &ModeIndex) -> Columns {
    let mut columns = Columns::new()
        .with("id", Column::Int64(rows.ids))
        .with("file", Column::Int64(rows.files))
        .with("start_frame", Column::Int32(rows.starts))
        .with("n_frames", Column::Int32(rows.lengths));
    if mode == Mode::Fingerprint && data.bits() > 0 {
        let codes: Vec<&[u8]> = rows.codes.chunks_exact(code_bytes(data.bits())).collect();
        for t in 0..buckets::tables_for(data.bits()) {
            let values = (codes.iter())
                .map(|c| buckets::substring(&words_of(c, data.words()), t) as i32)
                .collect();
            columns.push(substring_field(t), Column::Int32(values));
        }
    }
    if data.bits() > 0 {
        let bytes_per_row = code_bytes(data.bits());
        columns.push(
            "code",
            Column::BinaryVector {
                bytes_per_row,
                data: rows.codes,
            },
        );
    }
    if data.embedding_dim > 0 {
        let dim = data.embedding_dim;
        columns.push(
            "embedding",
            Column::FloatVector {
                dim,
                data: rows.embeddings,
            },
        );
    }
    columns
}

/// The placeholder vectors of `rows` catalog rows.
fn placeholder(rows: usize) -> Column {
    let dim = PLACEHOLDER_DIM;
    Column::FloatVector {
        dim,
        data: vec![0.0; rows * dim],
    }
}

fn id_list(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_name_host_port_and_prefix() {
        let a = Address::parse(Path::new("milvus://10.0.0.5:19530/birds")).unwrap();
        assert_eq!(
            a,
            Some(Address {
                host: "10.0.0.5".into(),
                port: 19530,
                prefix: "birds".into(),
                clusters: None,
            })
        );
        let a = Address::parse(Path::new("milvus://h:1/x?nlist=1024&nprobe=32"))
            .unwrap()
            .unwrap();
        let clusters = Some(Clusters {
            nlist: 1024,
            nprobe: 32,
        });
        assert_eq!(a.clusters, clusters);
        assert_eq!(a.to_string(), "milvus://h:1/x?nlist=1024&nprobe=32");
        let a = Address::parse(Path::new("milvus://h:1?nlist=4"))
            .unwrap()
            .unwrap();
        assert_eq!(
            (a.prefix.as_str(), a.clusters.map(|c| c.nprobe)),
            (DEFAULT_PREFIX, Some(4))
        );
        let a = Address::parse(Path::new("milvus://localhost:19530"))
            .unwrap()
            .unwrap();
        assert_eq!(a.prefix, DEFAULT_PREFIX);
        assert_eq!(Address::parse(Path::new("/home/me/index")).unwrap(), None);
        for bad in [
            "milvus://host",
            "milvus://host:port",
            "milvus://:1/x",
            "milvus://h:1/9x",
            "milvus://h:1/a-b",
            "milvus://h:1/a?nprobe=4",
            "milvus://h:1/a?nlist=0",
            "milvus://h:1/a?nlist=8&nprobe=9",
            "milvus://h:1/a?nlist=many",
            "milvus://h:1/a?index=ivf",
        ] {
            let e = Address::parse(Path::new(bad)).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn codes_cross_to_bytes_and_back() {
        let words = [0x0123_4567_89ab_cdefu64, 0xfedc_ba98_7654_3210];
        let mut bytes = Vec::new();
        push_code_bytes(&words, 128, &mut bytes);
        assert_eq!(bytes.len(), 16);
        assert_eq!(words_of(&bytes, 2), words);
        let mut short = Vec::new();
        push_code_bytes(&words[..1], 48, &mut short);
        assert_eq!(short.len(), 6);
        assert_eq!(words_of(&short, 1), [0x0000_4567_89ab_cdef]);
    }
}
