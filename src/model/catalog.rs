//! The model folders Earshot finds (see [`super::config::models_dirs`]), described the same
//! way for the command line and the app: what each is, its license, what it needs.

use std::path::PathBuf;

use super::config::{CONFIG_FILE, models_dirs};
use super::{Mode, birdnet, default_model_name, hash_head, learned_lsh};

/// One model folder found.
#[derive(Debug, Clone)]
pub struct InstalledModel {
    pub name: String,
    pub dir: PathBuf,
    pub kind: String,
    pub license: String,
    pub needs: String,
    /// The modes it can encode for.
    pub modes: Vec<Mode>,
    /// The modes that use it when no model is named.
    pub default_for: Vec<Mode>,
}

/// What Earshot's own models need.
const SHIPPED: &str = "nothing: trained and shipped by Earshot";
const OWN_LICENSE: &str =
    "Earshot's own, trained by `earshot train` (see its MODEL_CARD.md for the data's licenses)";

/// Every model folder found, the first of each name (the one Earshot uses; later ones are
/// shadowed), in the order of the folders searched: `first` (the app's own models folder), then
/// [`models_dirs`].
pub fn installed_models(first: Option<&std::path::Path>) -> Vec<InstalledModel> {
    let mut found: Vec<InstalledModel> = Vec::new();
    for root in first
        .map(std::path::Path::to_path_buf)
        .into_iter()
        .chain(models_dirs())
    {
        let Ok(entries) = std::fs::read_dir(&root) else {
            continue;
        };
        let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        dirs.sort();
        for dir in dirs.into_iter().filter(|d| d.join(CONFIG_FILE).is_file()) {
            let name = dir
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            if !found.iter().any(|f| f.name == name) {
                found.push(describe(name, dir));
            }
        }
    }
    found
}

fn describe(name: String, dir: PathBuf) -> InstalledModel {
    let config = std::fs::read(dir.join(CONFIG_FILE)).unwrap_or_default();
    let default_for = Mode::ALL
        .into_iter()
        .filter(|&m| default_model_name(m) == name)
        .collect();
    let own = |kind: &str, mode: Mode| {
        (
            kind.to_string(),
            OWN_LICENSE.to_string(),
            SHIPPED.to_string(),
            vec![mode],
        )
    };
    let (kind, license, needs, modes) = match super::architecture(&config).as_deref() {
        Some(birdnet::ARCHITECTURE) => (
            "BirdNET v2.4 backbone, similar sounds (1024-d embeddings; each library learns 64-bit codes on them, or from its labels)"
                .to_string(),
            format!(
                "{} (Cornell Lab of Ornithology, Chemnitz University of Technology; see {})",
                birdnet::LICENSE_NAME,
                birdnet::LICENSE_FILE
            ),
            "nothing more: imported from your file, kept in your models folder".to_string(),
            vec![Mode::Events],
        ),
        Some(learned_lsh::ARCHITECTURE) => own(
            "Earshot's learned projection, exact match",
            Mode::Fingerprint,
        ),
        Some(hash_head::ARCHITECTURE) => {
            let head: Option<hash_head::HashHeadConfig> = serde_json::from_slice(&config).ok();
            let (bits, backbone) =
                head.map_or((0, String::from("a backbone")), |h| (h.bits, h.backbone));
            let installed = super::config::find_model(&backbone).is_some();
            (
                format!("{bits}-bit hash head on {backbone}'s embeddings, similar sounds"),
                OWN_LICENSE.to_string(),
                if installed {
                    format!("{backbone} (installed)")
                } else {
                    format!(
                        "{backbone}, not installed: import it with `earshot models import birdnet PATH`"
                    )
                },
                vec![Mode::Events],
            )
        }
        Some(other) => (
            other.to_string(),
            OWN_LICENSE.to_string(),
            SHIPPED.to_string(),
            Vec::new(),
        ),
        None if name.starts_with("fingerprint") => {
            own("Earshot's own CNN, exact match", Mode::Fingerprint)
        }
        None => own("Earshot's own CNN, similar sounds", Mode::Events),
    };
    InstalledModel {
        name,
        dir,
        kind,
        license,
        needs,
        modes,
        default_for,
    }
}
