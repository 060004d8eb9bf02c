//! The library: several libraries, each with folders and one index (renamed in place, a folder
//! added or removed, labels from folder names or a CSV); indexing progress, cancel, the files
//! that failed and why; the file list with a filter. Clicking a file searches with it.

use std::sync::Arc;

use eframe::egui;

use super::settings::LibrarySettings;
use super::text::{clock, count, drawable, file_name, shown_path};
use super::{Command, EarshotApp, audio};
use crate::index::Index;
use crate::session::ingest::BuildReport;

pub fn show(app: &mut EarshotApp, ui: &mut egui::Ui) {
    // Long names are cut to the panel's width (whole on hover) instead of widening it.
    ui.style_mut().wrap_mode = Some(egui::TextWrapMode::Truncate);
    ui.add_space(4.0);
    library_picker(app, ui);
    let Some(lib) = app.settings.library().cloned() else {
        ui.label("No library yet.");
        if ui.button("Add folder…").clicked() {
            app.push(Command::AddFolderDialog);
        }
        return;
    };
    folders(app, ui, &lib);
    index_location(app, ui, &lib);
    ui.horizontal(|ui| {
        if ui
            .button("Add folder…")
            .on_hover_text("Or drop a folder on the window")
            .clicked()
        {
            app.push(Command::AddFolderDialog);
        }
        let idle = app.tasks.indexing.is_none();
        if ui
            .add_enabled(
                idle && !lib.folders.is_empty(),
                egui::Button::new("Update index"),
            )
            .clicked()
        {
            app.push(Command::Index { rebuild: false });
        }
        if ui
            .add_enabled(
                idle && !lib.folders.is_empty(),
                egui::Button::new("Rebuild"),
            )
            .on_hover_text("Encode every file again (after a model changed)")
            .clicked()
        {
            app.push(Command::Index { rebuild: true });
        }
    });
    indexing_status(app, ui, &lib.db);
    ui.separator();
    file_list(app, ui, &lib.db);
}

/// The library's folders, each removable while another remains, and where its labels come from.
fn folders(app: &mut EarshotApp, ui: &mut egui::Ui, lib: &LibrarySettings) {
    let idle = app.tasks.indexing.is_none();
    for f in &lib.folders {
        ui.horizontal(|ui| {
            let remove = ui
                .add_enabled(idle && lib.folders.len() > 1, egui::Button::new("×").small())
                .on_hover_text("Remove this folder from the library: its files leave the index (they stay on disk)")
                .on_disabled_hover_text("A library keeps at least one folder (remove the library instead), and not while it indexes");
            if remove.clicked() {
                app.push(Command::RemoveFolder(f.clone()));
            }
            ui.weak(format!("folder: {}", shown_path(f)))
                .on_hover_text(shown_path(f));
        });
    }
    ui.horizontal(|ui| {
        let source = match &lib.labels {
            Some(csv) => format!("labels: {}", file_name(csv)),
            None => "labels: folder names".to_owned(),
        };
        ui.weak(source).on_hover_text(
            "Each file's label: its folder's name, or its row in a CSV of path,label rows (relative paths are from the CSV's folder)",
        );
        if ui
            .add_enabled(idle, egui::Button::new("CSV…").small())
            .on_hover_text("Label the files from a CSV of path,label rows")
            .clicked()
        {
            app.push(Command::LabelsDialog);
        }
        if lib.labels.is_some()
            && ui
                .add_enabled(idle, egui::Button::new("folders").small())
                .on_hover_text("Label the files by their folders' names again")
                .clicked()
        {
            app.push(Command::SetLabels(None));
        }
    });
}

