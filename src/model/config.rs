//! Model folders: `models/<name>/` holds `config.json`, `model.safetensors` and `MODEL_CARD.md`.
//! Reading checks the folder, the config's format version and the weights' names and shapes;
//! writing replaces each file atomically. Every failure names the file and the reason.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use candle_nn::VarBuilder;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const CARD_FILE: &str = "MODEL_CARD.md";
/// Bumped whenever a saved model's meaning changes; older folders are refused.
pub const MODEL_FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{}: no model folder here (train one with `earshot train`)", path.display())]
    MissingFolder { path: PathBuf },
    #[error("{}: cannot read it: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a valid model config: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{}: not a valid model config: {reason}", path.display())]
    Config { path: PathBuf, reason: String },
    #[error("{}: model format {found}, this Earshot reads format {expected}; retrain it with `earshot train`", path.display())]
    Version {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("{}: the weights do not fit the config: {source}", path.display())]
    Weights {
        path: PathBuf,
        source: candle_core::Error,
    },
    #[error("{}: this model reads the embeddings of {backbone}, which is not installed; import it first (BirdNET: `earshot models import birdnet PATH`, or Import... in the app's Models window)", path.display())]
    MissingBackbone { path: PathBuf, backbone: String },
    #[error("{}: cannot write it: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: cannot serialise the weights: {source}", path.display())]
    Serialise {
        path: PathBuf,
        source: candle_core::Error,
    },
}

/// Writes a model folder's `model.safetensors` and `config.json`, creating the folder.
pub fn write_folder<C: Serialize>(
    out: &Path,
    config: &C,
    tensors: &HashMap<String, Tensor>,
) -> Result<(), ModelError> {
    std::fs::create_dir_all(out).map_err(write_error(out))?;
    write_tensors(tensors, &out.join(WEIGHTS_FILE))?;
    write_config(out, config)
}

/// Writes the model folder `out`'s `config.json`, replacing it atomically.
pub fn write_config<C: Serialize>(out: &Path, config: &C) -> Result<(), ModelError> {
    let path = out.join(CONFIG_FILE);
    // A config of plain data always serialises.
    let text = serde_json::to_string_pretty(config).unwrap_or_default();
    crate::fsutil::write_atomic(&path, text.as_bytes()).map_err(write_error(&path))
}

