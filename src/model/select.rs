//! Which encoder each mode uses: the model folder given, else the mode's default model where
//! one is installed, else the one built into the binary; and the LSH baselines.

use super::{Encoder, Mode, birdnet, config, events, fingerprint, hash_head, learned_lsh, lsh};

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

/// The encoder `index` and `query` use for a mode: the model `model` names when given (a
/// folder, or the name of an installed model such as `birdnet-v2.4`), else the mode's default
/// model where one is installed (see [`config::find_model`]), else the one built into the
/// binary. A model folder that exists but cannot be loaded is an error, never a fallback.
pub fn encoder_for(
    mode: Mode,
    model: Option<&std::path::Path>,
) -> Result<Box<dyn Encoder>, config::ModelError> {
    let source = model.map_or_else(
        || default_source(mode),
        |m| DefaultSource::Folder(model_folder(m)),
    );
    match source {
        DefaultSource::Folder(dir) => {
            let (config, weights) = config::read_folder(&dir)?;
            encoder_from_bytes(mode, &dir, &config, weights)
        }
        DefaultSource::BuiltIn => built_in(mode),
    }
}

/// The folder `model` names: itself when it is one, else the installed model of that name
/// (a bare name such as `birdnet-v2.4`), else itself (and reading it says it is missing).
pub fn model_folder(model: &std::path::Path) -> std::path::PathBuf {
    let bare_name = model.components().count() == 1;
    match model.to_str().filter(|_| bare_name && !model.is_dir()) {
        Some(name) => config::find_model(name).unwrap_or_else(|| model.to_path_buf()),
        None => model.to_path_buf(),
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

/// What a model's `config.json` says in `architecture` (`None` for Earshot's CNNs, which say
/// nothing).
pub fn architecture(config: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(config).ok()?;
    Some(v.get("architecture")?.as_str()?.to_string())
}

/// A mode's encoder from a model's files (`dir` names them in errors), by the architecture its
/// config names: the learned projection and BirdNET say so; otherwise Earshot's CNN of the mode.
fn encoder_from_bytes(
    mode: Mode,
    dir: &std::path::Path,
    config: &[u8],
    weights: Vec<u8>,
) -> Result<Box<dyn Encoder>, config::ModelError> {
    let architecture = architecture(config);
    Ok(match (mode, architecture.as_deref()) {
        (Mode::Events, Some(birdnet::ARCHITECTURE)) => {
            Box::new(birdnet::BirdNetEncoder::from_files(
                config::ModelFiles::from_bytes(dir, config, weights)?,
            )?)
        }
        (Mode::Events, Some(hash_head::ARCHITECTURE)) => {
            Box::new(head_encoder(dir, config, weights)?)
        }
        (Mode::Fingerprint, Some(learned_lsh::ARCHITECTURE)) => {
            Box::new(learned_lsh::LearnedLshEncoder::from_files(
                config::ModelFiles::from_bytes(dir, config, weights)?,
            )?)
        }
        (_, Some(other)) => {
            return Err(config::ModelError::Config {
                path: dir.join(config::CONFIG_FILE),
                reason: format!("a {other} model cannot encode for {} search", mode.name()),
            });
        }
        (Mode::Events, None) => Box::new(events::EventsEncoder::from_files(
            config::ModelFiles::from_bytes(dir, config, weights)?,
        )?),
        (Mode::Fingerprint, None) => Box::new(fingerprint::FingerprintEncoder::from_files(
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

/// A hash head with the installed backbone its config names (a head is never a backbone).
fn head_encoder(
    dir: &std::path::Path,
    config: &[u8],
    weights: Vec<u8>,
) -> Result<hash_head::HeadEncoder, config::ModelError> {
    let files = config::ModelFiles::<hash_head::HashHeadConfig>::from_bytes(dir, config, weights)?;
    let backbone = &files.config.backbone;
    let missing = || config::ModelError::MissingBackbone {
        path: dir.to_path_buf(),
        backbone: backbone.clone(),
    };
    let backbone_dir = config::find_model(backbone).ok_or_else(missing)?;
    let (backbone_config, backbone_weights) = config::read_folder(&backbone_dir)?;
    if architecture(&backbone_config).as_deref() == Some(hash_head::ARCHITECTURE) {
        return Err(config::ModelError::Config {
            path: dir.join(config::CONFIG_FILE),
            reason: format!("its backbone {backbone} is a hash head, not a backbone"),
        });
    }
    let backbone = encoder_from_bytes(
        Mode::Events,
        &backbone_dir,
        &backbone_config,
        backbone_weights,
    )?;
    hash_head::HeadEncoder::from_files(files, backbone)
}
