//! The index file, `index.earshot`, version [`FORMAT_VERSION`]:
//!
//! ```text
//! magic "EARSHOT\0" | u32 format version | u32 length + manifest JSON (format 2: one log-mel
//!     setting for every mode, read as each mode's input)
//! u32 root count, roots | u32 file count, files
//! per mode in manifest order: u64 segment count, u64 run count, segment runs (u32 file,
//!     u32 first start, u32 frames, u32 step, u32 count), codes (format 5: u64 length + raw
//!     deflate of the codes as u64 x words, each XORed with the code before it; formats 2-4:
//!     u64 x words as they are), u32 embedding
//!     dim kept, embeddings in 8 bits (per vector: f32 scale, i8 x dim; see [`super::quantize`];
//!     format 2: f32 x dim), then where the manifest describes a library code (format 4): its
//!     standardiser (f32 x dim means, f32 x dim inverse deviations) and per layer its weights
//!     (f32 x outputs x inputs) and biases (f32 x outputs)
//! u32 CRC-32 of everything before it
//! ```
//!
//! Integers are little-endian; paths are raw bytes (any name the OS allows). Writing goes to a
//! temporary file that is flushed to disk and renamed over the old one, and the folder is synced:
//! readers, crashes and kills see either the old index or the new one, never a mix.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use super::library_code::{Dense, LibraryCode};
use super::{
    FORMAT_VERSION, Index, IndexError, LibraryCodeManifest, Manifest, ModeIndex, ModeManifest,
    SegmentRef, quantize,
};
use crate::fsutil;
use crate::library::FileRecord;
use crate::model::hash_head::Standardiser;

const MAGIC: &[u8; 8] = b"EARSHOT\0";
/// The last format before encoders declared their input: same layout, older manifest.
const FORMAT_2: u32 = 2;
/// The last format before library codes: the same layout without them.
const FORMAT_3: u32 = 3;
/// The last format that stored codes as they are, not XORed with the code before and deflated.
const FORMAT_4: u32 = 4;
/// Stored for a file whose modification time is unknown.
const NO_MTIME: u32 = u32::MAX;
/// Bytes read or written at a time for the large arrays (codes, embeddings): the file is
/// streamed, never held in memory whole beside the index it describes.
const CHUNK_BYTES: usize = 1 << 16;

/// Writes `index` to `db/index.earshot` atomically.
pub fn save(index: &Index, db: &Path) -> Result<(), IndexError> {
    let path = Index::index_path(db);
    let io = |source| IndexError::Io {
        path: path.clone(),
        source,
    };
    fs::create_dir_all(db).map_err(io)?;
    fsutil::write_atomic_with(&path, |file| encode(index, file)).map_err(io)
}

