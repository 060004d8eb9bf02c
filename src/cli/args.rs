//! Command-line spellings of the engine's choices (the engine's own types know nothing of clap).

use crate::model::Mode;
use crate::search::Engine;

/// A search mode (see [`Mode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// Similar sounds: semantic neighbours, ranked per file.
    Events,
    /// Exact match: where a clip occurs, with its time offset.
    Fingerprint,
}

impl From<ModeArg> for Mode {
    fn from(mode: ModeArg) -> Self {
        match mode {
            ModeArg::Events => Mode::Events,
            ModeArg::Fingerprint => Mode::Fingerprint,
        }
    }
}

/// How library segments are found (see [`Engine`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineArg {
    /// Exact: Hamming distance to every segment.
    Scan,
    /// Multi-index hashing over the codes (exact within the radius it probes).
    Buckets,
    /// HNSW over the float embeddings (approximate).
    Hnsw,
}

impl From<EngineArg> for Engine {
    fn from(engine: EngineArg) -> Self {
        match engine {
            EngineArg::Scan => Engine::Scan,
            EngineArg::Buckets => Engine::Buckets,
            EngineArg::Hnsw => Engine::Hnsw,
        }
    }
}

/// Which search modes `index` builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IndexModes {
    Events,
    Fingerprint,
    Both,
}

impl IndexModes {
    pub fn modes(self) -> Vec<Mode> {
        match self {
            IndexModes::Events => vec![Mode::Events],
            IndexModes::Fingerprint => vec![Mode::Fingerprint],
            IndexModes::Both => Mode::ALL.to_vec(),
        }
    }
}

/// The formats `earshot query --export` writes (see [`crate::export`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportArg {
    Csv,
    /// A Raven selection table (tab-separated; one selection per result, naming its file)
    Raven,
    /// Audacity label tracks: a label file per audio file, in the folder given
    Audacity,
}

impl From<ExportArg> for crate::export::Format {
    fn from(format: ExportArg) -> Self {
        match format {
            ExportArg::Csv => Self::Csv,
            ExportArg::Raven => Self::Raven,
            ExportArg::Audacity => Self::Audacity,
        }
    }
}
