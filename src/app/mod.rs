//! The desktop application (egui). It calls the engine; the engine never calls it.
//!
//! Layout: the library on the left, the query's spectrogram on top, results or the map in the
//! middle, the inspector on the right, notices at the bottom. Panels only draw and collect
//! [`Command`]s; the commands are applied at the end of the frame ([`EarshotApp::apply`]).
//! Everything slow (decoding, inference, disk) runs in a [`task::Task`].

mod about_panel;
mod attention;
mod audio;
mod batch_panel;
mod commands;
mod device;
mod dialogs;
mod file_view;
pub mod history;
mod inspector_panel;
pub mod jobs;
mod library_panel;
mod map_panel;
mod models_panel;
mod query_panel;
mod results_panel;
pub mod settings;
mod spectrogram_view;
mod status_bar;
pub mod task;
mod text;
mod toolbar;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use eframe::egui;

pub use commands::Command;
use jobs::{IndexOutcome, IndexProgress, Inspected, OpenedIndex, SearchOutcome};
use settings::Settings;
use task::{Job, Task};

use crate::index::Index;
use crate::index::store::Store;
use crate::library::marks::Marks;
use crate::model::AttentionMap;
use crate::search::Hit;
use crate::session::{Encoders, OpenLibrary};
use spectrogram_view::ShownClip;

/// The window icon (the same drawing as the desktop entry's, `assets/icons/earshot.svg`).
const ICON_PNG: &[u8] = include_bytes!("../../assets/icons/earshot-256.png");

/// Opens the main window and runs until it is closed. `open`: files or folders given on the
/// command line ("Open with Earshot"), handled as if dropped on the window.
pub fn run(open: Vec<PathBuf>) -> anyhow::Result<()> {
    let mut viewport = egui::ViewportBuilder::default()
        .with_title("Earshot")
        .with_app_id("earshot")
        .with_inner_size([1280.0, 800.0])
        .with_min_inner_size([720.0, 480.0])
        .with_drag_and_drop(true);
    if let Ok(icon) = eframe::icon_data::from_png_bytes(ICON_PNG) {
        viewport = viewport.with_icon(icon);
    }
    let options = eframe::NativeOptions {
        viewport,
        // The app installs the system's fonts itself (see `EarshotApp::new`).
        system_font_fallback: false,
        ..Default::default()
    };
    let app_options = AppOptions {
        open,
        ..AppOptions::new(default_data_dir())
    };
    eframe::run_native(
        "Earshot",
        options,
        Box::new(move |cc| Ok(Box::new(EarshotApp::new(cc, app_options)))),
    )
    .map_err(|e| anyhow::anyhow!("cannot open the Earshot window: {e}"))
}

/// Where libraries' indexes, the demo library and exports go by default (see
/// [`crate::fsutil::data_dir`]; the system's temporary folder without a home).
pub fn default_data_dir() -> PathBuf {
    crate::fsutil::data_dir().unwrap_or_else(|| std::env::temp_dir().join("earshot"))
}

/// How the app is set up (tests point `data_dir` at a temporary folder).
#[derive(Debug, Clone)]
pub struct AppOptions {
    pub data_dir: PathBuf,
    /// Look for sound devices at start (off in tests, where there are none to find).
    pub probe_devices: bool,
    /// Files or folders to open at start, as if dropped on the window.
    pub open: Vec<PathBuf>,
}

impl AppOptions {
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            probe_devices: true,
            open: Vec::new(),
        }
    }
}

/// A result row and the user's judgement of it.
/// What the results can be sorted by (a column of the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Rank,
    File,
    Time,
    Score,
    Label,
    Hamming,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Ascending,
    Descending,
}

#[derive(Debug, Clone)]
pub struct ResultRow {
    pub hit: Hit,
    pub relevant: Option<bool>,
}

/// What the query panel holds: the clip, the selected region, and what the last search found.
pub struct QueryState {
    pub clip: ShownClip,
    pub texture: Option<egui::TextureHandle>,
    /// Seconds from the clip's start.
    pub selection: Option<(f64, f64)>,
    pub outcome: Option<SearchOutcome>,
    /// Where the encoder looks in the searched region, once found (`Some(None)`: it does not
    /// say); see [`EarshotApp::poll_attention`].
    pub attention: Option<Option<AttentionMap>>,
    pub error: Option<String>,
}