/// Reads `db/index.earshot`, streaming it (memory holds the index, not also the file's bytes).
pub fn load(db: &Path) -> Result<Index, IndexError> {
    let path = Index::index_path(db);
    let io = |source: io::Error| match source.kind() {
        io::ErrorKind::NotFound => IndexError::Missing { db: db.to_owned() },
        _ => IndexError::Io {
            path: path.clone(),
            source,
        },
    };
    let file = File::open(&path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    read_index(BufReader::new(file), len, &path, db)
}

/// Reads an index from `bytes` (as [`load`] does from a file; `path` and `db` name it in errors).
pub fn from_bytes(bytes: &[u8], path: &Path, db: &Path) -> Result<Index, IndexError> {
    read_index(bytes, bytes.len() as u64, path, db)
}

/// Removes temporary files left by runs that were killed mid-save (their process is gone).
pub fn remove_stale_temp_files(db: &Path) {
    fsutil::remove_stale_temp_files(&Index::index_path(db));
}

/// Whether `db` holds an index file.
pub fn exists(db: &Path) -> bool {
    Index::index_path(db).is_file()
}

fn encode(index: &Index, out: &mut dyn Write) -> io::Result<()> {
    encode_as(index, out, FORMAT_VERSION)
}

/// Writes `index` with the codes laid out as format `version` has them (older formats, for tests
/// that they still load; the manifest is always today's).
fn encode_as(index: &Index, out: &mut dyn Write, version: u32) -> io::Result<()> {
    let mut out = Writer {
        out,
        crc: crc32fast::Hasher::new(),
    };
    out.raw(MAGIC)?;
    out.u32(version)?;
    // A manifest of plain data always serialises.
    let manifest = serde_json::to_vec(&index.manifest()).unwrap_or_default();
    out.bytes(&manifest)?;
    out.u32(index.roots.len() as u32)?;
    for root in &index.roots {
        out.bytes(&path_bytes(root))?;
    }
    out.u32(index.files.len() as u32)?;
    for f in &index.files {
        out.bytes(&path_bytes(&f.path))?;
        out.u64(f.size)?;
        let (secs, nanos) = f
            .modified
            .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
            .map_or((0, NO_MTIME), |d| (d.as_secs(), d.subsec_nanos()));
        out.u64(secs)?;
        out.u32(nanos)?;
        out.f64(f.duration_s)?;
        out.bytes(f.label.as_bytes())?;
    }
    for m in index.modes.values() {
        out.u64(m.segments.len() as u64)?;
        let runs = segment_runs(&m.segments);
        out.u64(runs.len() as u64)?;
        let words = runs
            .iter()
            .flat_map(|r| [r.file, r.start_frame, r.n_frames, r.step, r.count]);
        out.array(words.map(u32::to_le_bytes))?;
        if version > FORMAT_4 {
            let packed = pack_codes(&m.codes, m.words())?;
            out.u64(packed.len() as u64)?;
            out.raw(&packed)?;
        } else {
            out.array(m.codes.iter().map(|c| c.to_le_bytes()))?;
        }
        out.u32(m.embedding_dim as u32)?;
        let mut stored = Vec::new();
        for vector in m.embeddings.chunks_exact(m.embedding_dim.max(1)) {
            stored.clear();
            quantize::push_vector(vector, &mut stored);
            out.raw(&stored)?;
        }
        if let Some(code) = &m.library_code {
            let layers = code.layers.iter().flat_map(|l| [&l.weights, &l.bias]);
            for values in [&code.standardiser.mean, &code.standardiser.scale]
                .into_iter()
                .chain(layers)
            {
                out.array(values.iter().map(|v| v.to_le_bytes()))?;
            }
        }
    }
    let Writer { out, crc } = out;
    out.write_all(&crc.finalize().to_le_bytes())
}

fn read_index(source: impl Read, len: u64, path: &Path, db: &Path) -> Result<Index, IndexError> {
    let corrupt = |detail: &str| IndexError::Corrupt {
        path: path.to_owned(),
        db: db.to_owned(),
        detail: detail.to_string(),
    };
    let io = |source| IndexError::Io {
        path: path.to_owned(),
        source,
    };
    // Everything but the last four bytes (the checksum) is hashed while it is parsed.
    let body_len = len.saturating_sub(4);
    let mut r = Reader {
        source: source.take(body_len),
        crc: crc32fast::Hasher::new(),
        remaining: body_len,
        error: None,
    };
    let magic = r.take::<8>();
    if magic.as_ref() != Some(MAGIC) {
        return Err(r.error.map_or(
            IndexError::NotAnIndex {
                path: path.to_owned(),
            },
            io,
        ));
    }
    let Some(version) = r.u32() else {
        return Err(r.error.map_or_else(|| corrupt("cut off in its header"), io));
    };
    if ![FORMAT_VERSION, FORMAT_4, FORMAT_3, FORMAT_2].contains(&version) {
        return Err(IndexError::Version {
            path: path.to_owned(),
            db: db.to_owned(),
            found: version,
            expected: FORMAT_VERSION,
        });
    }
    if len < 16 {
        return Err(corrupt("cut off in its header"));
    }
    let index = read_body(&mut r, version);
    if let Some(e) = r.error.take() {
        return Err(io(e));
    }
    // Checked before the contents are trusted: a damaged file says so, whatever it parsed to.
    let mut stored = [0u8; 4];
    let crc_ok = r.remaining == 0
        && r.source.into_inner().read_exact(&mut stored).is_ok()
        && u32::from_le_bytes(stored) == r.crc.finalize();
    if !crc_ok {
        return Err(corrupt(
            "checksum mismatch: the file is truncated or was altered",
        ));
    }
    index.ok_or_else(|| corrupt("its contents do not add up"))
}

/// The manifest of format 2: one log-mel setting for every mode.
#[derive(serde::Deserialize)]
struct ManifestV2 {
    format_version: u32,
    earshot_version: String,
    features: crate::features::LogMelConfig,
    modes: Vec<ModeManifestV2>,
}

#[derive(serde::Deserialize)]
struct ModeManifestV2 {
    mode: crate::model::Mode,
    encoder: crate::model::EncoderInfo,
    segmentation: crate::model::Segmentation,
    segments: usize,
}

impl From<ManifestV2> for Manifest {
    fn from(old: ManifestV2) -> Self {
        let front_end = crate::features::FrontEnd::LogMel(old.features);
        Manifest {
            format_version: old.format_version,
            earshot_version: old.earshot_version,
            modes: old
                .modes
                .into_iter()
                .map(|m| ModeManifest {
                    mode: m.mode,
                    encoder: m.encoder,
                    input: crate::model::EncoderInput {
                        front_end,
                        segmentation: m.segmentation,
                    },
                    segments: m.segments,
                    library_code: None,
                })
                .collect(),
            damaged: Vec::new(),
        }
    }
}

/// Parses everything after the version; `None` on any inconsistency.
fn read_body(r: &mut Reader<impl Read>, version: u32) -> Option<Index> {
    let json = r.bytes()?;
    let manifest: Manifest = if version == FORMAT_2 {
        serde_json::from_slice::<ManifestV2>(&json).ok()?.into()
    } else {
        serde_json::from_slice(&json).ok()?
    };
    if !manifest.modes.iter().all(|m| m.input.is_valid()) {
        return None;
    }
    let roots = (0..r.u32()?)
        .map(|_| r.bytes().map(|b| bytes_path(&b)))
        .collect::<Option<Vec<_>>>()?;
    let n_files = r.u32()? as usize;
    let mut files = Vec::with_capacity(n_files.min(r.remaining as usize / 32));
    for _ in 0..n_files {
        let path = bytes_path(&r.bytes()?);
        let size = r.u64()?;
        let (secs, nanos) = (r.u64()?, r.u32()?);
        let modified = match nanos {
            NO_MTIME => None,
            // Checked: a damaged time must not overflow (`SystemTime + Duration` panics).
            0..1_000_000_000 => Some(UNIX_EPOCH.checked_add(Duration::new(secs, nanos))?),
            _ => return None,
        };
        let duration_s = r.f64()?;
        let label = String::from_utf8(r.bytes()?).ok()?;
        files.push(FileRecord {
            path,
            size,
            modified,
            duration_s,
            label,
            damage: None,
        });
    }
    for d in &manifest.damaged {
        files.get_mut(d.file as usize)?.damage = Some(d.reason.clone());
    }
    let mut modes = std::collections::BTreeMap::new();
    for mm in &manifest.modes {
        let n = usize::try_from(r.u64()?).ok()?;
        if n != mm.segments {
            return None;
        }
        let n_runs = usize::try_from(r.u64()?).ok()?;
        let runs = r.array(n_runs, |b: [u8; 20]| {
            let word = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
            SegmentRun {
                file: word(0),
                start_frame: word(4),
                n_frames: word(8),
                step: word(12),
                count: word(16),
            }
        })?;
        // The codes must be there before the segments are expanded: a damaged count must not
        // allocate more than the file holds.
        let bits = mm.library_code.as_ref().map_or(mm.encoder.bits, |c| c.bits);
        let words = bits.div_ceil(64);
        let codes = if version > FORMAT_4 {
            let packed_len = r.u64()?;
            if packed_len > r.remaining {
                return None;
            }
            let mut packed = Packed {
                reader: &mut *r,
                left: packed_len,
            };
            let codes = unpack_codes(&mut packed, packed_len, n.checked_mul(words)?, words)?;
            // Every packed byte is used: what follows starts where they end.
            (packed.left == 0).then_some(codes)?
        } else {
            if (n as u64).checked_mul(8 * words as u64)? > r.remaining {
                return None;
            }
            r.array(n.checked_mul(words)?, u64::from_le_bytes)?
        };
        let segments = expand_runs(&runs, n, files.len())?;
        let dim = r.u32()? as usize;
        if dim != 0 && dim != mm.encoder.embedding_dim {
            return None;
        }
        let embeddings = if version == FORMAT_2 {
            r.array(n.checked_mul(dim)?, f32::from_le_bytes)?
        } else if dim == 0 {
            Vec::new()
        } else {
            let stored = r.array(n.checked_mul(quantize::stored_len(dim))?, |b: [u8; 1]| b[0])?;
            quantize::read_vectors(&stored, dim)
        };
        let library_code = match &mm.library_code {
            Some(m) => Some(read_library_code(r, m, dim)?),
            None => None,
        };
        let index = ModeIndex {
            encoder: mm.encoder.clone(),
            input: mm.input,
            segments,
            codes,
            embedding_dim: dim,
            embeddings,
            library_code,
        };
        modes.insert(mm.mode, index);
    }
    (r.remaining == 0).then_some(Index {
        roots,
        files,
        modes,
    })
}

/// The library code `manifest` describes, over the section's `dim` kept values.
fn read_library_code(
    r: &mut Reader<impl Read>,
    manifest: &LibraryCodeManifest,
    dim: usize,
) -> Option<LibraryCode> {
    let mut floats = |n: usize| r.array(n, f32::from_le_bytes);
    let standardiser = Standardiser {
        mean: floats(dim)?,
        scale: floats(dim)?,
    };
    let mut layers = Vec::with_capacity(manifest.layers.len().min(4));
    for &[inputs, outputs] in &manifest.layers {
        layers.push(Dense {
            inputs,
            outputs,
            weights: floats(inputs.checked_mul(outputs)?)?,
            bias: floats(outputs)?,
        });
    }
    let code = LibraryCode {
        standardiser,
        layers,
        sign: manifest.sign,
        source: manifest.source.clone(),
        learned_on: manifest.learned_on,
    };
    (dim > 0 && code.is_valid() && code.bits() == manifest.bits).then_some(code)
}

/// Segments of one file at a regular step, as the segment table stores them: a file's
/// segments form one run unless silence was skipped or its last segment is shorter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SegmentRun {
    file: u32,
    start_frame: u32,
    n_frames: u32,
    step: u32,
    count: u32,
}

