//! A library is the set of audio files under some folders. Scanning walks the folders, probes each
//! audio file for its duration and readability, and labels it (parent folder name, or a CSV).
//! [`diff`] compares two scans for incremental re-indexing.
//!
//! Nothing here panics on a bad tree: unreadable folders, symlink loops, vanished files and names
//! that are not UTF-8 become messages in the [`ScanReport`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::audio::{AudioError, AudioSource};

pub mod marks;

/// File name extensions taken to be audio. Opus is listed although symphonia cannot decode it, so
/// such files are reported as unreadable rather than silently ignored.
pub const AUDIO_EXTENSIONS: &[&str] = &[
    "wav", "wave", "flac", "mp3", "mp2", "mp1", "ogg", "oga", "opus", "m4a", "m4b", "mp4", "aac",
    "aif", "aiff", "aifc", "caf", "mka", "mkv", "webm",
];

pub fn is_audio_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| AUDIO_EXTENSIONS.iter().any(|a| a.eq_ignore_ascii_case(e)))
}

/// One audio file of the library.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Absolute path (not resolved through symlinks).
    pub path: PathBuf,
    pub size: u64,
    pub modified: Option<SystemTime>,
    /// From the header, or by walking the packets when the header has none.
    pub duration_s: f64,
    pub label: String,
    /// What was wrong with the file, though it could be read (see
    /// [`DecodeStats::damage`](crate::audio::DecodeStats::damage)): set when it is encoded, kept
    /// in the index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub damage: Option<String>,
}

/// A path the scan could not use, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanProblem {
    pub path: PathBuf,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct ScanReport {
    /// Readable audio files, sorted by path.
    pub files: Vec<FileRecord>,
    /// Audio files that cannot be decoded, folders that cannot be read, loops, missing roots.
    pub problems: Vec<ScanProblem>,
    /// Usable files with something to know (e.g. a name that is not valid UTF-8).
    pub warnings: Vec<ScanProblem>,
    /// Non-audio files passed over.
    pub other_files: usize,
}

impl ScanReport {
    pub fn total_duration_s(&self) -> f64 {
        self.files.iter().map(|f| f.duration_s).sum()
    }
}

/// Labels from a CSV of `path,label` rows; relative paths are relative to the CSV's folder.
#[derive(Debug, Clone, Default)]
pub struct LabelMap {
    labels: HashMap<PathBuf, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("{}: cannot read labels: {source}", path.display())]
    Read { path: PathBuf, source: csv::Error },
    #[error("{}: line {line}: expected `path,label`", path.display())]
    Row { path: PathBuf, line: u64 },
}

/// Labels given by path, as the library knows its files (canonical paths).
impl FromIterator<(PathBuf, String)> for LabelMap {
    fn from_iter<I: IntoIterator<Item = (PathBuf, String)>>(pairs: I) -> Self {
        Self {
            labels: pairs.into_iter().collect(),
        }
    }
}

impl LabelMap {
    pub fn from_csv(csv_path: &Path) -> Result<Self, LabelError> {
        let read_err = |source| LabelError::Read {
            path: csv_path.to_owned(),
            source,
        };
        let base = absolute(csv_path.parent().unwrap_or(Path::new(".")));
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_path(csv_path)
            .map_err(read_err)?;
        let mut labels = HashMap::new();
        for row in reader.records() {
            let row = row.map_err(read_err)?;
            let line = row.position().map_or(0, |p| p.line());
            let (Some(path), Some(label)) = (row.get(0), row.get(1)) else {
                return Err(LabelError::Row {
                    path: csv_path.to_owned(),
                    line,
                });
            };
            if line == 1 && path.trim() == "path" && label.trim() == "label" {
                continue; // header row
            }
            labels.insert(base.join(path.trim()), label.trim().to_string());
        }
        Ok(Self { labels })
    }