fn library_picker(app: &mut EarshotApp, ui: &mut egui::Ui) {
    ui.horizontal(|ui| {
        let names: Vec<String> = app
            .settings
            .libraries
            .iter()
            .map(|l| l.name.clone())
            .collect();
        let selected = app.settings.selected_library;
        let current = names
            .get(selected)
            .cloned()
            .unwrap_or_else(|| "no library".into());
        let label = ui.strong("Library");
        if let Some(name) = &mut app.renaming {
            rename_field(ui, name, &mut app.commands, label.id);
            return;
        }
        egui::ComboBox::from_id_salt("library-picker")
            .selected_text(&current)
            .show_ui(ui, |ui| {
                for (i, name) in names.iter().enumerate() {
                    if ui.selectable_label(i == selected, name).clicked() {
                        app.push(Command::SelectLibrary(i));
                    }
                }
            })
            .response
            .labelled_by(label.id);
        if ui.small_button("+").on_hover_text("New library").clicked() {
            app.push(Command::NewLibrary);
        }
        if !names.is_empty()
            && ui
                .small_button("✏")
                .on_hover_text("Rename this library")
                .clicked()
        {
            app.renaming = Some(current.clone());
        }
        if !names.is_empty()
            && ui
                .small_button("−")
                .on_hover_text("Remove this library from the list (files and index stay on disk)")
                .clicked()
        {
            app.push(Command::RemoveLibrary(selected));
        }
    });
}

/// Where the library's index is kept: its own folder, or a Milvus server (typed in place:
/// Enter uses it, Escape leaves it as it was).
fn index_location(app: &mut EarshotApp, ui: &mut egui::Ui, lib: &LibrarySettings) {
    let idle = app.tasks.indexing.is_none();
    ui.horizontal(|ui| {
        if let Some(address) = &mut app.editing_server {
            let label = ui.weak("index on");
            let edit = ui
                .add(
                    egui::TextEdit::singleline(address)
                        .hint_text("milvus://HOST:PORT/PREFIX")
                        .desired_width(220.0),
                )
                .labelled_by(label.id);
            if !edit.has_focus() && !edit.lost_focus() {
                edit.request_focus();
            }
            if edit.lost_focus() {
                let keep = !ui.input(|i| i.key_pressed(egui::Key::Escape));
                let address = address.trim();
                if keep {
                    let server = (!address.is_empty()).then(|| address.into());
                    app.commands.push(Command::SetServer(server));
                } else {
                    app.editing_server = None;
                }
            }
            return;
        }
        let (place, hover) = match &lib.server {
            Some(server) => (
                format!("index: {}", server.display()),
                format!(
                    "The index is kept on the Milvus server {}",
                    server.display()
                ),
            ),
            None => (
                "index: on this computer".to_owned(),
                format!("The index is kept in {}", shown_path(&lib.db)),
            ),
        };
        // The button first: a long address is cut at the panel's edge, never the button.
        let change = ui
            .add_enabled(idle, egui::Button::new("Server…").small())
            .on_hover_text("Keep the index on a Milvus server (empty: on this computer)");
        ui.weak(place).on_hover_text(hover);
        if change.clicked() {
            let current = lib.server.as_ref().map(|s| s.display().to_string());
            app.editing_server = Some(current.unwrap_or_default());
        }
    });
}

/// The library's name being edited: Enter keeps it, Escape leaves it as it was.
fn rename_field(
    ui: &mut egui::Ui,
    name: &mut String,
    commands: &mut Vec<Command>,
    label: egui::Id,
) {
    let edit = ui
        .add(egui::TextEdit::singleline(name).desired_width(160.0))
        .labelled_by(label);
    if !edit.has_focus() && !edit.lost_focus() {
        edit.request_focus();
        // The whole name selected, so that typing replaces it.
        let mut state = egui::text_edit::TextEditState::load(ui.ctx(), edit.id).unwrap_or_default();
        let all = egui::text_selection::CCursorRange::select_all_str(name);
        state.cursor.set_char_range(Some(all));
        state.store(ui.ctx(), edit.id);
    }
    if edit.lost_focus() {
        let keep = !ui.input(|i| i.key_pressed(egui::Key::Escape)) && !name.trim().is_empty();
        commands.push(Command::RenameLibrary(keep.then(|| name.trim().to_owned())));
    }
}