/// A library's runtime side: its loaded index and the last indexing report.
#[derive(Default)]
pub struct LibraryState {
    pub index: Option<Arc<Index>>,
    /// Where `index` is kept (a folder or a Milvus server), for searching it.
    pub store: Option<Arc<dyn Store>>,
    /// The index opened for searching with the loaded models (its search tables are kept
    /// between queries); made on the first search after the index or the models load.
    pub searchable: Option<Arc<OpenLibrary>>,
    pub error: Option<String>,
    pub failed: Vec<(PathBuf, String)>,
    /// Files the index holds that were indexed with problems (damaged but readable), and which.
    pub damaged: Vec<(PathBuf, String)>,
    pub summary: Option<String>,
    pub loading: Option<Task<(), Result<Option<OpenedIndex>, String>>>,
    /// The relevant / not-relevant marks set on this library's results (saved in its folder).
    pub marks: Marks,
}

impl LibraryState {
    /// Takes in a newly loaded or built index (`None`: there is none yet).
    fn set_index(&mut self, opened: Option<OpenedIndex>) {
        let index = opened.as_ref().map(|o| o.index.clone());
        self.damaged = (index.iter().flat_map(|i| &i.files))
            .filter_map(|f| Some((f.path.clone(), f.damage.clone()?)))
            .collect();
        self.store = opened.map(|o| o.store);
        (self.index, self.searchable) = (index, None);
    }
}

/// A query clip read in the background, and the region of it to select.
pub struct QueryRead {
    pub clip: ShownClip,
    pub selection: Option<(f64, f64)>,
}

/// Work under way in the background, one slot per kind (the map and the sound devices keep
/// their own).
#[derive(Default)]
pub struct Tasks {
    models: Option<Task<(), Result<Arc<Encoders>, String>>>,
    /// The library being indexed, and the work.
    pub indexing: Option<(PathBuf, Task<IndexProgress, IndexOutcome>)>,
    /// Indexing asked for before the models loaded (`true`: rebuild); starts once they have.
    pub pending_index: Option<bool>,
    /// Reading a query clip.
    pub query: Option<Job<QueryRead>>,
    pub search: Option<Task<(), Result<SearchOutcome, String>>>,
    pub inspect: Option<Task<(), Result<Inspected, String>>>,
    /// Where the encoder looks in the query or the inspected result (one at a time: each
    /// encodes its clip once per cell of the map), and which it is for.
    pub attention: Option<(attention::AttentionFor, attention::AttentionTask)>,
    pub demo: Option<Job<(PathBuf, usize)>>,
    /// Importing an outside model file: what to tell the user when it is done.
    pub import: Option<Task<(), Result<String, String>>>,
    /// Learning a library's codes from its labels (the library, and the work, which reports
    /// its step).
    pub learning: Option<(PathBuf, Job<String, String>)>,
    /// Searching with every clip of a folder, into one table.
    pub batch: Option<Task<jobs::BatchProgress, Result<jobs::BatchTable, String>>>,
}

impl Tasks {
    fn any(&self) -> bool {
        self.models.is_some()
            || self.indexing.is_some()
            || self.pending_index.is_some()
            || self.query.is_some()
            || self.search.is_some()
            || self.inspect.is_some()
            || self.attention.is_some()
            || self.batch.is_some()
            || self.demo.is_some()
            || self.import.is_some()
            || self.learning.is_some()
    }
}

pub struct EarshotApp {
    pub settings: Settings,
    pub options: AppOptions,
    pub encoders: Option<Arc<Encoders>>,
    pub encoder_error: Option<String>,
    pub libraries: HashMap<PathBuf, LibraryState>,
    pub tasks: Tasks,
    pub query: Option<QueryState>,
    pub results: Vec<ResultRow>,
    pub selected: Option<usize>,
    /// The selected library's name while it is being edited.
    pub renaming: Option<String>,
    /// The selected library's Milvus address while it is being typed.
    pub editing_server: Option<String>,
    /// The results' order when the user sorted them (by rank otherwise), and which way.
    pub results_sort: Option<(SortKey, Order)>,
    /// Only results whose file name or label hold this text are shown.
    pub results_filter: String,
    /// Exact match: the files whose every place is listed (otherwise their first only).
    pub expanded_files: std::collections::HashSet<PathBuf>,
    pub history: history::QueryHistory,
    /// A result the table scrolls to in the next frame (chosen with the arrow keys).
    pub scroll_results_to: Option<usize>,
    pub inspector: Option<Result<Inspected, String>>,
    inspector_textures: Option<egui::TextureHandle>,
    /// The last batch search's results, shown in a window of their own until it is closed.
    pub batch_table: Option<jobs::BatchTable>,
    /// The selected result's whole file, outlined.
    pub file_view: file_view::FileView,
    pub map: map_panel::MapState,
    pub audio: audio::AudioState,
    dialogs: dialogs::Dialogs,
    pub file_filter: String,
    file_list: library_panel::FileListCache,
    /// Messages for the user, newest last (errors and confirmations).
    pub notices: Vec<String>,
    commands: Vec<Command>,
    /// The settings as last written, so an unchanged state is not rewritten every few seconds.
    saved_settings: Option<Settings>,
    pub show_about: bool,
    pub models: models_panel::ModelsState,
    /// What the About window lists (looked up once: it searches the model folders).
    about_models: Vec<(crate::model::Mode, String, String)>,
}

