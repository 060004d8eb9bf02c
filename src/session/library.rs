//! An index opened for searching: its encoders, checked against what built each section, and
//! its search tables, built on a mode's first query and kept for the next ones.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::clip::Clip;
use super::{Encoders, SessionError};
use crate::index::store::Store;
use crate::index::{Index, ModeIndex};
use crate::model::{AttentionMap, Encoder, Mode};
use crate::search::{Engine, FilesOnDisk, Hit, LibraryAudio, SearchCost, SearchTables, Searcher};

/// How a query is searched.
#[derive(Debug, Clone, Copy)]
pub struct SearchOptions {
    pub top: usize,
    /// `None`: the mode's default ([`Engine::default_for`]).
    pub engine: Option<Engine>,
    /// Check fingerprint matches against the files' audio on disk (see [`crate::search`]).
    pub check_audio: bool,
    /// `events`: hits per file at most, each a different moment of it.
    pub per_file: usize,
    /// `fingerprint`: every place the clip is found, in every file (however many that is),
    /// instead of each file's best.
    pub every_occurrence: bool,
}

impl SearchOptions {
    pub fn top(top: usize) -> Self {
        Self {
            top,
            engine: None,
            check_audio: true,
            per_file: 1,
            every_occurrence: false,
        }
    }
}

/// What a search found.
pub struct SearchOutcome {
    pub mode: Mode,
    pub hits: Vec<Hit>,
    pub cost: SearchCost,
    pub elapsed: Duration,
    /// The region searched, seconds from the clip's start.
    pub region: (f64, f64),
}

pub struct OpenLibrary {
    db: PathBuf,
    store: Arc<dyn Store>,
    /// All of it for a folder; for a server, the catalog: roots, files and sections without
    /// their segments (each query fetches the ones it needs, see [`Store::shortlist`]).
    index: Arc<Index>,
    encoders: Arc<Encoders>,
    tables: Mutex<HashMap<(Mode, Engine), Arc<SearchTables>>>,
}

impl OpenLibrary {
    /// Loads the index `db` names (a folder, or a Milvus server).
    pub fn open(db: &Path, encoders: Arc<Encoders>) -> Result<Self, SessionError> {
        let store: Arc<dyn Store> = crate::index::open_store(db)?.into();
        let index = Arc::new(store.load()?);
        Ok(Self::new(db, store, index, encoders))
    }

    /// `index` as loaded from `store` (nothing is read or built until the first search).
    pub fn new(
        db: &Path,
        store: Arc<dyn Store>,
        index: Arc<Index>,
        encoders: Arc<Encoders>,
    ) -> Self {
        Self {
            db: db.to_owned(),
            store,
            index,
            encoders,
            tables: Mutex::default(),
        }
    }

    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    pub fn db(&self) -> &Path {
        &self.db
    }

    /// Searches `mode`'s section with `region` of `clip` (seconds from its start; the whole
    /// clip when `None`).
    pub fn search(
        &self,
        clip: &Clip,
        region: Option<(f64, f64)>,
        mode: Mode,
        options: &SearchOptions,
    ) -> Result<SearchOutcome, SessionError> {
        let started = Instant::now();
        let (encoder, data) = self.section(mode)?;
        let region = region.unwrap_or((0.0, clip.duration_s()));
        let part = clip.query_part(&encoder.input(), region)?;
        let query = part.as_query();
        let files = FilesOnDisk;
        let audio = options.check_audio.then_some(&files as &dyn LibraryAudio);
        let tables = self.tables(mode, options.engine)?;
        let whole = Searcher::new(&self.index, mode, data, encoder, &tables);
        let whole = configured(whole, audio, options);
        let encoded = whole.encode(&query)?;
        let wanted = whole.store_query(&encoded, options.top);
        // A store that searches segments itself gives the files the query needs: the same
        // search runs on them.
        let (hits, cost) = match (self.store).shortlist(&self.index, mode, &wanted)? {
            None => whole.search_encoded(&encoded, query.samples, options.top),
            Some(near) => {
                let data = near.mode(mode, &self.db)?;
                let tables = SearchTables::build(&near, mode, data, tables.engine())?;
                let searcher = Searcher::new(&near, mode, data, encoder, &tables);
                configured(searcher, audio, options).search_encoded(
                    &encoded,
                    query.samples,
                    options.top,
                )
            }
        };
        Ok(SearchOutcome {
            mode,
            hits,
            cost,
            elapsed: started.elapsed(),
            region,
        })
    }

    /// Checks that `mode` can be searched (its section exists and was built by the loaded
    /// encoder) and builds its tables for `engine` (the mode's default when `None`), so that a
    /// batch of queries fails before the first if it is going to.
    pub fn prepare(&self, mode: Mode, engine: Option<Engine>) -> Result<(), SessionError> {
        self.section(mode)?;
        self.tables(mode, engine).map(drop)
    }

    /// `mode`'s encoder and index section, checked to belong together.
    fn section(&self, mode: Mode) -> Result<(&dyn Encoder, &ModeIndex), SessionError> {
        let encoder = self
            .encoders
            .get(&mode)
            .ok_or(SessionError::NoEncoder(mode.name()))?;
        let data = self.index.section_for(&self.db, mode, encoder.as_ref())?;
        Ok((encoder.as_ref(), data))
    }

    /// The tables `engine` needs for `mode`, built on first use.
    fn tables(
        &self,
        mode: Mode,
        engine: Option<Engine>,
    ) -> Result<Arc<SearchTables>, SessionError> {
        let engine = engine.unwrap_or(Engine::default_for(mode));
        let mut kept = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = kept.get(&(mode, engine)) {
            return Ok(t.clone());
        }
        let data = self.index.mode(mode, &self.db)?;
        let built = Arc::new(SearchTables::build(&self.index, mode, data, engine)?);
        kept.insert((mode, engine), built.clone());
        Ok(built)
    }
}

/// `searcher` set as `options` ask.
fn configured<'a>(
    searcher: Searcher<'a>,
    audio: Option<&'a dyn LibraryAudio>,
    options: &SearchOptions,
) -> Searcher<'a> {
    searcher
        .with_audio(audio)
        .with_per_file(options.per_file)
        .with_every_occurrence(options.every_occurrence)
}

/// Where `encoder` looks in `span` of `clip` (seconds from its start), its columns placed on the
/// frames of the clip's log-mel spectrogram (10 ms, what the views draw) counted from the clip's
/// start; `None` for encoders without attention.
pub fn attention(
    clip: &Clip,
    encoder: &dyn Encoder,
    span: (f64, f64),
) -> Result<Option<AttentionMap>, SessionError> {
    let front_end = encoder.input().front_end;
    let frames = clip.frames(&front_end)?;
    let fps = front_end.frames_per_second();
    let from = ((span.0.max(0.0) * fps) as usize).min(frames.n_frames);
    let to = ((span.1 * fps).ceil() as usize).clamp(from, frames.n_frames);
    let slice = &frames.data[from * frames.dims..to * frames.dims];
    // From the encoder's frames to the spectrogram's.
    let view_fps = crate::features::LogMelConfig::default().frames_per_second();
    let to_view = |frame: usize| ((frame + from) as f64 * view_fps / fps).round() as usize;
    Ok(encoder.attention(slice)?.map(|mut map| {
        map.frames = to_view(map.frames.start)..to_view(map.frames.end);
        map
    }))
}