fn indexing_status(app: &mut EarshotApp, ui: &mut egui::Ui, db: &std::path::Path) {
    if let Some((indexing_db, task)) = &app.tasks.indexing
        && indexing_db == db
    {
        let p = task.progress.clone().unwrap_or_default();
        let fraction = if p.planned_audio_s > 0.0 {
            (p.audio_s() / p.planned_audio_s) as f32
        } else {
            0.0
        };
        ui.add(
            egui::ProgressBar::new(fraction)
                .show_percentage()
                .animate(true),
        );
        ui.label(format!(
            "{} of {} files · {:.2} of {:.2} hours · {:.0}x real time",
            p.done_files,
            p.planned_files,
            p.audio_s() / 3600.0,
            p.planned_audio_s / 3600.0,
            p.real_time_factor()
        ));
        let cancelling = task.is_cancelled();
        if ui
            .add_enabled(
                !cancelling,
                egui::Button::new(if cancelling {
                    "Cancelling…"
                } else {
                    "Cancel"
                }),
            )
            .clicked()
        {
            app.push(Command::CancelIndexing);
        }
        file_problems(ui, &p.failed, &p.damaged);
        return;
    }
    if app.tasks.pending_index.is_some() {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label("indexing starts when the models have loaded…");
        });
    }
    let Some(state) = app.libraries.get(db) else {
        return;
    };
    if state.loading.is_some() {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label("opening the index…");
        });
    }
    if let Some(summary) = &state.summary {
        ui.label(summary);
    }
    if let Some(error) = &state.error {
        ui.colored_label(ui.visuals().error_fg_color, drawable(error));
    }
    file_problems(ui, &state.failed, &state.damaged);
}

/// The files that could not be read, and those indexed with problems, each with why.
fn file_problems(
    ui: &mut egui::Ui,
    failed: &[(std::path::PathBuf, String)],
    damaged: &[(std::path::PathBuf, String)],
) {
    problem_list(ui, "cannot be read", failed);
    problem_list(ui, "indexed with problems", damaged);
}

fn problem_list(ui: &mut egui::Ui, what: &str, failed: &[(std::path::PathBuf, String)]) {
    if failed.is_empty() {
        return;
    }
    egui::CollapsingHeader::new(format!("{} {what}", count(failed.len(), "file")))
        .id_salt(what)
        .show(ui, |ui| {
            egui::ScrollArea::vertical()
                .max_height(160.0)
                .show(ui, |ui| {
                    for (path, reason) in failed {
                        ui.label(egui::RichText::new(file_name(path)).strong())
                            .on_hover_text(shown_path(path));
                        ui.weak(drawable(reason));
                    }
                });
        });
}

fn file_list(app: &mut EarshotApp, ui: &mut egui::Ui, db: &std::path::Path) {
    let Some(index) = app.libraries.get(db).and_then(|s| s.index.clone()) else {
        ui.weak("Not indexed yet.");
        return;
    };
    ui.horizontal(|ui| {
        let label = ui.label("Filter");
        ui.add(egui::TextEdit::singleline(&mut app.file_filter).hint_text("name or label"))
            .labelled_by(label.id);
    });
    let files = app.file_list.rows(&index, &app.file_filter).to_vec();
    ui.weak(format!(
        "{} of {} files · {:.2} hours",
        files.len(),
        index.files.len(),
        index.total_duration_s() / 3600.0
    ));
    let query_path = app.query.as_ref().and_then(|q| q.clip.path.clone());
    let mut commands = Vec::new();
    let row_height = ui.text_style_height(&egui::TextStyle::Body) + 4.0;
    egui::ScrollArea::vertical()
        .auto_shrink([false, false])
        .show_rows(ui, row_height, files.len(), |ui, range| {
            for &i in &files[range] {
                let f = &index.files[i];
                // The label and length keep their place at the right; the name takes what is left.
                egui::containers::Sides::new()
                    .shrink_left()
                    .truncate()
                    .show(
                        ui,
                        |ui| {
                            if audio::play_button(app, ui, "play", "Play") {
                                commands.push(Command::PlayFile(f.path.clone(), 0.0));
                            }
                            let is_query = query_path.as_ref() == Some(&f.path);
                            let response = ui
                                .selectable_label(is_query, file_name(&f.path))
                                .on_hover_text(format!(
                                    "{}\nclick to search with it",
                                    shown_path(&f.path)
                                ));
                            if response.clicked() {
                                commands.push(Command::QueryFile(f.path.clone(), None));
                            }
                        },
                        |ui| {
                            ui.weak(clock(f.duration_s));
                            ui.weak(&f.label);
                            if let Some(damage) = &f.damage {
                                ui.colored_label(ui.visuals().warn_fg_color, "⚠")
                                    .on_hover_text(format!("indexed with problems: {damage}"));
                            }
                        },
                    );
            }
        });
    for c in commands {
        app.push(c);
    }
}