/// Writes `tensors` to `path` as safetensors, replacing it atomically.
pub fn write_tensors(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<(), ModelError> {
    // candle writes its file readable by its owner only; the bytes go through `write_atomic` so
    // the weights get the usual permissions (an installed model must be readable by everyone).
    let tmp = path.with_extension("tmp");
    candle_core::safetensors::save(tensors, &tmp).map_err(|source| ModelError::Serialise {
        path: path.to_owned(),
        source,
    })?;
    let bytes = std::fs::read(&tmp).map_err(write_error(&tmp));
    let _ = std::fs::remove_file(&tmp);
    crate::fsutil::write_atomic(path, &bytes?).map_err(write_error(path))
}

fn write_error(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Write {
        path: path.to_owned(),
        source,
    }
}

/// A model folder's files, read and parsed.
pub struct ModelFiles<C> {
    pub dir: PathBuf,
    pub config: C,
    pub weights: Vec<u8>,
}

/// A model config: it carries its format version and can check its own sizes.
pub trait Versioned {
    fn format_version(&self) -> u32;
    /// Why the sizes in the config cannot be built, if they cannot.
    fn check(&self) -> Result<(), String>;
}

impl<C: DeserializeOwned + Versioned> ModelFiles<C> {
    pub fn read(dir: &Path) -> Result<Self, ModelError> {
        let (config, weights) = read_folder(dir)?;
        Self::from_bytes(dir, &config, weights)
    }

    /// Parses and checks a model's files already in memory (`dir` names them in errors).
    pub fn from_bytes(dir: &Path, config: &[u8], weights: Vec<u8>) -> Result<Self, ModelError> {
        let config_path = dir.join(CONFIG_FILE);
        let config: C = serde_json::from_slice(config).map_err(|source| ModelError::Parse {
            path: config_path.clone(),
            source,
        })?;
        if config.format_version() != MODEL_FORMAT_VERSION {
            return Err(ModelError::Version {
                path: config_path,
                found: config.format_version(),
                expected: MODEL_FORMAT_VERSION,
            });
        }
        config.check().map_err(|reason| ModelError::Config {
            path: config_path,
            reason,
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            weights,
        })
    }

    /// Builds a network from the weights; weights that do not fit the config are an error
    /// naming the weights file.
    pub fn build<N>(
        &self,
        load: impl FnOnce(&C, VarBuilder) -> candle_core::Result<N>,
    ) -> Result<N, ModelError> {
        let weights_error = |source: candle_core::Error| ModelError::Weights {
            path: self.weights_path(),
            source,
        };
        let vb = VarBuilder::from_buffered_safetensors(
            self.weights.clone(),
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )
        .map_err(weights_error)?;
        load(&self.config, vb).map_err(weights_error)
    }

    pub fn weights_path(&self) -> PathBuf {
        self.dir.join(WEIGHTS_FILE)
    }

    /// A short fingerprint of the weights, stored in indexes to detect a model change.
    pub fn weights_hash(&self) -> String {
        format!(
            "crc32-{:08x}-{}",
            crc32fast::hash(&self.weights),
            self.weights.len()
        )
    }
}

/// A model folder's config and weights, unparsed.
pub(crate) fn read_folder(dir: &Path) -> Result<(Vec<u8>, Vec<u8>), ModelError> {
    if !dir.is_dir() {
        return Err(ModelError::MissingFolder {
            path: dir.to_path_buf(),
        });
    }
    Ok((
        read_file(&dir.join(CONFIG_FILE))?,
        read_file(&dir.join(WEIGHTS_FILE))?,
    ))
}

fn read_file(path: &Path) -> Result<Vec<u8>, ModelError> {
    std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Where models are looked for, in order: `$EARSHOT_MODELS`; `models/` beside the executable and
/// its parents (a `cargo run` or unpacked binary); `../share/earshot/models` from the executable
/// (`/usr/bin` and `/usr/share`, `/usr/local`, an AppImage's `usr/`); the user's data folder
/// (`~/.local/share/earshot/models`); `/usr/share/earshot/models`; the source tree's `models/`.
pub fn models_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("EARSHOT_MODELS") {
        dirs.push(PathBuf::from(d));
    }
    if let Ok(exe) = std::env::current_exe() {
        dirs.extend(exe.ancestors().skip(1).take(4).map(|d| d.join("models")));
        if let Some(prefix) = exe.parent().and_then(Path::parent) {
            dirs.push(prefix.join("share/earshot/models"));
        }
    }
    if let Some(data) = crate::fsutil::data_dir() {
        dirs.push(data.join("models"));
    }
    dirs.push(PathBuf::from("/usr/share/earshot/models"));
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("models"));
    dirs
}

/// The first folder named `name` under [`models_dirs`] that has a config.
pub fn find_model(name: &str) -> Option<PathBuf> {
    models_dirs()
        .into_iter()
        .map(|d| d.join(name))
        .find(|d| d.join(CONFIG_FILE).is_file())
}

/// The default models, compiled into the binary so that an installed `earshot` works wherever it
/// is copied; a folder found by [`find_model`] takes precedence.
pub mod built_in {
    pub const EVENTS_NAME: &str = "events-64";
    pub const EVENTS_CONFIG: &[u8] = include_bytes!("../../models/events-64/config.json");
    pub const EVENTS_WEIGHTS: &[u8] = include_bytes!("../../models/events-64/model.safetensors");
    /// How errors and `--version` name it.
    pub const EVENTS_PLACE: &str = "<built into earshot>/events-64";
    /// The default exact-match model, likewise.
    pub const FINGERPRINT_NAME: &str = "fingerprint";
    pub const FINGERPRINT_CONFIG: &[u8] = include_bytes!("../../models/fingerprint/config.json");
    pub const FINGERPRINT_WEIGHTS: &[u8] =
        include_bytes!("../../models/fingerprint/model.safetensors");
    pub const FINGERPRINT_PLACE: &str = "<built into earshot>/fingerprint";
}
