//! Where an index is kept: the one file in a folder ([`FolderStore`]), or collections on a
//! Milvus server ([`super::milvus::MilvusStore`]). Ingest writes through a [`Store`] and search
//! reads through it; everything above (the scan and its diff, encoding, voting, verification,
//! re-ranking) is the same whichever it is.
//!
//! `db` names the store everywhere: a folder, or `milvus://HOST:PORT[/PREFIX]`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{EncodedFile, Index, IndexError, format};
use crate::library::FileRecord;
use crate::model::{Encoded, Mode};

/// An index's home. The [`Index`] it loads is the catalog ingest diffs against and search
/// names files from; its writes go through here, so the store can keep them.
pub trait Store: Send + Sync {
    /// Whether an index is kept there yet.
    fn exists(&self) -> Result<bool, IndexError>;

    /// The index as kept: roots, files and sections, with every segment where the store keeps
    /// them in memory (a folder), without any where it searches them itself (a server: see
    /// [`Self::shortlist`]).
    fn load(&self) -> Result<Index, IndexError>;

    /// Forgets everything kept (a rebuild), leaving `index` empty.
    fn clear(&mut self, index: &mut Index) -> Result<(), IndexError>;

    /// Adds a file (replacing any earlier entry for the same path). It is kept from the next
    /// [`Self::checkpoint`] on.
    fn add(&mut self, index: &mut Index, file: EncodedFile) -> Result<(), IndexError>;

    /// Drops files and their segments.
    fn remove(&mut self, index: &mut Index, paths: &HashSet<PathBuf>) -> Result<(), IndexError>;

    /// Updates labels.
    fn relabel(&mut self, index: &mut Index, records: &[FileRecord]) -> Result<(), IndexError>;

    /// Makes everything added, removed and relabelled so far survive a crash: after it
    /// returns, a killed process leaves exactly this state; before, the last checkpoint's.
    fn checkpoint(&mut self, index: &Index) -> Result<(), IndexError>;

    /// Segments kept for `mode`.
    fn segment_count(&self, index: &Index, mode: Mode) -> Result<usize, IndexError>;

    /// Whether the store learns codes on the library's own embeddings (which needs all of them
    /// at hand: see [`super::ModeIndex::refresh_library_code`]).
    fn learns_library_codes(&self) -> bool;

    /// The part of `index` a query needs, for a store that searches segments itself: the files
    /// its segments come nearest to, at least `files` of them where there are, with all their
    /// segments, as an index of their own. `None` where `index` holds every segment already:
    /// search it whole.
    fn shortlist(
        &self,
        index: &Index,
        mode: Mode,
        query: &QueryCodes<'_>,
    ) -> Result<Option<Index>, IndexError>;
}

/// A query as a store sees it: its segments' starts (in front-end frames) and their codes
/// and embeddings, and what the search above will do with the files it is given.
#[derive(Debug, Clone, Copy)]
pub struct QueryCodes<'a> {
    pub starts: &'a [usize],
    pub encoded: &'a Encoded,
    /// Files the ranking wants at least (it ranks more than it shows).
    pub files: usize,
    /// `fingerprint`: how search votes, so that the store brings every file it would vote for.
    pub votes: Option<VotePlan<'a>>,
}

/// How fingerprint search finds each query segment's voting neighbours (bucket probes, see
/// [`super::buckets`]) and which (file, offset) votes it goes on to verify.
#[derive(Debug, Clone, Copy)]
pub struct VotePlan<'a> {
    /// Per query segment and bit, how sure the query is of it; empty for an encoder without
    /// margins, whose probes reach every key within `substring_radius` instead.
    pub certainty: &'a [f32],
    /// Least sure bits flipped per substring.
    pub unsure_bits: usize,
    pub substring_radius: u32,
    /// A neighbour farther than this many bits does not vote; a nearer one votes
    /// `1 - distance / max_distance` for the offset that aligns it.
    pub max_distance: u32,
    /// The heaviest (file, offset) votes verified, at most one per `hop` frames of a file.
    pub candidates: usize,
    pub hop: i64,
}

/// An index kept in one file, `index.earshot`, in a folder (see [`format`]): loaded whole,
/// changed in memory, written whole and atomically at each checkpoint.
pub struct FolderStore {
    db: PathBuf,
}

impl FolderStore {
    pub fn new(db: &Path) -> Self {
        Self { db: db.to_owned() }
    }
}

impl Store for FolderStore {
    fn exists(&self) -> Result<bool, IndexError> {
        Ok(format::exists(&self.db))
    }

    fn load(&self) -> Result<Index, IndexError> {
        format::load(&self.db)
    }

    fn clear(&mut self, index: &mut Index) -> Result<(), IndexError> {
        *index = Index::new();
        Ok(())
    }

    fn add(&mut self, index: &mut Index, file: EncodedFile) -> Result<(), IndexError> {
        index.add(file);
        Ok(())
    }

    fn remove(&mut self, index: &mut Index, paths: &HashSet<PathBuf>) -> Result<(), IndexError> {
        index.remove(paths);
        Ok(())
    }

    fn relabel(&mut self, index: &mut Index, records: &[FileRecord]) -> Result<(), IndexError> {
        index.relabel(records);
        Ok(())
    }

    fn checkpoint(&mut self, index: &Index) -> Result<(), IndexError> {
        // What runs killed mid-save left (their processes are gone).
        format::remove_stale_temp_files(&self.db);
        format::save(index, &self.db)
    }

    fn learns_library_codes(&self) -> bool {
        true
    }

    fn segment_count(&self, index: &Index, mode: Mode) -> Result<usize, IndexError> {
        Ok(index.modes.get(&mode).map_or(0, |d| d.segments.len()))
    }

    fn shortlist(
        &self,
        _index: &Index,
        _mode: Mode,
        _query: &QueryCodes<'_>,
    ) -> Result<Option<Index>, IndexError> {
        Ok(None)
    }
}
