//! The ranked results: select, play from the matched time, mark relevant or not, query with a
//! result; filter by name or label, sort by a column, set how many; exact match's places grouped
//! per file; export with the marks (CSV, Raven, Audacity).

use eframe::egui;
use egui_extras::{Column, TableBuilder, TableRow};

use super::text::{clock, file_name, shown_path};
use super::{Command, EarshotApp, Order, ResultRow, SortKey, audio};
use crate::export;
use crate::model::Mode;

/// Exact match's answer in words: where the clip was found, or that it was not.
fn verdict(app: &EarshotApp, ui: &mut egui::Ui) {
    let mut found = app.results.iter().filter(|r| r.hit.found == Some(true));
    let Some(first) = found.next() else {
        ui.strong("Not found")
            .on_hover_text("No match is sure enough: the clip is probably not in this library. The closest candidates are below.");
        ui.weak("The closest candidates:");
        return;
    };
    let name = first
        .hit
        .path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let more = found.count();
    let places = match more {
        0 => String::new(),
        1 => ", and 1 more place".to_string(),
        n => format!(", and {n} more places"),
    };
    ui.strong(format!(
        "Found at {} in {name}{places}",
        clock(first.hit.start_s)
    ));
}

pub fn show(app: &mut EarshotApp, ui: &mut egui::Ui) {
    if app.query.is_none() {
        return;
    }
    let shown = shown_rows(app);
    ui.horizontal_wrapped(|ui| {
        ui.strong("Results")
            .on_hover_text("up/down: move through the results · space: play from the matched time");
        let marked = app.results.iter().filter(|r| r.relevant.is_some()).count();
        let shown = shown.len();
        let count = match shown == app.results.len() {
            true => format!("{shown} shown, {marked} marked"),
            false => format!("{shown} of {} shown, {marked} marked", app.results.len()),
        };
        ui.weak(count)
            .on_hover_text("Marks are kept with the library: they come back when the same query finds the same moments, and the Models window can learn codes from them.");
        let label = ui.label("Filter results");
        ui.add(
            egui::TextEdit::singleline(&mut app.results_filter)
                .hint_text("name or label")
                .desired_width(110.0),
        )
        .labelled_by(label.id);
        let top = ui
            .add(egui::DragValue::new(&mut app.settings.top).range(1..=MAX_TOP).prefix("top "))
            .on_hover_text("Results per query (drag, or click and type)");
        // Searched again once the number is set, not at every step of a drag.
        let mut again = (top.changed() && !top.dragged()) || top.drag_stopped();
        if app.settings.mode == Mode::Events {
            let moments = ui
                .add(
                    egui::DragValue::new(&mut app.settings.moments_per_file)
                        .range(1..=MAX_MOMENTS_PER_FILE)
                        .prefix("per file "),
                )
                .on_hover_text("The most moments of one file among the results: more than 1 lists every similar moment of a long recording, not only its best");
            again |= (moments.changed() && !moments.dragged()) || moments.drag_stopped();
        }
        if again {
            app.push(Command::Search);
        }
        ui.add_enabled_ui(!app.results.is_empty(), |ui| {
            ui.menu_button("Export", |ui| {
                for (format, text, tip) in [
                    (export::Format::Csv, "CSV", "The table, with your marks"),
                    (export::Format::Raven, "Raven selection table", "One selection per result, naming its file (Raven Pro and Lite)"),
                    (export::Format::Audacity, "Audacity labels", "A label track per audio file, its results in time order"),
                ] {
                    if ui.button(text).on_hover_text(tip).clicked() {
                        app.push(Command::Export(format));
                    }
                }
            })
            .response
            .on_hover_text("Write the results, with your marks, for a spreadsheet, Raven or Audacity");
        });
    });
    if app.settings.mode == Mode::Fingerprint && !app.results.is_empty() {
        verdict(app, ui);
    }
    if app.results.is_empty() {
        if app.tasks.search.is_none() && app.query.as_ref().is_some_and(|q| q.outcome.is_some()) {
            ui.label("No match in this library.");
        }
        return;
    }
    let mut commands = Vec::new();
    let columns = Columns::for_mode(app.settings.mode);
    let needed = columns.min_width(ui.spacing().item_spacing.x);
    // Too narrow (the inspector open, large text): the table scrolls sideways instead of
    // squeezing its marks and buttons off the edge.
    if ui.available_width() >= needed {
        table(
            app,
            ui,
            &columns,
            &shown,
            Column::remainder(),
            &mut commands,
        );
    } else {
        egui::ScrollArea::horizontal()
            .id_salt("results-sideways")
            // In sight, so that the columns past the edge are known to be there.
            .scroll_bar_visibility(egui::scroll_area::ScrollBarVisibility::AlwaysVisible)
            .show(ui, |ui| {
                ui.set_width(needed);
                let file = Column::exact(FILE_COLUMN_MIN);
                table(app, ui, &columns, &shown, file, &mut commands);
            });
    }
    app.scroll_results_to = None;
    for c in commands {
        app.push(c);
    }
}

