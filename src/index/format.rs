//! The index file, `index.earshot`, version [`FORMAT_VERSION`]:
//!
//! ```text
//! magic "EARSHOT\0" | u32 format version | u32 length + manifest JSON
//! u32 root count, roots | u32 file count, files
//! per mode in manifest order: u64 segment count, segments (u32 file, u32 start, u32 frames),
//!     codes (u64 x words), u32 embedding dim kept, embeddings (f32 x dim)
//! u32 CRC-32 of everything before it
//! ```
//!
//! Integers are little-endian; paths are raw bytes (any name the OS allows). Writing goes to a
//! temporary file that is flushed to disk and renamed over the old one, and the folder is synced:
//! readers, crashes and kills see either the old index or the new one, never a mix.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use super::{FORMAT_VERSION, Index, IndexError, Manifest, ModeIndex, SegmentRef};
use crate::library::FileRecord;

const MAGIC: &[u8; 8] = b"EARSHOT\0";
/// Stored for a file whose modification time is unknown.
const NO_MTIME: u32 = u32::MAX;

/// Writes `index` to `db/index.earshot` atomically.
pub fn save(index: &Index, db: &Path) -> Result<(), IndexError> {
    let path = Index::index_path(db);
    let io = |source| IndexError::Io {
        path: path.clone(),
        source,
    };
    fs::create_dir_all(db).map_err(io)?;
    let bytes = encode(index);
    let tmp = db.join(format!(
        ".{}.tmp-{}",
        super::INDEX_FILE_NAME,
        std::process::id()
    ));
    let written = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, &path)?;
        // The rename itself must reach the disk before we report success.
        File::open(db)?.sync_all()
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map_err(io)
}

/// Reads `db/index.earshot`.
pub fn load(db: &Path) -> Result<Index, IndexError> {
    let path = Index::index_path(db);
    let bytes = fs::read(&path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => IndexError::Missing { db: db.to_owned() },
        _ => IndexError::Io {
            path: path.clone(),
            source,
        },
    })?;
    decode(&bytes, &path, db)
}

/// Removes temporary files left by runs that were killed mid-save (their process is gone).
pub fn remove_stale_temp_files(db: &Path) {
    let prefix = format!(".{}.tmp-", super::INDEX_FILE_NAME);
    let Ok(entries) = fs::read_dir(db) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        if pid != std::process::id().to_string() && !process_alive(pid) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(target_os = "linux")]
fn process_alive(pid: &str) -> bool {
    Path::new("/proc").join(pid).exists()
}

/// Without /proc we cannot tell, so the file is kept.
#[cfg(not(target_os = "linux"))]
fn process_alive(_pid: &str) -> bool {
    true
}

/// Whether `db` holds an index file.
pub fn exists(db: &Path) -> bool {
    Index::index_path(db).is_file()
}

fn encode(index: &Index) -> Vec<u8> {
    let mut out = Writer(Vec::new());
    out.0.extend_from_slice(MAGIC);
    out.u32(FORMAT_VERSION);
    // A manifest of plain data always serialises.
    let manifest = serde_json::to_vec(&index.manifest()).unwrap_or_default();
    out.bytes(&manifest);
    out.u32(index.roots.len() as u32);
    for root in &index.roots {
        out.bytes(&path_bytes(root));
    }
    out.u32(index.files.len() as u32);
    for f in &index.files {
        out.bytes(&path_bytes(&f.path));
        out.u64(f.size);
        let (secs, nanos) = f
            .modified
            .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
            .map_or((0, NO_MTIME), |d| (d.as_secs(), d.subsec_nanos()));
        out.u64(secs);
        out.u32(nanos);
        out.f64(f.duration_s);
        out.bytes(f.label.as_bytes());
    }
    for m in index.modes.values() {
        out.u64(m.segments.len() as u64);
        for s in &m.segments {
            out.u32(s.file);
            out.u32(s.start_frame);
            out.u32(s.n_frames);
        }
        m.codes.iter().for_each(|&c| out.u64(c));
        out.u32(m.embedding_dim as u32);
        m.embeddings
            .iter()
            .for_each(|&x| out.0.extend_from_slice(&x.to_le_bytes()));
    }
    let crc = crc32fast::hash(&out.0);
    out.u32(crc);
    out.0
}

fn decode(bytes: &[u8], path: &Path, db: &Path) -> Result<Index, IndexError> {
    let corrupt = |detail: &str| IndexError::Corrupt {
        path: path.to_owned(),
        db: db.to_owned(),
        detail: detail.to_string(),
    };
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(IndexError::NotAnIndex {
            path: path.to_owned(),
        });
    }
    let mut r = Reader {
        bytes,
        pos: MAGIC.len(),
    };
    let version = r.u32().ok_or_else(|| corrupt("cut off in its header"))?;
    if version != FORMAT_VERSION {
        return Err(IndexError::Version {
            path: path.to_owned(),
            db: db.to_owned(),
            found: version,
            expected: FORMAT_VERSION,
        });
    }
    if bytes.len() < 4 + r.pos {
        return Err(corrupt("cut off in its header"));
    }
    let (body, stored) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
    if crc32fast::hash(body) != stored {
        return Err(corrupt(
            "checksum mismatch: the file is truncated or was altered",
        ));
    }
    let mut r = Reader {
        bytes: body,
        pos: r.pos,
    };
    read_body(&mut r).ok_or_else(|| corrupt("its contents do not add up"))
}

