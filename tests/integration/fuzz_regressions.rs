//! Every input with which fuzzing once crashed Earshot (`fuzz/regressions/<target>/`), fed to
//! the same code as its fuzz target: each must now give a result or an error, not a panic.

use std::io::Cursor;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| {
            (
                e.path(),
                std::fs::read(e.path()).expect("read regression input"),
            )
        })
        .collect()
}

#[test]
fn index_load_regressions() {
    for (path, bytes) in inputs("index_load") {
        let result = earshot::index::format::from_bytes(&bytes, &path, Path::new("/db"));
        assert!(result.is_err(), "{} loaded", path.display());
    }
}

#[test]
fn decode_regressions() {
    for (path, bytes) in inputs("decode") {
        let Some((_, data)) = bytes.split_first() else {
            continue;
        };
        if let Ok(source) = earshot::audio::AudioSource::from_media_source(
            &path,
            Box::new(Cursor::new(data.to_vec())),
            None,
        ) {
            let _ = source.stream(|_| ControlFlow::Continue(()));
        }
    }
}