fn segment_runs(segments: &[SegmentRef]) -> Vec<SegmentRun> {
    let mut runs: Vec<SegmentRun> = Vec::new();
    for s in segments {
        if let Some(run) = runs.last_mut()
            && run.file == s.file
            && run.n_frames == s.n_frames
        {
            let next = run
                .step
                .checked_mul(run.count)
                .and_then(|d| d.checked_add(run.start_frame));
            if run.count == 1 && s.start_frame > run.start_frame {
                run.step = s.start_frame - run.start_frame;
                run.count = 2;
                continue;
            }
            if run.count > 1 && Some(s.start_frame) == next {
                run.count += 1;
                continue;
            }
        }
        runs.push(SegmentRun {
            file: s.file,
            start_frame: s.start_frame,
            n_frames: s.n_frames,
            step: 0,
            count: 1,
        });
    }
    runs
}

/// The segments of `runs`, if they are exactly `n`, name existing files and fit in `u32`.
fn expand_runs(runs: &[SegmentRun], n: usize, files: usize) -> Option<Vec<SegmentRef>> {
    let total = runs
        .iter()
        .try_fold(0usize, |t, r| t.checked_add(r.count as usize))?;
    if total != n || runs.iter().any(|r| r.file as usize >= files) {
        return None;
    }
    let mut segments = Vec::with_capacity(n);
    for r in runs {
        for k in 0..r.count {
            segments.push(SegmentRef {
                file: r.file,
                start_frame: r.start_frame.checked_add(r.step.checked_mul(k)?)?,
                n_frames: r.n_frames,
            });
        }
    }
    Some(segments)
}