impl EarshotApp {
    pub fn new(cc: &eframe::CreationContext<'_>, options: AppOptions) -> Self {
        let (settings, settings_problem) = Settings::load(&options.data_dir, cc.storage);
        let ctx = &cc.egui_ctx;
        // File names in any script: a glyph the bundled fonts lack comes from the system's fonts.
        ctx.add_font_provider(Arc::new(
            egui_system_font_provider::SystemFontProvider::new(),
        ));
        let mut app = Self {
            tasks: Tasks {
                models: None,
                ..Tasks::default()
            },
            audio: audio::AudioState::new(ctx, options.probe_devices),
            settings,
            options,
            encoders: None,
            encoder_error: None,
            libraries: HashMap::new(),
            query: None,
            results: Vec::new(),
            selected: None,
            scroll_results_to: None,
            renaming: None,
            editing_server: None,
            results_sort: None,
            results_filter: String::new(),
            expanded_files: Default::default(),
            history: history::QueryHistory::default(),
            inspector: None,
            inspector_textures: None,
            file_view: file_view::FileView::default(),
            batch_table: None,
            map: map_panel::MapState::default(),
            dialogs: dialogs::Dialogs::default(),
            file_filter: String::new(),
            file_list: library_panel::FileListCache::default(),
            notices: settings_problem.into_iter().collect(),
            commands: Vec::new(),
            saved_settings: None,
            show_about: false,
            models: models_panel::ModelsState::default(),
            about_models: crate::model::default_encoders(),
        };
        app.load_encoders(ctx);
        for lib in app.settings.libraries.clone() {
            app.start_loading(ctx, &lib.db);
        }
        if !app.options.open.is_empty() {
            app.push(Command::Dropped(app.options.open.clone()));
        }
        app
    }

    /// The app's own models folder (imports go there, and it is looked in first).
    pub fn models_dir(&self) -> PathBuf {
        self.options.data_dir.join("models")
    }

    /// Loads the encoders the settings ask for, in the background; searching and indexing wait
    /// for them.
    fn load_encoders(&mut self, ctx: &egui::Context) {
        let (dir, chosen) = (self.models_dir(), self.settings.events_model.clone());
        self.encoders = None;
        self.encoder_error = None;
        for state in self.libraries.values_mut() {
            state.searchable = None;
        }
        self.tasks.models = Some(Task::spawn(ctx, "models", move |_| {
            jobs::load_encoders(&dir, chosen.as_deref())
        }));
    }

    pub fn push(&mut self, command: Command) {
        self.commands.push(command);
    }

    /// Whether anything runs in the background (tests wait for this to clear).
    pub fn is_busy(&self) -> bool {
        self.tasks.any()
            || self.libraries.values().any(|l| l.loading.is_some())
            || self.map.is_busy()
            || self.file_view.is_busy()
            || self.audio.is_busy()
    }

    fn start_loading(&mut self, ctx: &egui::Context, db: &Path) {
        // The index is where the library keeps it (its folder, or a server).
        let path = (self.settings.libraries.iter())
            .find(|l| l.db == db)
            .map_or(db, |l| l.index_db())
            .to_owned();
        let state = self.libraries.entry(db.to_owned()).or_default();
        // A few kilobytes: read here, so marks are there before the first results.
        match Marks::load(db) {
            Ok(marks) => state.marks = marks,
            Err(e) => state.error = Some(e.to_string()),
        }
        state.loading = Some(Task::spawn(ctx, "load-index", move |_| {
            jobs::load_index(&path)
        }));
    }