/// The file list's order and filter, kept between frames: sorting and matching tens of
/// thousands of paths every frame would cost more than drawing them.
#[derive(Default)]
pub struct FileListCache {
    /// The index it was made for (its address) and the filter applied.
    key: Option<(usize, String)>,
    /// Files by path, with their lower-case search text.
    sorted: Vec<(usize, String)>,
    rows: Vec<usize>,
}

impl FileListCache {
    pub fn rows(&mut self, index: &Arc<Index>, filter: &str) -> &[usize] {
        let id = Arc::as_ptr(index) as usize;
        if self
            .key
            .as_ref()
            .is_some_and(|(i, f)| *i == id && f == filter)
        {
            return &self.rows;
        }
        if self.key.as_ref().is_none_or(|(i, _)| *i != id) {
            let mut order: Vec<usize> = (0..index.files.len()).collect();
            order.sort_by(|&a, &b| index.files[a].path.cmp(&index.files[b].path));
            self.sorted = order
                .into_iter()
                .map(|i| {
                    let f = &index.files[i];
                    (
                        i,
                        format!("{} {}", f.path.to_string_lossy(), f.label).to_lowercase(),
                    )
                })
                .collect();
        }
        let needle = filter.to_lowercase();
        self.rows = self
            .sorted
            .iter()
            .filter(|(_, text)| text.contains(&needle))
            .map(|&(i, _)| i)
            .collect();
        self.key = Some((id, filter.to_owned()));
        &self.rows
    }
}

/// The empty state: what to do first.
pub fn empty_state(app: &mut EarshotApp, ui: &mut egui::Ui) {
    // Sentences wrap here (the central panel cuts names short).
    ui.style_mut().wrap_mode = Some(egui::TextWrapMode::Wrap);
    ui.vertical_centered(|ui| {
        ui.add_space(ui.available_height() / 4.0);
        ui.heading("Explore audio collections by example");
        ui.add_space(8.0);
        ui.label("1. Add a folder of recordings (or drop it on this window); Earshot indexes it in the background.");
        ui.label("2. Drop a clip, open one (Ctrl+O) or record one (Ctrl+R): similar sounds, or where it occurs, appear ranked.");
        ui.add_space(12.0);
        if ui.button("Add folder…").clicked() {
            app.push(Command::AddFolderDialog);
        }
        ui.add_space(4.0);
        if app.tasks.demo.is_some() {
            ui.spinner();
        }
        if ui
            .button("Try the demo library")
            .on_hover_text("48 synthetic sounds in 8 classes (chirps, tones, noise bursts, clicks…), made on this machine")
            .clicked()
        {
            app.push(Command::CreateDemoLibrary);
        }
    });
}

/// One line about a finished indexing run.
pub fn summary(report: &BuildReport) -> String {
    let seconds = report.elapsed.as_secs_f64();
    format!(
        "{}{} added, {} updated, {} removed, {} unchanged; {} encoded in {seconds:.1} s ({:.0}x real time)",
        if report.cancelled { "cancelled: " } else { "" },
        report.added,
        report.updated,
        report.removed,
        report.unchanged,
        clock(report.encoded_audio_s),
        report.encoded_audio_s / seconds.max(1e-3)
    )
}
