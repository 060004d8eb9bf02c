//! Writing files so that a crash or a kill at any moment leaves either the old file or the new
//! one, never a mix or an empty file; and the one place Earshot's folders are named.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` through a temporary file in the same folder that is flushed to disk
/// and renamed over `path`; the folder is synced so the rename itself survives a power cut.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, |out| out.write_all(bytes))
}

/// [`write_atomic`] for contents produced by `write` (buffered, so small writes are cheap).
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let tmp = temp_path(path);
    let written = (|| {
        let mut out = BufWriter::new(File::create(&tmp)?);
        write(&mut out)?;
        let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// `.NAME.tmp-PID` beside `path`: hidden, and owned by this process (see [`remove_stale_temp_files`]).
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Removes `.NAME.tmp-PID` files beside `path` left by processes that were killed mid-write.
pub fn remove_stale_temp_files(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let prefix = format!(".{}.tmp-", name.to_string_lossy());
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
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

/// The one name of Earshot's folders for every front end (app and command line):
/// `ProjectDirs("org", "Earshot", "earshot")`, i.e. `~/.local/share/earshot` on Linux,
/// `~/Library/Application Support/org.Earshot.earshot` on macOS, `%APPDATA%\\Earshot\\earshot`
/// on Windows.
fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("org", "Earshot", "earshot")
}

/// Where indexes, libraries, imported models and exports are kept; `None` without a home.
pub fn data_dir() -> Option<PathBuf> {
    project_dirs().map(|d| d.data_dir().to_owned())
}

/// Where features computed for evaluation are cached; `None` without a home.
pub fn cache_dir() -> Option<PathBuf> {
    project_dirs().map(|d| d.cache_dir().to_owned())
}

/// The sha256 of `bytes`, in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn stale_temporaries_of_dead_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        // PID 0 is never a user process: its temporary is stale.
        let stale = dir.path().join(".state.json.tmp-0");
        fs::write(&stale, b"half").unwrap();
        let ours = temp_path(&path);
        fs::write(&ours, b"in progress").unwrap();
        remove_stale_temp_files(&path);
        assert!(!stale.exists());
        assert!(ours.exists(), "this process's own temporary is kept");
    }
}