    /// The selected library's settings and loaded index.
    pub fn current(&self) -> Option<(&settings::LibrarySettings, Option<&Arc<Index>>)> {
        let lib = self.settings.library()?;
        let index = self.libraries.get(&lib.db).and_then(|s| s.index.as_ref());
        Some((lib, index))
    }

    pub fn notify(&mut self, message: impl Into<String>) {
        self.notices.push(text::drawable(&message.into()));
        if self.notices.len() > 20 {
            self.notices.remove(0);
        }
    }

    /// Collects what background tasks finished since the last frame.
    fn poll_tasks(&mut self, ctx: &egui::Context) {
        if let Some(result) = task::finished_flat(&mut self.tasks.models) {
            match result {
                Ok(e) => {
                    self.encoders = Some(e);
                    if let Some(rebuild) = self.tasks.pending_index.take() {
                        self.commands.push(Command::Index { rebuild });
                    }
                    self.commands.push(Command::Search);
                }
                Err(e) => {
                    self.notify(format!("cannot load the models: {e}"));
                    self.encoder_error = Some(e);
                }
            }
        }
        let mut reloaded = false;
        for state in self.libraries.values_mut() {
            if let Some(result) = task::finished_flat(&mut state.loading) {
                match result {
                    Ok(index) => {
                        state.set_index(index);
                        state.error = None;
                        reloaded = true;
                    }
                    Err(e) => state.error = Some(e),
                }
            }
        }
        // Results point into the index as it was: search it again as it is now.
        if reloaded && self.query.is_some() {
            self.commands.push(Command::Search);
        }
        self.poll_indexing();
        self.poll_query(ctx);
        if let Some(result) = task::finished_flat(&mut self.tasks.demo) {
            self.demo_written(ctx, result);
        }
        if let Some(result) = task::finished_flat(&mut self.tasks.import) {
            match result {
                Ok(done) => {
                    self.notify(done);
                    self.models.found =
                        crate::model::catalog::installed_models(Some(&self.models_dir()));
                }
                Err(e) => self.notify(format!("cannot import: {e}")),
            }
        }
        self.poll_learning(ctx);
        match task::finished_flat(&mut self.tasks.batch) {
            Some(Ok(table)) => {
                self.notify(table.summary.clone());
                self.batch_table = Some(table);
            }
            Some(Err(e)) => self.notify(format!("batch search: {e}")),
            None => {}
        }
        if let Some(result) = task::finished_flat(&mut self.tasks.inspect) {
            self.inspector_textures = None;
            self.inspector = Some(result);
        }
        // After the query and the inspector have taken in their results, for which it starts.
        self.poll_attention(ctx);
        self.file_view.poll();
        self.map.poll();
        self.audio.poll();
        if let Some(error) = self.audio.error.take() {
            self.notify(error);
        }
        match self.dialogs.poll() {
            Some(Ok(command)) => self.commands.push(command),
            Some(Err(e)) => self.notify(e),
            None => {}
        }
    }

    fn poll_learning(&mut self, ctx: &egui::Context) {
        let Some((db, task)) = &mut self.tasks.learning else {
            return;
        };
        let Some(outcome) = task.poll() else {
            return;
        };
        let db = db.clone();
        self.tasks.learning = None;
        match outcome.and_then(|learned| learned) {
            Ok(message) => {
                self.notify(message);
                // The index on disk has new codes: load it, then search again.
                self.start_loading(ctx, &db);
                self.map.invalidate();
            }
            Err(e) => self.notify(format!("cannot learn codes: {e}")),
        }
    }