/// Parses everything after the version; `None` on any inconsistency.
fn read_body(r: &mut Reader<'_>) -> Option<Index> {
    let manifest: Manifest = serde_json::from_slice(r.bytes()?).ok()?;
    let segmentation_ok =
        |s: &crate::model::Segmentation| s.window > 0 && s.hop > 0 && s.query_hop > 0;
    if !manifest.features.is_valid()
        || !manifest
            .modes
            .iter()
            .all(|m| segmentation_ok(&m.segmentation))
    {
        return None;
    }
    let roots = (0..r.u32()?)
        .map(|_| r.bytes().map(bytes_path))
        .collect::<Option<Vec<_>>>()?;
    let n_files = r.u32()? as usize;
    let mut files = Vec::with_capacity(n_files.min(r.remaining() / 32));
    for _ in 0..n_files {
        let path = bytes_path(r.bytes()?);
        let size = r.u64()?;
        let (secs, nanos) = (r.u64()?, r.u32()?);
        let modified = (nanos != NO_MTIME).then(|| UNIX_EPOCH + Duration::new(secs, nanos));
        let duration_s = r.f64()?;
        let label = String::from_utf8(r.bytes()?.to_vec()).ok()?;
        files.push(FileRecord {
            path,
            size,
            modified,
            duration_s,
            label,
        });
    }
    let mut modes = std::collections::BTreeMap::new();
    for mm in &manifest.modes {
        let n = usize::try_from(r.u64()?).ok()?;
        let words = mm.encoder.words();
        // Check the sizes before allocating anything from them.
        if n.checked_mul(12 + 8 * words)? > r.remaining() || n != mm.segments {
            return None;
        }
        let segments = (0..n)
            .map(|_| {
                Some(SegmentRef {
                    file: r.u32()?,
                    start_frame: r.u32()?,
                    n_frames: r.u32()?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        if segments.iter().any(|s| s.file as usize >= files.len()) {
            return None;
        }
        let codes = (0..n * words)
            .map(|_| r.u64())
            .collect::<Option<Vec<_>>>()?;
        let dim = r.u32()? as usize;
        if (dim != 0 && dim != mm.encoder.embedding_dim) || n.checked_mul(4 * dim)? > r.remaining()
        {
            return None;
        }
        let embeddings = (0..n * dim).map(|_| r.f32()).collect::<Option<Vec<_>>>()?;
        let index = ModeIndex {
            encoder: mm.encoder.clone(),
            segmentation: mm.segmentation,
            segments,
            codes,
            embedding_dim: dim,
            embeddings,
        };
        modes.insert(mm.mode, index);
    }
    (r.remaining() == 0).then_some(Index {
        features: manifest.features,
        roots,
        files,
        modes,
    })
}

struct Writer(Vec<u8>);

impl Writer {
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
}

/// Bounds-checked little-endian reading; every method returns `None` past the end.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let chunk = self.bytes.get(self.pos..self.pos.checked_add(N)?)?;
        self.pos += N;
        chunk.try_into().ok()
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
    fn f32(&mut self) -> Option<f32> {
        self.take().map(f32::from_le_bytes)
    }
    fn f64(&mut self) -> Option<f64> {
        self.take().map(f64::from_le_bytes)
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.u32()? as usize;
        let chunk = self.bytes.get(self.pos..self.pos.checked_add(len)?)?;
        self.pos += len;
        Some(chunk)
    }
    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
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
    use crate::model::{Encoded, EncoderInfo, Mode};

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
            ModeIndex::new(Mode::Events, encoder, Mode::Events.segmentation()),
        );
        for (i, name) in ["/a/x.wav", "/b/y.wav"].iter().enumerate() {
            let record = FileRecord {
                path: name.into(),
                size: 10 + i as u64,
                modified: Some(UNIX_EPOCH + Duration::new(1_700_000_000, 5)),
                duration_s: 1.5,
                label: "lbl".into(),
            };
            let encoded = Encoded {
                codes: vec![i as u64, 7],
                embeddings: vec![0.5, -0.5, 1.0, 0.0],
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

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let index = sample_index();
        save(&index, dir.path()).unwrap();
        let back = load(dir.path()).unwrap();
        assert_eq!(back.files, index.files);
        assert_eq!(back.roots, index.roots);
        let (a, b) = (&back.modes[&Mode::Events], &index.modes[&Mode::Events]);
        assert_eq!(
            (&a.segments, &a.codes, &a.embeddings),
            (&b.segments, &b.codes, &b.embeddings)
        );
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