/// `codes` (`words` per code) as stored: each word XORed with the same word of the code before,
/// then deflated. Neighbouring segments overlap, so their codes share most bits and the XORs are
/// mostly zeros, which deflate packs into fewer bytes than the codes themselves.
fn pack_codes(codes: &[u64], words: usize) -> io::Result<Vec<u8>> {
    let mut deflate = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let mut chunk = Vec::with_capacity(CHUNK_BYTES);
    for (i, &word) in codes.iter().enumerate() {
        let before = i.checked_sub(words).map_or(0, |j| codes[j]);
        chunk.extend_from_slice(&(word ^ before).to_le_bytes());
        if chunk.len() + 8 > CHUNK_BYTES {
            deflate.write_all(&chunk)?;
            chunk.clear();
        }
    }
    deflate.write_all(&chunk)?;
    deflate.finish()
}

/// Deflate packs at most this many bytes into one: a count read from the file that would
/// inflate further is damage, and nothing is allocated for it.
const MAX_DEFLATE_RATIO: u64 = 1032;

/// The `n_words` code words [`pack_codes`] packed into the `packed_len` bytes of `packed`,
/// inflated as they are read (the packed bytes are never all in memory); `None` unless the
/// stream holds exactly that many.
fn unpack_codes(
    packed: &mut impl Read,
    packed_len: u64,
    n_words: usize,
    words: usize,
) -> Option<Vec<u64>> {
    let bytes = (n_words as u64).checked_mul(8)?;
    if bytes > packed_len.saturating_mul(MAX_DEFLATE_RATIO) {
        return None;
    }
    let mut inflate = flate2::read::DeflateDecoder::new(packed);
    let mut codes: Vec<u64> = Vec::with_capacity(n_words);
    let mut chunk = vec![0u8; CHUNK_BYTES];
    while codes.len() < n_words {
        let take = (n_words - codes.len()).min(CHUNK_BYTES / 8) * 8;
        inflate.read_exact(&mut chunk[..take]).ok()?;
        for b in chunk[..take].chunks_exact(8) {
            let xored = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
            let before = codes.len().checked_sub(words).map_or(0, |i| codes[i]);
            codes.push(xored ^ before);
        }
    }
    matches!(inflate.read(&mut chunk[..1]), Ok(0)).then_some(codes)
}