    fn poll_indexing(&mut self) {
        let Some((db, task)) = &mut self.tasks.indexing else {
            return;
        };
        let Some(outcome) = task.poll() else {
            return;
        };
        let db = db.clone();
        self.tasks.indexing = None;
        let state = self.libraries.entry(db).or_default();
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(lost) => {
                state.error = Some(lost);
                return;
            }
        };
        match outcome.result {
            Ok(report) => {
                state.failed = (report.failed.iter())
                    .map(|p| (p.path.clone(), p.reason.clone()))
                    .collect();
                state.summary = Some(library_panel::summary(&report));
                state.error = None;
            }
            Err(e) => state.error = Some(e.to_string()),
        }
        match outcome.index {
            Ok(index) => state.set_index(index),
            Err(e) => state.error = Some(e),
        }
        self.map.invalidate();
        // Results point into the old index: search again with the same query.
        if self.query.is_some() {
            self.commands.push(Command::Search);
        }
    }

    fn poll_query(&mut self, ctx: &egui::Context) {
        if let Some(result) = task::finished_flat(&mut self.tasks.query) {
            match result {
                Ok(QueryRead { clip, selection }) => {
                    self.query = Some(QueryState {
                        clip,
                        texture: None,
                        selection,
                        outcome: None,
                        attention: None,
                        error: None,
                    });
                    self.start_search(ctx);
                }
                Err(e) => self.notify(e),
            }
        }
        if let Some(result) = task::finished_flat(&mut self.tasks.search) {
            let Some(query) = &mut self.query else {
                return;
            };
            match result {
                Ok(outcome) => {
                    let marks = self
                        .settings
                        .library()
                        .and_then(|lib| self.libraries.get(&lib.db))
                        .map(|state| &state.marks);
                    self.results = outcome
                        .hits
                        .iter()
                        .map(|h| ResultRow {
                            hit: h.clone(),
                            relevant: marks
                                .and_then(|m| m.get(&query.clip.name, &h.path, h.start_s)),
                        })
                        .collect();
                    query.outcome = Some(outcome);
                    query.error = None;
                    query.attention = None;
                    self.results_sort = None;
                    self.expanded_files.clear();
                    self.selected = None;
                    self.inspector = None;
                    if !self.results.is_empty() {
                        self.commands.push(Command::SelectResult(0));
                    }
                }
                Err(e) => {
                    query.error = Some(e);
                    self.results.clear();
                }
            }
        }
    }

    /// Searches the selected library with the current query and selection.
    fn start_search(&mut self, ctx: &egui::Context) {
        let library = self.searchable();
        let Some(query) = &mut self.query else {
            return;
        };
        let Some(library) = library else {
            if self.encoders.is_some() {
                query.error = Some(
                    "index a library first: its files are what the query is compared with".into(),
                );
            }
            return;
        };
        let (clip, region) = (query.clip.clip.clone(), query.selection);
        let (mode, top, per_file) = (
            self.settings.mode,
            self.settings.top,
            self.settings.moments_per_file,
        );
        self.tasks.search = Some(Task::spawn(ctx, "search", move |_| {
            jobs::search(&library, &clip, region, mode, top, per_file)
        }));
    }

    /// The selected library opened for searching, once its index and the models are loaded.
    fn searchable(&mut self) -> Option<Arc<OpenLibrary>> {
        let encoders = self.encoders.clone()?;
        let lib = self.settings.library()?;
        let (db, index_db) = (lib.db.clone(), lib.index_db().to_owned());
        let state = self.libraries.get_mut(&db)?;
        let (index, store) = (state.index.clone()?, state.store.clone()?);
        let open = (state.searchable)
            .get_or_insert_with(|| Arc::new(OpenLibrary::new(&index_db, store, index, encoders)));
        Some(open.clone())
    }

    fn draw(&mut self, ui: &mut egui::Ui) {
        egui::Panel::top("toolbar").show(ui, |ui| toolbar::show(self, ui));
        egui::Panel::bottom("status").show(ui, |ui| status_bar::show(self, ui));
        // Side panels never take the results' room: at most a share of the window each, however
        // long a file name is (names are cut short, and shown whole on hover).
        let width = ui.available_width();
        egui::Panel::left("library")
            .resizable(true)
            .default_size(300.0)
            .size_range(180.0..=(width * SIDE_PANEL_SHARE).max(180.0))
            .show(ui, |ui| library_panel::show(self, ui));
        if self.settings.show_inspector && self.query.is_some() {
            egui::Panel::right("inspector")
                .resizable(true)
                .default_size(360.0)
                .size_range(200.0..=(width * SIDE_PANEL_SHARE).max(200.0))
                .show(ui, |ui| {
                    inspector_panel::show(self, ui);
                });
        }
        egui::CentralPanel::default_margins().show(ui, |ui| {
            // A long name is cut to the space there is: text wider than the panel would widen
            // everything below it, the results table too, past the inspector's edge.
            ui.style_mut().wrap_mode = Some(egui::TextWrapMode::Truncate);
            if self.settings.libraries.is_empty() && self.query.is_none() {
                library_panel::empty_state(self, ui);
                return;
            }
            query_panel::show(self, ui);
            ui.separator();
            match self.settings.central_view {
                settings::CentralView::Results => results_panel::show(self, ui),
                settings::CentralView::Map => map_panel::show(self, ui),
            }
        });
    }

    fn handle_input(&mut self, ctx: &egui::Context) {
        let (dropped, open, record, space, up, down) = ctx.input_mut(|i| {
            (
                std::mem::take(&mut i.raw.dropped_files),
                i.consume_key(egui::Modifiers::COMMAND, egui::Key::O),
                i.consume_key(egui::Modifiers::COMMAND, egui::Key::R),
                i.key_pressed(egui::Key::Space),
                i.key_pressed(egui::Key::ArrowUp),
                i.key_pressed(egui::Key::ArrowDown),
            )
        });
        let (back, forward) = ctx.input_mut(|i| {
            (
                i.consume_key(egui::Modifiers::ALT, egui::Key::ArrowLeft),
                i.consume_key(egui::Modifiers::ALT, egui::Key::ArrowRight),
            )
        });
        if back {
            self.push(Command::Back);
        }
        if forward {
            self.push(Command::Forward);
        }
        let paths: Vec<PathBuf> = dropped.iter().map(|f| f.path().to_owned()).collect();
        if !paths.is_empty() {
            self.push(Command::Dropped(paths));
        }
        if open {
            self.push(Command::OpenDialog);
        }
        if record {
            self.push(Command::ToggleRecording);
        }
        // Keys that would otherwise type into a focused text field are left to it.
        if ctx.egui_wants_keyboard_input() {
            return;
        }
        if space {
            self.push(Command::TogglePlaySelected);
        }
        // Through the rows shown, in the order shown.
        let shown = results_panel::shown_rows(self);
        if !shown.is_empty() && (up || down) {
            let at = self
                .selected
                .and_then(|s| shown.iter().position(|&i| i == s));
            let next = match (at, up) {
                (None, _) => 0,
                (Some(k), true) => k.saturating_sub(1),
                (Some(k), false) => (k + 1).min(shown.len() - 1),
            };
            self.scroll_results_to = Some(shown[next]);
            self.push(Command::SelectResult(shown[next]));
        }
    }
}

