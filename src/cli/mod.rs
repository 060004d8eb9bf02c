//! The command line. `earshot` alone opens the desktop app; subcommands run the engine through
//! its front door ([`crate::session`]). This file only parses and dispatches: each command is in
//! a file of its own.

mod args;
mod card;
mod embed;
mod eval_esc50;
mod eval_fingerprint;
mod heads_bench;
mod inspect;
mod learn;
mod library;
mod models;
mod query;
mod text;
mod train_events;
mod train_fingerprint;
mod train_heads;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::model::Mode;
use crate::search::Engine;
use crate::session::SearchOptions;
pub use args::{EngineArg, ExportArg, IndexModes, ModeArg};

#[derive(Debug, Parser)]
#[command(
    name = "earshot",
    version,
    about = "Explore audio collections by example.\n\nWith no command, opens the desktop app.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Open the app with these: the first audio file becomes the query, folders are added to the
    /// library
    #[arg(value_name = "FILE")]
    pub open: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the audio files under folders, with label and duration, and the files that cannot be read
    Scan {
        /// Folders or files
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// CSV of `path,label` rows (paths relative to the CSV); default label: the parent folder's name
        #[arg(long)]
        labels: Option<PathBuf>,
        /// One JSON object per line instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Create or update an index of the audio under folders (unchanged files are skipped)
    Index {
        /// Index folder, or milvus://HOST:PORT[/PREFIX] for an index on a Milvus server (default:
        /// Earshot's folder in the platform data directory)
        #[arg(long)]
        db: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = IndexModes::Both)]
        mode: IndexModes,
        /// CSV of `path,label` rows; default label: the parent folder's name
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Start again from an empty index (after an encoder or format change)
        #[arg(long)]
        rebuild: bool,
        /// Longest time between checkpoints saved while indexing
        #[arg(long, default_value_t = 30.0, hide = true)]
        checkpoint_secs: f64,
        /// Model folder for the indexed mode (default: the installed events-64 and fingerprint
        /// models, else the ones built into earshot)
        #[arg(long)]
        model: Option<PathBuf>,
        /// Folders or files to add; the folders indexed before are re-scanned too
        paths: Vec<PathBuf>,
    },
    /// Search an index with audio clips; one result list (or JSON line) per clip
    Query {
        /// Index folder, or milvus://HOST:PORT[/PREFIX] (default: Earshot's own folder)
        #[arg(long)]
        db: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = ModeArg::Events)]
        mode: ModeArg,
        /// Results per clip
        #[arg(long, default_value_t = 10)]
        top: usize,
        /// events: results per file at most, each a different moment of it (every similar
        /// moment of a long recording, not only its best)
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        per_file: u32,
        /// fingerprint: every place the clip is found, in every file, however many (instead of
        /// each file's best, --top of them); when it is found nowhere, the closest candidates
        #[arg(long)]
        all: bool,
        /// One JSON object per clip, per line
        #[arg(long)]
        json: bool,
        /// How segments are found (default: scan for events, buckets for fingerprint)
        #[arg(long, value_enum)]
        engine: Option<EngineArg>,
        /// Model folder of the mode; must be the one the index was built with
        #[arg(long)]
        model: Option<PathBuf>,
        /// Also write every clip's results to OUT as one table: a CSV, a Raven selection
        /// table, or Audacity label tracks (OUT a folder: a label file per audio file)
        #[arg(long, value_enum, requires = "out")]
        export: Option<ExportArg>,
        /// Where --export writes
        #[arg(long, requires = "export")]
        out: Option<PathBuf>,
        #[arg(required = true)]
        clips: Vec<PathBuf>,
    },
    /// Learn similar-sounds codes from the library's labels (folders, a CSV, or the marks set on
    /// results in the app): trains a hash
    /// head on the embeddings the index keeps, reports its gain on a held-out fifth of the
    /// files, and codes the index with it (an index built by a backbone, e.g. birdnet-v2.4)
    Learn {
        #[arg(long)]
        db: Option<PathBuf>,
        /// CSV of `path,label` rows (paths relative to the CSV); default: each file's label in
        /// the index (its parent folder's name unless indexed with --labels)
        #[arg(long, conflicts_with = "marks")]
        labels: Option<PathBuf>,
        /// Learn from the relevant / not-relevant marks set on results in the app (kept in the
        /// library folder's marks.json): each query's relevant moments are its label, moments
        /// only ever marked not relevant a label of their own
        #[arg(long)]
        marks: bool,
        /// One JSON object instead of text
        #[arg(long)]
        json: bool,
    },
    /// Show what an index holds: files, segments, hours of audio, size on disk
    Info {
        /// Index folder, or milvus://HOST:PORT[/PREFIX] (default: Earshot's own folder)
        #[arg(long)]
        db: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// The models Earshot finds, and the import of outside model files (BirdNET v2.4)
    #[command(subcommand)]
    Models(models::ModelsCommand),
    /// Every window's embedding of audio files, with its start and end times
    Embed {
        /// Model folder or installed model name (default: the similar-sounds model)
        #[arg(long)]
        model: Option<PathBuf>,
        /// One JSON object per file instead of a line per window
        #[arg(long, conflicts_with = "npy")]
        json: bool,
        /// Write a float32 .npy array of all windows here, and the times beside it as .csv
        #[arg(long)]
        npy: Option<PathBuf>,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Train an encoder and write its model folder with a model card
    #[command(subcommand)]
    Train(TrainCommand),
    /// Run a benchmark protocol of ../shared/data/README.md and print its metrics
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Decode files and print format, duration, rates and feature shapes (a debugging aid)
    Inspect {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// One JSON object per line
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TrainCommand {
    /// The similar-sounds encoder, supervised on ESC-50 folds 1-4
    Events(train_events::TrainEvents),
    /// The exact-match encoder: NT-Xent on clean and distorted windows of ESC-50 and the
    /// even-position music tracks
    Fingerprint(train_fingerprint::TrainFingerprint),
}

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// ESC-50 retrieval: database folds 1-4, queries fold 5, relevant = same class
    Esc50(eval_esc50::EvalEsc50),
    /// Exact match: music tracks indexed, distorted 1-5 s queries from the odd-position tracks
    Fingerprint(eval_fingerprint::EvalFingerprint),
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Scan {
            paths,
            labels,
            json,
        } => library::scan(&paths, labels.as_deref(), json),
        Command::Index {
            db,
            mode,
            labels,
            rebuild,
            checkpoint_secs,
            model,
            paths,
        } => library::index(
            &db_or_default(db)?,
            mode,
            labels.as_deref(),
            rebuild,
            checkpoint_secs,
            model.as_deref(),
            &paths,
        ),
        Command::Query {
            db,
            mode,
            top,
            per_file,
            all,
            json,
            engine,
            model,
            export,
            out,
            clips,
        } => {
            let mode = Mode::from(mode);
            let export = export.zip(out).map(|(format, out)| query::Export {
                format: format.into(),
                out,
            });
            let options = SearchOptions {
                engine: Some(engine.map_or(Engine::default_for(mode), Engine::from)),
                per_file: per_file as usize,
                every_occurrence: all,
                ..SearchOptions::top(top)
            };
            query::query(
                &db_or_default(db)?,
                mode,
                &options,
                json,
                model.as_deref(),
                &clips,
                export.as_ref(),
            )
        }
        Command::Learn {
            db,
            labels,
            marks,
            json,
        } => learn::run(&db_or_default(db)?, labels.as_deref(), marks, json),
        Command::Info { db, json } => library::info(&db_or_default(db)?, json),
        Command::Inspect { files, json } => inspect::inspect(&files, json),
        Command::Models(command) => models::run(command),
        Command::Embed {
            model,
            json,
            npy,
            files,
        } => embed::run(model.as_deref(), json, npy.as_deref(), &files),
        Command::Train(TrainCommand::Events(args)) if args.backbone.is_some() => {
            train_heads::run(&args)
        }
        Command::Train(TrainCommand::Events(args)) => train_events::run(args),
        Command::Train(TrainCommand::Fingerprint(args)) => train_fingerprint::run(args),
        Command::Eval(EvalCommand::Esc50(args)) => eval_esc50::run(args),
        Command::Eval(EvalCommand::Fingerprint(args)) => eval_fingerprint::run(args),
    }
}

/// The index folder given, or Earshot's default one.
/// `--db`, or the index folder in the platform's data directory.
fn db_or_default(db: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(db) = db {
        return Ok(db);
    }
    crate::fsutil::data_dir()
        .map(|dir| dir.join("index"))
        .ok_or_else(|| anyhow::anyhow!("no home directory to keep the index in; pass --db DIR"))
}