/// The most results a query asks for in the app.
const MAX_TOP: usize = 5000;
/// The most moments of one file the app lists.
const MAX_MOMENTS_PER_FILE: usize = 100;

/// The results shown, by their position in `app.results`: those whose file name or label
/// holds the filter's text (any case), in the order sorted. Exact match lists every place a clip
/// occurs: a file's places after its first show under it only while the file is expanded.
pub fn shown_rows(app: &EarshotApp) -> Vec<usize> {
    let needle = app.results_filter.trim().to_lowercase();
    let grouped = app.settings.mode == Mode::Fingerprint;
    let mut seen = std::collections::HashSet::new();
    (0..app.results.len())
        .filter(|&i| {
            let hit = &app.results[i].hit;
            needle.is_empty()
                || file_name(&hit.path).to_lowercase().contains(&needle)
                || hit.label.to_lowercase().contains(&needle)
        })
        .filter(|&i| {
            let path = &app.results[i].hit.path;
            !grouped || seen.insert(path) || app.expanded_files.contains(path)
        })
        .collect()
}

/// For the first of a file's several places (exact match): how many more it has.
fn more_places(app: &EarshotApp, i: usize) -> usize {
    let path = &app.results[i].hit.path;
    let first = app.results.iter().position(|r| &r.hit.path == path);
    match (app.settings.mode, first) {
        (Mode::Fingerprint, Some(first)) if first == i => {
            app.results.iter().filter(|r| &r.hit.path == path).count() - 1
        }
        _ => 0,
    }
}

/// The table's columns: a heading and a width in points (the file name takes what is left).
struct Columns {
    fixed: Vec<(&'static str, f32)>,
}

/// The column a heading sorts by.
fn sort_key(heading: &str) -> Option<SortKey> {
    Some(match heading {
        "#" => SortKey::Rank,
        "file" => SortKey::File,
        "time" => SortKey::Time,
        "score" => SortKey::Score,
        "label" => SortKey::Label,
        "hamming" => SortKey::Hamming,
        _ => return None,
    })
}

/// The file name column's narrowest width, in points; its name clips, and shows whole on hover.
const FILE_COLUMN_MIN: f32 = 130.0;
/// Where the file column sits among the others.
const FILE_COLUMN: usize = 1;

impl Columns {
    fn for_mode(mode: Mode) -> Self {
        // Exact match's score cell also holds the correlation and "found".
        let score = match mode {
            Mode::Fingerprint => 150.0,
            Mode::Events => 60.0,
        };
        Self {
            // What a row is for first (its time, score, marks and buttons), what the inspector
            // also shows last: in a narrow window the first ones stay in sight.
            fixed: vec![
                ("#", 28.0),
                ("time", 62.0),
                ("score", score),
                ("relevant?", 80.0),
                ("", 46.0),
                ("", 56.0),
                ("label", 100.0),
                ("hamming", 58.0),
            ],
        }
    }

    fn min_width(&self, spacing: f32) -> f32 {
        let n = self.fixed.len() + 1;
        self.fixed.iter().map(|(_, w)| w).sum::<f32>() + FILE_COLUMN_MIN + spacing * n as f32
    }