/// The most of the window's width the library panel, and the inspector, may each take (no less
/// than their buttons need).
const SIDE_PANEL_SHARE: f32 = 0.3;

impl eframe::App for EarshotApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let ctx = ui.ctx().clone();
        self.poll_tasks(&ctx);
        self.handle_input(&ctx);
        self.draw(ui);
        about_panel::show(self, &ctx);
        models_panel::show(self, &ctx);
        batch_panel::show(self, &ctx);
        if let Some(command) = self.dialogs.show_prompt(&ctx) {
            self.push(command);
        }
        file_drop_overlay(&ctx);
        for command in std::mem::take(&mut self.commands) {
            self.apply(&ctx, command);
        }
        if self.is_busy() {
            // Progress bars and spinners move even when no task reports.
            ctx.request_repaint_after(std::time::Duration::from_millis(100));
        } else if self.saved_settings.as_ref() != Some(&self.settings) {
            // eframe saves only in a frame: an idle window would keep a change unsaved until
            // it closes, and a crash or a kill before then would lose it.
            ctx.request_repaint_after(self.auto_save_interval());
        }
    }

    fn save(&mut self, _storage: &mut dyn eframe::Storage) {
        if self.saved_settings.as_ref() == Some(&self.settings) {
            return;
        }
        match self.settings.save(&self.options.data_dir) {
            Ok(()) => self.saved_settings = Some(self.settings.clone()),
            Err(e) => self.notify(e),
        }
    }

    /// Often, so that a crash loses at most a few seconds of changes to libraries and settings.
    fn auto_save_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(5)
    }
}

/// Darkens the window and says what a drop will do while files hover over it.
fn file_drop_overlay(ctx: &egui::Context) {
    let hovering = ctx.input(|i| !i.raw.hovered_files.is_empty());
    if !hovering {
        return;
    }
    let painter = ctx.layer_painter(egui::LayerId::new(
        egui::Order::Foreground,
        egui::Id::unique("drop-overlay"),
    ));
    let rect = ctx.content_rect();
    painter.rect_filled(rect, 0.0, egui::Color32::from_black_alpha(180));
    painter.text(
        rect.center(),
        egui::Align2::CENTER_CENTER,
        "Drop an audio file to search with it, or a folder to open it as a library",
        egui::FontId::proportional(20.0),
        egui::Color32::WHITE,
    );
}