    pub fn get(&self, path: &Path) -> Option<&str> {
        self.labels.get(path).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Progress of the probing phase: `done` of `total` audio files.
#[derive(Debug, Clone, Copy)]
pub struct ScanProgress {
    pub done: usize,
    pub total: usize,
}

/// Walks `roots` (folders or files) and probes every audio file found, in parallel.
pub fn scan(
    roots: &[PathBuf],
    labels: Option<&LabelMap>,
    progress: &(dyn Fn(ScanProgress) + Sync),
) -> ScanReport {
    let mut report = ScanReport::default();
    let mut candidates = Vec::new();
    for root in roots {
        walk(&canonical_root(root), &mut candidates, &mut report);
    }
    candidates.sort();
    candidates.dedup();

    let done = AtomicUsize::new(0);
    let total = candidates.len();
    let probed: Vec<(PathBuf, Result<Probed, String>)> = candidates
        .into_par_iter()
        .map(|path| {
            let record = probe_file(&path, labels);
            progress(ScanProgress {
                done: done.fetch_add(1, Ordering::Relaxed) + 1,
                total,
            });
            (path, record)
        })
        .collect();
    for (path, result) in probed {
        match result {
            Ok(Probed { record, warning }) => {
                if let Some(reason) = warning {
                    report.warnings.push(ScanProblem {
                        path: path.clone(),
                        reason,
                    });
                }
                if path.to_str().is_none() {
                    let reason =
                        "file name is not valid UTF-8; it is shown with replacement characters"
                            .into();
                    report.warnings.push(ScanProblem { path, reason });
                }
                report.files.push(record);
            }
            Err(reason) => report.problems.push(ScanProblem { path, reason }),
        }
    }
    report
}

/// Collects audio paths under `root`, recording unreadable folders and loops as problems.
fn walk(root: &Path, candidates: &mut Vec<PathBuf>, report: &mut ScanReport) {
    let walker = walkdir::WalkDir::new(root)
        .follow_links(true)
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    for entry in walker {
        match entry {
            // Pipes and devices named like audio are probed too: opening refuses them with the
            // reason, like any other file that is not audio.
            Ok(entry) if !entry.file_type().is_dir() => {
                if is_audio_path(entry.path()) {
                    candidates.push(entry.into_path());
                } else {
                    report.other_files += 1;
                }
            }
            Ok(_) => {}
            Err(err) => report.problems.push(walk_problem(root, &err)),
        }
    }
}

fn walk_problem(root: &Path, err: &walkdir::Error) -> ScanProblem {
    let path = err.path().unwrap_or(root).to_owned();
    let reason = if let Some(ancestor) = err.loop_ancestor() {
        format!(
            "symbolic link loop back to {}; not followed",
            ancestor.display()
        )
    } else if let Some(io) = err.io_error() {
        match io.kind() {
            std::io::ErrorKind::NotFound => "does not exist".to_string(),
            std::io::ErrorKind::PermissionDenied => "cannot read: permission denied".to_string(),
            _ => format!("cannot read: {io}"),
        }
    } else {
        err.to_string()
    };
    ScanProblem { path, reason }
}

/// Reads a file's metadata and audio header; the error is the reason, for the report.
/// A file as probed: its record, and what is plainly wrong with it though it can be read.
struct Probed {
    record: FileRecord,
    warning: Option<String>,
}

/// Reads a file's metadata and audio header; the error is the reason, for the report. A warning
/// comes with the record when the file is plainly damaged (see [`pcm_shortfall`]).
fn probe_file(path: &Path, labels: Option<&LabelMap>) -> Result<Probed, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    let source = AudioSource::open(path).map_err(|e| e.reason())?;
    let shortfall = pcm_shortfall(source.info(), meta.len());
    let mut duration_s = source.duration_s().map_err(|e: AudioError| e.reason())?;
    let warning = shortfall
        .map(|short| {
            duration_s = duration_s.min(short.held_s);
            format!(
                "cut off: its header promises {} of audio, the file holds at most {} (it is indexed up to where it ends)",
                crate::text::clock(short.promised_s),
                crate::text::clock(short.held_s)
            )
        })
        .or_else(|| ogg_cut_off(path, meta.len()));
    let label = labels
        .and_then(|l| l.get(path))
        .map(str::to_string)
        .unwrap_or_else(|| parent_folder_name(path));
    let record = FileRecord {
        path: path.to_owned(),
        size: meta.len(),
        modified: meta.modified().ok(),
        duration_s,
        label,
        damage: None,
    };
    Ok(Probed { record, warning })
}

/// How much shorter than its header a PCM file is: seen from the header and the file's size
/// alone, so that `scan` can say it without decoding. Compressed audio's size says nothing of
/// its length; its damage shows when it is decoded (`index`, `inspect`).
struct Shortfall {
    promised_s: f64,
    /// An upper bound: the whole file as samples (the header takes a few bytes of it).
    held_s: f64,
}

fn pcm_shortfall(info: &crate::audio::SourceInfo, file_bytes: u64) -> Option<Shortfall> {
    if !info.codec.starts_with("pcm_") {
        return None;
    }
    let promised_s = info.header_duration_s?;
    let bytes_per_s =
        f64::from(info.sample_rate?) * info.channels? as f64 * f64::from(info.bits_per_sample?)
            / 8.0;
    let held_s = file_bytes as f64 / bytes_per_s;
    (held_s < promised_s).then_some(Shortfall { promised_s, held_s })
}

/// Bytes read from an Ogg file's end to find its last page: first a few (pages are usually a
/// few kilobytes), then, where no page starts in them, the most a page can take (255 segments
/// of 255 bytes after a header of at most 282; RFC 3533, section 6).
const OGG_TAIL_BYTES: [u64; 2] = [8_192, 65_025 + 282];

/// Why an Ogg file (whatever its codec) is plainly cut off, from its last page alone: a
/// whole stream ends with a complete page marked end-of-stream (RFC 3533, section 6); a file cut
/// short ends inside a page, or after a page without that mark. `None` for other files, and for
/// an Ogg file whose end is whole.
fn ogg_cut_off(path: &Path, file_bytes: u64) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    const CAPTURE: &[u8; 4] = b"OggS";
    const END_OF_STREAM: u8 = 0x04;
    let mut file = std::fs::File::open(path).ok()?;
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic).ok()?;
    if &magic != CAPTURE {
        return None;
    }
    let (from, tail, start) = OGG_TAIL_BYTES.iter().find_map(|&window| {
        let from = file_bytes.saturating_sub(window);
        file.seek(SeekFrom::Start(from)).ok()?;
        let mut tail = Vec::new();
        file.read_to_end(&mut tail).ok()?;
        // The last capture pattern that starts a page header (version 0).
        let start = (0..tail.len().saturating_sub(27))
            .rev()
            .find(|&i| &tail[i..i + 4] == CAPTURE && tail[i + 4] == 0)?;
        Some((from, tail, start))
    })?;
    let page = &tail[start..];
    let segments = usize::from(page[26]);
    let lacing = page.get(27..27 + segments);
    let page_bytes =
        lacing.map(|l| 27 + segments + l.iter().map(|&b| usize::from(b)).sum::<usize>());
    let whole = page_bytes.is_some_and(|n| n <= page.len());
    let ends = page[5] & END_OF_STREAM != 0;
    let at = from + start as u64;
    match (whole, ends) {
        (true, true) => None,
        (false, _) => Some(format!(
            "cut off: the file ends inside an Ogg page (the last begins at byte {at}); it is indexed up to where it ends"
        )),
        (true, false) => Some(format!(
            "cut off: the last Ogg page (at byte {at}) does not end the stream; it is indexed up to where it ends"
        )),
    }
}