/// The packed codes' bytes of a [`Reader`], `left` of them, read through (and checksummed) as a
/// stream.
struct Packed<'r, R: Read> {
    reader: &'r mut Reader<R>,
    left: u64,
}

impl<R: Read> Read for Packed<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = usize::try_from(self.left).map_or(buf.len(), |left| left.min(buf.len()));
        if n == 0 {
            return Ok(0);
        }
        self.reader
            .fill(&mut buf[..n])
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Little-endian writing that keeps the running checksum.
struct Writer<'a> {
    out: &'a mut dyn Write,
    crc: crc32fast::Hasher,
}

impl Writer<'_> {
    fn raw(&mut self, b: &[u8]) -> io::Result<()> {
        self.crc.update(b);
        self.out.write_all(b)
    }
    fn u32(&mut self, v: u32) -> io::Result<()> {
        self.raw(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> io::Result<()> {
        self.raw(&v.to_le_bytes())
    }
    fn f64(&mut self, v: f64) -> io::Result<()> {
        self.raw(&v.to_le_bytes())
    }
    fn bytes(&mut self, b: &[u8]) -> io::Result<()> {
        self.u32(b.len() as u32)?;
        self.raw(b)
    }
    /// Writes fixed-size items a chunk at a time.
    fn array<const N: usize>(&mut self, items: impl Iterator<Item = [u8; N]>) -> io::Result<()> {
        let mut chunk = Vec::with_capacity(CHUNK_BYTES);
        for item in items {
            chunk.extend_from_slice(&item);
            if chunk.len() + N > CHUNK_BYTES {
                self.raw(&chunk)?;
                chunk.clear();
            }
        }
        self.raw(&chunk)
    }
}

/// Bounds-checked little-endian reading of a stream that keeps the running checksum; every
/// method returns `None` past the end or on a read error (kept in `error`).
struct Reader<R: Read> {
    source: io::Take<R>,
    crc: crc32fast::Hasher,
    /// Bytes of the body not read yet: no count read from the file may ask for more.
    remaining: u64,
    error: Option<io::Error>,
}

impl<R: Read> Reader<R> {
    fn fill(&mut self, buf: &mut [u8]) -> Option<()> {
        if buf.len() as u64 > self.remaining {
            return None;
        }
        if let Err(e) = self.source.read_exact(buf) {
            self.error = Some(e);
            return None;
        }
        self.remaining -= buf.len() as u64;
        self.crc.update(buf);
        Some(())
    }
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let mut buf = [0u8; N];
        self.fill(&mut buf).map(|()| buf)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
    fn f64(&mut self) -> Option<f64> {
        self.take().map(f64::from_le_bytes)
    }
    fn bytes(&mut self) -> Option<Vec<u8>> {
        let len = self.u32()? as usize;
        if len as u64 > self.remaining {
            return None;
        }
        let mut buf = vec![0u8; len];
        self.fill(&mut buf).map(|()| buf)
    }
    /// `n` items of `N` bytes each, read a chunk at a time and converted by `item`; the count is
    /// checked against what is left before anything is allocated from it.
    fn array<const N: usize, T>(
        &mut self,
        n: usize,
        item: impl Fn([u8; N]) -> T,
    ) -> Option<Vec<T>> {
        if (n as u64).checked_mul(N as u64)? > self.remaining {
            return None;
        }
        let mut items = Vec::with_capacity(n);
        let mut chunk = vec![0u8; CHUNK_BYTES / N * N];
        let mut left = n;
        while left > 0 {
            let take = left.min(chunk.len() / N);
            let buf = &mut chunk[..take * N];
            self.fill(buf)?;
            items.extend(buf.chunks_exact(N).map(|c| {
                let mut bytes = [0u8; N];
                bytes.copy_from_slice(c);
                item(bytes)
            }));
            left -= take;
        }
        Some(items)
    }
}

#[cfg(unix)]
fn path_bytes(path: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    path.as_os_str().as_bytes().to_vec()
}

#[cfg(unix)]
fn bytes_path(bytes: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
}

#[cfg(not(unix))]
fn path_bytes(path: &Path) -> Vec<u8> {
    path.to_string_lossy().into_owned().into_bytes()
}

#[cfg(not(unix))]
fn bytes_path(bytes: &[u8]) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{EncodedFile, SegmentEncodings};
    use crate::model::{Encoded, EncoderInfo, EncoderInput, Mode};

    fn sample_index() -> Index {
        let mut index = Index::new();
        let encoder = EncoderInfo {
            name: "test".into(),
            weights_hash: "h".into(),
            bits: 64,
            embedding_dim: 2,
        };
        index.modes.insert(
            Mode::Events,
            ModeIndex::new(Mode::Events, encoder, EncoderInput::log_mel(Mode::Events)),
        );
        for (i, name) in ["/a/x.wav", "/b/y.wav"].iter().enumerate() {
            let record = FileRecord {
                path: name.into(),
                size: 10 + i as u64,
                modified: Some(UNIX_EPOCH + Duration::new(1_700_000_000, 5)),
                duration_s: 1.5,
                label: "lbl".into(),
                // The second file was indexed with problems: the reason is kept.
                damage: (i == 1).then(|| "cut off at 0:01.50".to_string()),
            };
            let encoded = Encoded {
                codes: vec![i as u64, 7],
                embeddings: vec![0.5, -0.5, 1.0, 0.0],
                ..Encoded::default()
            };
            index.add(EncodedFile {
                record,
                modes: vec![SegmentEncodings {
                    mode: Mode::Events,
                    segments: vec![(0, 100), (50, 100)],
                    encoded,
                }],
            });
        }
        index.roots = vec!["/a".into()];
        index
    }

    /// Codes of two words, neighbours sharing most bits as overlapping segments' do, pack into
    /// fewer bytes than they take and unpack to themselves; a damaged or short stream does not.
    #[test]
    fn codes_pack_smaller_and_unpack_exactly() {
        let mut rng = crate::model::SeededRng::new(3);
        let mut codes = vec![rng.next_u64(), rng.next_u64()];
        for i in 2..2_000 {
            let flip = (0..8).fold(0u64, |m, _| m | 1 << (rng.next_u64() % 64));
            codes.push(codes[i - 2] ^ flip);
        }
        let packed = pack_codes(&codes, 2).unwrap();
        assert!(
            packed.len() < codes.len() * 8 * 3 / 4,
            "{} bytes",
            packed.len()
        );
        let unpack =
            |bytes: &[u8], n: usize| unpack_codes(&mut &bytes[..], bytes.len() as u64, n, 2);
        assert_eq!(unpack(&packed, codes.len()), Some(codes.clone()));
        assert_eq!(unpack(&packed, codes.len() + 2), None);
        assert_eq!(unpack(&packed, codes.len() - 2), None);
        assert_eq!(unpack(&packed[..packed.len() / 2], codes.len()), None);
    }

    /// An index written before the codes were packed loads with the same codes.
    #[test]
    fn a_format_4_index_loads_its_codes_as_they_are() {
        let mut bytes = Vec::new();
        encode_as(&sample_index(), &mut bytes, FORMAT_4).unwrap();
        let back = from_bytes(&bytes, Path::new("index.earshot"), Path::new("db")).unwrap();
        assert_eq!(
            back.modes[&Mode::Events].codes,
            sample_index().modes[&Mode::Events].codes
        );
    }

    /// Fingerprint sections keep no embeddings: nothing is stored for them, nothing read back.
    #[test]
    fn a_section_without_embeddings_round_trips() {
        let mut index = sample_index();
        if let Some(events) = index.modes.get_mut(&Mode::Events) {
            (events.embedding_dim, events.embeddings) = (0, Vec::new());
        }
        let dir = tempfile::tempdir().unwrap();
        save(&index, dir.path()).unwrap();
        let back = load(dir.path()).unwrap();
        let (a, b) = (&back.modes[&Mode::Events], &index.modes[&Mode::Events]);
        assert_eq!(
            (&a.segments, &a.codes, a.embedding_dim),
            (&b.segments, &b.codes, 0)
        );
    }

    /// A backbone's section: embeddings only from the encoder, codes from the library's own
    /// code, which is saved with them and codes the files added after loading.
    #[test]
    fn a_library_code_round_trips_and_codes_what_is_added_next() {
        const DIM: usize = 64;
        let mut index = Index::new();
        let encoder = EncoderInfo {
            name: "backbone".into(),
            weights_hash: "h".into(),
            bits: 0,
            embedding_dim: DIM,
        };
        let mut events = ModeIndex::new(Mode::Events, encoder, EncoderInput::log_mel(Mode::Events));
        let mut rng = crate::model::SeededRng::new(5);
        let n = crate::index::library_code::MIN_SEGMENTS_TO_LEARN;
        events.segments = (0..n as u32)
            .map(|i| SegmentRef {
                file: 0,
                start_frame: i,
                n_frames: 1,
            })
            .collect();
        events.embeddings = (0..n * DIM).map(|_| rng.normal() as f32).collect();
        assert!(events.refresh_library_code().unwrap());
        assert!(!events.refresh_library_code().unwrap(), "not outgrown yet");
        assert_eq!((events.bits(), events.codes.len()), (64, n));
        index.modes.insert(Mode::Events, events);
        index.files.push(FileRecord {
            path: "/a.wav".into(),
            size: 1,
            modified: None,
            duration_s: 1.0,
            label: String::new(),
            damage: None,
        });
        let dir = tempfile::tempdir().unwrap();
        save(&index, dir.path()).unwrap();
        let mut back = load(dir.path()).unwrap();
        let (a, b) = (&back.modes[&Mode::Events], &index.modes[&Mode::Events]);
        assert_eq!(a.library_code, b.library_code);
        assert_eq!(a.codes, b.codes);
        let embeddings = b.embeddings[..2 * DIM].to_vec();
        back.add(EncodedFile {
            record: FileRecord {
                path: "/b.wav".into(),
                ..index.files[0].clone()
            },
            modes: vec![SegmentEncodings {
                mode: Mode::Events,
                segments: vec![(0, 1), (1, 1)],
                encoded: Encoded {
                    embeddings,
                    ..Encoded::default()
                },
            }],
        });
        let events = &back.modes[&Mode::Events];
        assert_eq!(events.codes[n..], b.codes[..2], "added segments are coded");
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let index = sample_index();
        save(&index, dir.path()).unwrap();
        let back = load(dir.path()).unwrap();
        assert_eq!(back.files, index.files);
        assert_eq!(back.roots, index.roots);
        let (a, b) = (&back.modes[&Mode::Events], &index.modes[&Mode::Events]);
        assert_eq!((&a.segments, &a.codes), (&b.segments, &b.codes));
        // Embeddings come back in 8 bits: within half a step of each vector's largest value.
        assert_eq!(a.embeddings.len(), b.embeddings.len());
        assert!(
            a.embeddings
                .iter()
                .zip(&b.embeddings)
                .all(|(x, y)| (x - y).abs() <= 0.5 / 127.0)
        );
    }

    #[test]
    fn segment_runs_store_regular_segments_compactly_and_expand_exactly() {
        let seg = |file, start_frame, n_frames| SegmentRef {
            file,
            start_frame,
            n_frames,
        };
        let mut segments: Vec<SegmentRef> = (0..50).map(|k| seg(0, 10 * k, 96)).collect();
        segments.push(seg(0, 495, 40)); // the shorter last segment
        segments.extend((0..5).map(|k| seg(1, 10 * k, 96)));
        segments.extend((9..12).map(|k| seg(1, 10 * k, 96))); // after skipped silence
        segments.push(seg(2, 0, 30)); // a file of one short segment
        let runs = segment_runs(&segments);
        assert_eq!(runs.len(), 5);
        assert_eq!(
            expand_runs(&runs, segments.len(), 3),
            Some(segments.clone())
        );
        assert_eq!(expand_runs(&runs, segments.len() + 1, 3), None);
        assert_eq!(expand_runs(&runs, segments.len(), 2), None);
    }

    /// An index written before encoders declared their input: its one log-mel setting becomes
    /// each mode's front end.
    #[test]
    fn a_format_2_index_loads_with_its_log_mel_as_every_mode_s_input() {
        // Without embeddings: format 2 kept them in f32, format 3 in 8 bits.
        let mut index = sample_index();
        if let Some(events) = index.modes.get_mut(&Mode::Events) {
            (events.embedding_dim, events.embeddings) = (0, Vec::new());
        }
        let mut bytes = Vec::new();
        encode_as(&index, &mut bytes, FORMAT_2).unwrap();
        let at = MAGIC.len() + 4;
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let mut manifest: serde_json::Value =
            serde_json::from_slice(&bytes[at + 4..at + 4 + len]).unwrap();
        manifest["format_version"] = 2.into();
        manifest["features"] =
            serde_json::to_value(crate::features::LogMelConfig::default()).unwrap();
        for m in manifest["modes"].as_array_mut().unwrap() {
            let segmentation = m["input"]["segmentation"].take();
            m["segmentation"] = segmentation;
            m.as_object_mut().unwrap().remove("input");
        }
        let json = serde_json::to_vec(&manifest).unwrap();
        let mut old = MAGIC.to_vec();
        old.extend_from_slice(&FORMAT_2.to_le_bytes());
        old.extend_from_slice(&(json.len() as u32).to_le_bytes());
        old.extend_from_slice(&json);
        old.extend_from_slice(&bytes[at + 4 + len..bytes.len() - 4]);
        old.extend_from_slice(&crc32fast::hash(&old).to_le_bytes());
        let dir = tempfile::tempdir().unwrap();
        fs::write(Index::index_path(dir.path()), &old).unwrap();
        let back = load(dir.path()).unwrap();
        let events = &back.modes[&Mode::Events];
        assert_eq!(events.input, EncoderInput::log_mel(Mode::Events));
        assert_eq!(events.codes, sample_index().modes[&Mode::Events].codes);
    }

    #[test]
    fn another_format_version_is_refused_with_the_rebuild_command() {
        let dir = tempfile::tempdir().unwrap();
        save(&sample_index(), dir.path()).unwrap();
        let path = Index::index_path(dir.path());
        let mut bytes = fs::read(&path).unwrap();
        bytes[MAGIC.len()..MAGIC.len() + 4].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        fs::write(&path, &bytes).unwrap();
        let err = load(dir.path()).unwrap_err();
        assert!(
            matches!(err, IndexError::Version { found, .. } if found == FORMAT_VERSION + 1),
            "{err}"
        );
        assert!(err.to_string().contains("--rebuild"), "{err}");
    }

    /// Found by fuzzing: a file time past what `SystemTime` holds panicked while parsing.
    #[test]
    fn an_impossible_file_time_with_a_valid_checksum_is_corrupt_not_a_panic() {
        let mut bytes = Vec::new();
        encode(&sample_index(), &mut bytes).unwrap();
        let secs = 1_700_000_000u64.to_le_bytes();
        let at = bytes.windows(8).position(|w| w == secs).unwrap();
        bytes[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        let body = bytes.len() - 4;
        let crc = crc32fast::hash(&bytes[..body]);
        bytes[body..].copy_from_slice(&crc.to_le_bytes());
        let err = from_bytes(&bytes, Path::new("/db/index.earshot"), Path::new("/db")).unwrap_err();
        assert!(matches!(err, IndexError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn every_truncation_and_bit_flip_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        save(&sample_index(), dir.path()).unwrap();
        let path = Index::index_path(dir.path());
        let good = fs::read(&path).unwrap();
        for cut in 0..good.len() {
            fs::write(&path, &good[..cut]).unwrap();
            let err = load(dir.path()).expect_err("truncated index loaded");
            assert!(
                matches!(
                    err,
                    IndexError::NotAnIndex { .. } | IndexError::Corrupt { .. }
                ),
                "cut {cut}: {err}"
            );
        }
        for i in (0..good.len()).step_by(3) {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            fs::write(&path, &bad).unwrap();
            assert!(load(dir.path()).is_err(), "flipped byte {i} went unnoticed");
        }
    }
}