    fn headings(&self) -> impl Iterator<Item = &'static str> + '_ {
        let (before, after) = self.fixed.split_at(FILE_COLUMN);
        before
            .iter()
            .map(|(h, _)| *h)
            .chain(std::iter::once("file"))
            .chain(after.iter().map(|(h, _)| *h))
    }
}

/// The rows, drawn only where they are visible (a thousand rows cost what a screenful does); the
/// file column as given (the rest of the width, or its least in a narrow window).
fn table(
    app: &EarshotApp,
    ui: &mut egui::Ui,
    columns: &Columns,
    shown: &[usize],
    file: Column,
    commands: &mut Vec<Command>,
) {
    let row_height = ui.spacing().interact_size.y + 2.0;
    let mut builder = TableBuilder::new(ui)
        .id_salt("results")
        .striped(true)
        .cell_layout(egui::Layout::left_to_right(egui::Align::Center))
        .auto_shrink([false, false]);
    for (k, (_, width)) in columns.fixed.iter().enumerate() {
        if k == FILE_COLUMN {
            builder = builder.column(file.at_least(FILE_COLUMN_MIN).clip(true));
        }
        builder = builder.column(Column::exact(*width).clip(true));
    }
    if let Some(row) = (app.scroll_results_to).and_then(|i| shown.iter().position(|&s| s == i)) {
        builder = builder.scroll_to_row(row, None);
    }
    builder
        .header(row_height, |mut header| {
            for h in columns.headings() {
                header.col(|ui| heading(app, ui, h, commands));
            }
        })
        .body(|body| {
            body.rows(row_height, shown.len(), |mut row| {
                let i = shown[row.index()];
                row.set_selected(app.selected == Some(i));
                result_row(app, &mut row, i, &app.results[i], commands);
            });
        });
}

/// A column's heading: a button that sorts by it, with the way it is sorted.
fn heading(app: &EarshotApp, ui: &mut egui::Ui, text: &str, commands: &mut Vec<Command>) {
    let Some(key) = sort_key(text) else {
        ui.strong(text);
        return;
    };
    let arrow = match app.results_sort {
        Some((k, Order::Ascending)) if k == key => " ↑",
        Some((k, Order::Descending)) if k == key => " ↓",
        _ => "",
    };
    let button =
        egui::Button::new(egui::RichText::new(format!("{text}{arrow}")).strong()).frame(false);
    if ui
        .add(button)
        .on_hover_text(format!("Sort by {text}"))
        .clicked()
    {
        commands.push(Command::SortResults(key));
    }
}

fn result_row(
    app: &EarshotApp,
    row: &mut TableRow<'_, '_>,
    i: usize,
    shown: &ResultRow,
    commands: &mut Vec<Command>,
) {
    let hit = &shown.hit;
    row.col(|ui| {
        ui.label(hit.rank.to_string());
    });
    row.col(|ui| {
        let more = more_places(app, i);
        if more > 0 {
            let open = app.expanded_files.contains(&hit.path);
            let (text, tip) = match open {
                true => (format!("−{more}"), "Hide the other places in this file"),
                false => (
                    format!("+{more}"),
                    "The clip occurs here more than once: show every place",
                ),
            };
            if ui.small_button(text).on_hover_text(tip).clicked() {
                commands.push(Command::ExpandFile(hit.path.clone()));
            }
        }
        let name = file_name(&hit.path);
        if ui
            .selectable_label(app.selected == Some(i), name)
            .on_hover_text(shown_path(&hit.path))
            .clicked()
        {
            commands.push(Command::SelectResult(i));
        }
    });
    row.col(|ui| {
        ui.label(clock(hit.start_s)).on_hover_text(format!(
            "{} – {}",
            clock(hit.start_s),
            clock(hit.end_s)
        ));
    });
    row.col(|ui| score_cell(ui, hit));
    row.col(|ui| {
        // Clicking the active mark again clears it.
        for (value, text, tip) in [(true, "yes", "Relevant"), (false, "no", "Not relevant")] {
            let active = shown.relevant == Some(value);
            if ui
                .selectable_label(active, text)
                .on_hover_text(tip)
                .clicked()
            {
                commands.push(Command::Mark(i, (!active).then_some(value)));
            }
        }
    });
    row.col(|ui| {
        if audio::play_button(app, ui, "play", "Play from the matched time") {
            commands.push(Command::play_match(hit));
        }
    });
    row.col(|ui| {
        if ui
            .small_button("query")
            .on_hover_text("Search with this result's matched part")
            .clicked()
        {
            commands.push(Command::query_match(hit));
        }
    });
    row.col(|ui| {
        ui.label(&hit.label).on_hover_text(&hit.label);
    });
    row.col(|ui| {
        // A model without hash codes ranks by cosine alone: no distance to show.
        match hit.codes.as_ref().is_some_and(|c| c.bits == 0) {
            true => ui.weak("–"),
            false => ui.label(hit.hamming.to_string()),
        };
    });
}

fn score_cell(ui: &mut egui::Ui, hit: &crate::search::Hit) {
    let found = if hit.found == Some(true) {
        "  found"
    } else {
        ""
    };
    match hit.correlation {
        Some(c) => ui
            .label(format!("{:.3}  audio {c:.2}{found}", hit.score))
            .on_hover_text("Checked against the file's audio: the query's own samples are here, placed to the sample (their correlation)"),
        None => ui.label(format!("{:.3}{found}", hit.score)),
    };
}