/// A root folder as the library keeps it: canonical, so messages read well (no `..`), or absolute
/// when it does not exist (yet). Below a root, symlinks stay as found.
pub fn canonical_root(root: &Path) -> PathBuf {
    std::fs::canonicalize(root).unwrap_or_else(|_| absolute(root))
}

/// The default label: the name of the folder that holds the file.
pub fn parent_folder_name(path: &Path) -> String {
    path.parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// What changed between two scans of the same library.
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    pub added: Vec<FileRecord>,
    /// Content may differ (size or modification time changed): re-encode.
    pub changed: Vec<FileRecord>,
    /// Same content, new label: update the label only.
    pub relabelled: Vec<FileRecord>,
    pub removed: Vec<PathBuf>,
    pub unchanged: usize,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.changed.is_empty()
            && self.relabelled.is_empty()
            && self.removed.is_empty()
    }
}

pub fn diff(previous: &[FileRecord], current: &[FileRecord]) -> Changes {
    let before: HashMap<&Path, &FileRecord> =
        previous.iter().map(|r| (r.path.as_path(), r)).collect();
    let mut changes = Changes::default();
    for record in current {
        match before.get(record.path.as_path()) {
            None => changes.added.push(record.clone()),
            Some(old) if old.size != record.size || old.modified != record.modified => {
                changes.changed.push(record.clone())
            }
            Some(old) if old.label != record.label => changes.relabelled.push(record.clone()),
            Some(_) => changes.unchanged += 1,
        }
    }
    let now: std::collections::HashSet<&Path> = current.iter().map(|r| r.path.as_path()).collect();
    changes.removed = previous
        .iter()
        .filter(|r| !now.contains(r.path.as_path()))
        .map(|r| r.path.clone())
        .collect();
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(path: &str, size: u64, label: &str) -> FileRecord {
        FileRecord {
            path: path.into(),
            size,
            modified: None,
            duration_s: 1.0,
            label: label.into(),
            damage: None,
        }
    }

    #[test]
    fn diff_classifies_every_file() {
        let old = vec![
            record("/a.wav", 1, "x"),
            record("/b.wav", 1, "x"),
            record("/c.wav", 1, "x"),
            record("/d.wav", 1, "x"),
        ];
        let new = vec![
            record("/a.wav", 1, "x"),
            record("/b.wav", 2, "x"),
            record("/c.wav", 1, "y"),
            record("/e.wav", 1, "x"),
        ];
        let changes = diff(&old, &new);
        assert_eq!(changes.unchanged, 1);
        assert_eq!(changes.changed, vec![record("/b.wav", 2, "x")]);
        assert_eq!(changes.relabelled, vec![record("/c.wav", 1, "y")]);
        assert_eq!(changes.added, vec![record("/e.wav", 1, "x")]);
        assert_eq!(changes.removed, vec![PathBuf::from("/d.wav")]);
    }

    #[test]
    fn extensions_are_case_insensitive() {
        assert!(is_audio_path(Path::new("x/Y.WAV")));
        assert!(!is_audio_path(Path::new("x/notes.txt")));
        assert!(!is_audio_path(Path::new("x/wav")));
    }

    #[test]
    fn scan_says_a_wav_file_is_cut_off_and_how_much_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        let samples = vec![0.1f32; 2 * crate::demo::DEMO_SAMPLE_RATE as usize];
        let (whole, cut) = (dir.path().join("whole.wav"), dir.path().join("cut.wav"));
        crate::demo::write_wav(&whole, &samples).unwrap();
        crate::demo::write_wav(&cut, &samples).unwrap();
        let bytes = std::fs::read(&cut).unwrap();
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();

        let report = scan(&[dir.path().to_owned()], None, &|_| {});
        assert_eq!(report.files.len(), 2);
        assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
        let warning = &report.warnings[0];
        assert!(warning.path.ends_with("cut.wav"));
        assert!(
            warning.reason.starts_with(
                "cut off: its header promises 0:02.00 of audio, the file holds at most 0:01.0"
            ),
            "{}",
            warning.reason
        );
        let held = report
            .files
            .iter()
            .find(|f| f.path.ends_with("cut.wav"))
            .unwrap();
        assert!(held.duration_s < 1.05, "{}", held.duration_s);
    }
}
