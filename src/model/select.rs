//! Which encoder each mode uses: the model folder given, else the mode's default model where
//! one is installed, else the one built into the binary; and the LSH baselines.

use super::{Encoder, Mode, config, events, fingerprint, learned_lsh, lsh};

/// The data-independent LSH encoder of a mode (the baseline every trained model must beat).
pub fn baseline_encoder(mode: Mode) -> Box<dyn Encoder> {
    let bits = match mode {
        Mode::Events => lsh::EVENTS_BITS,
        Mode::Fingerprint => lsh::FINGERPRINT_BITS,
    };
    Box::new(lsh::LshEncoder::new(mode, bits, lsh::DEFAULT_SEED))
}

/// The model folder a mode uses by default.
pub fn default_model_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Events => config::built_in::EVENTS_NAME,
        Mode::Fingerprint => config::built_in::FINGERPRINT_NAME,
    }
}

/// Where a mode's encoder comes from when no `--model` is given.
enum DefaultSource {
    /// An installed model folder (see [`config::find_model`]).
    Folder(std::path::PathBuf),
    /// The mode's default model, compiled into the binary.
    BuiltIn,
}

fn default_source(mode: Mode) -> DefaultSource {
    match config::find_model(default_model_name(mode)) {
        Some(dir) => DefaultSource::Folder(dir),
        None => DefaultSource::BuiltIn,
    }
}

/// The encoder `index` and `query` use for a mode: the model in `model_dir` when given, else the
/// mode's default model where one is installed (see [`config::find_model`]), else the one built
/// into the binary. A model folder that exists but cannot be loaded is an error, never a
/// fallback.
pub fn encoder_for(
    mode: Mode,
    model_dir: Option<&std::path::Path>,
) -> Result<Box<dyn Encoder>, config::ModelError> {
    let source = model_dir.map_or_else(
        || default_source(mode),
        |dir| DefaultSource::Folder(dir.to_path_buf()),
    );
    match source {
        DefaultSource::Folder(dir) => {
            let (config, weights) = config::read_folder(&dir)?;
            encoder_from_bytes(mode, &dir, &config, weights)
        }
        DefaultSource::BuiltIn => built_in(mode),
    }
}

fn built_in(mode: Mode) -> Result<Box<dyn Encoder>, config::ModelError> {
    use config::built_in::*;
    let (place, config, weights) = match mode {
        Mode::Events => (EVENTS_PLACE, EVENTS_CONFIG, EVENTS_WEIGHTS),
        Mode::Fingerprint => (FINGERPRINT_PLACE, FINGERPRINT_CONFIG, FINGERPRINT_WEIGHTS),
    };
    encoder_from_bytes(mode, std::path::Path::new(place), config, weights.to_vec())
}

/// A mode's encoder from a model's files (`dir` names them in errors). A fingerprint model is
/// the convolutional network unless its config says `"architecture": "learned-lsh"`.
fn encoder_from_bytes(
    mode: Mode,
    dir: &std::path::Path,
    config: &[u8],
    weights: Vec<u8>,
) -> Result<Box<dyn Encoder>, config::ModelError> {
    let learned_lsh = serde_json::from_slice::<serde_json::Value>(config)
        .ok()
        .and_then(|v| {
            v.get("architecture")?
                .as_str()
                .map(|a| a == learned_lsh::ARCHITECTURE)
        })
        .unwrap_or(false);
    Ok(match mode {
        Mode::Events => Box::new(events::EventsEncoder::from_files(
            config::ModelFiles::from_bytes(dir, config, weights)?,
        )?),
        Mode::Fingerprint if learned_lsh => Box::new(learned_lsh::LearnedLshEncoder::from_files(
            config::ModelFiles::from_bytes(dir, config, weights)?,
        )?),
        Mode::Fingerprint => Box::new(fingerprint::FingerprintEncoder::from_files(
            config::ModelFiles::from_bytes(dir, config, weights)?,
        )?),
    })
}

/// Which encoder each mode uses by default and where it comes from, for `--version`, the About
/// window and messages: `(mode, encoder name, where)`.
pub fn default_encoders() -> Vec<(Mode, String, String)> {
    Mode::ALL
        .iter()
        .map(|&mode| {
            let (name, place) = match default_source(mode) {
                DefaultSource::Folder(dir) => (
                    dir.file_name()
                        .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
                    dir.display().to_string(),
                ),
                DefaultSource::BuiltIn => (
                    default_model_name(mode).to_string(),
                    "built into earshot".to_string(),
                ),
            };
            (mode, name, place)
        })
        .collect()
}
