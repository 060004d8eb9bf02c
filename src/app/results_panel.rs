//! The ranked results: select, play from the matched time, mark relevant or not, query with a
//! result, export the table with the marks.

use std::path::{Path, PathBuf};

use eframe::egui;

use super::text::{clock, file_name, shown_path};
use super::{Command, EarshotApp, ResultRow, audio};
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
    ui.horizontal(|ui| {
        ui.strong("Results");
        let marked = app.results.iter().filter(|r| r.relevant.is_some()).count();
        ui.weak(format!("{} shown, {marked} marked", app.results.len()))
            .on_hover_text("Marks are kept with the library: they come back when the same query finds the same moments, and the Models window can learn codes from them.");
        if ui
            .add_enabled(!app.results.is_empty(), egui::Button::new("Export CSV"))
            .on_hover_text("Write the table, with your marks, to a CSV file")
            .clicked()
        {
            app.push(Command::ExportCsv);
        }
        ui.weak("up/down: move · space: play");
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
    egui::ScrollArea::vertical()
        .auto_shrink([false, false])
        .show(ui, |ui| {
            egui::Grid::new("results")
                .striped(true)
                .num_columns(9)
                .spacing([12.0, 4.0])
                .show(ui, |ui| {
                    for h in [
                        "#",
                        "file",
                        "label",
                        "time",
                        "hamming",
                        "score",
                        "",
                        "relevant?",
                        "",
                    ] {
                        ui.strong(h);
                    }
                    ui.end_row();
                    for (i, row) in app.results.iter().enumerate() {
                        result_row(app, ui, i, row, &mut commands);
                        ui.end_row();
                    }
                });
        });
    for c in commands {
        app.push(c);
    }
}

fn result_row(
    app: &EarshotApp,
    ui: &mut egui::Ui,
    i: usize,
    row: &ResultRow,
    commands: &mut Vec<Command>,
) {
    let hit = &row.hit;
    ui.label(hit.rank.to_string());
    let name = file_name(&hit.path);
    let selected = app.selected == Some(i);
    let response = ui
        .selectable_label(selected, name)
        .on_hover_text(shown_path(&hit.path));
    if response.clicked() {
        commands.push(Command::SelectResult(i));
    }
    if selected && response.ctx.memory(|m| m.focused().is_none()) {
        response.scroll_to_me(None);
    }
    ui.label(&hit.label);
    ui.label(format!("{} – {}", clock(hit.start_s), clock(hit.end_s)));
    // A model without hash codes ranks by cosine alone: no distance to show.
    match hit.codes.as_ref().is_some_and(|c| c.bits == 0) {
        true => ui.weak("–"),
        false => ui.label(hit.hamming.to_string()),
    };
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
    if audio::play_button(app, ui, "play", "Play from the matched time") {
        commands.push(Command::PlayFile(hit.path.clone(), hit.start_s.max(0.0)));
    }
    ui.horizontal(|ui| {
        // Clicking the active mark again clears it.
        for (value, text, tip) in [(true, "yes", "Relevant"), (false, "no", "Not relevant")] {
            let active = row.relevant == Some(value);
            if ui
                .selectable_label(active, text)
                .on_hover_text(tip)
                .clicked()
            {
                commands.push(Command::Mark(i, (!active).then_some(value)));
            }
        }
    });
    if ui
        .small_button("query")
        .on_hover_text("Search with this result's matched part")
        .clicked()
    {
        commands.push(Command::QueryFile(
            hit.path.clone(),
            Some((hit.start_s.max(0.0), hit.end_s)),
        ));
    }
}

/// Writes the results and marks to a new CSV file in `dir`; returns its path.
pub fn export_csv(
    dir: &Path,
    query: &str,
    mode: Mode,
    rows: &[ResultRow],
) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let stem: String = query
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = (1..)
        .map(|n| dir.join(format!("{stem}-{}-{n}.csv", mode.name())))
        .find(|p| !p.exists())
        .unwrap_or_else(|| dir.join("results.csv"));
    let mut out = csv::Writer::from_path(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let write = |out: &mut csv::Writer<std::fs::File>| -> Result<(), csv::Error> {
        out.write_record([
            "query",
            "mode",
            "rank",
            "path",
            "label",
            "start_s",
            "end_s",
            "hamming",
            "score",
            "correlation",
            "relevant",
        ])?;
        for r in rows {
            let h = &r.hit;
            let mark = match r.relevant {
                Some(true) => "yes",
                Some(false) => "no",
                None => "",
            };
            out.write_record([
                query,
                mode.name(),
                &h.rank.to_string(),
                &h.path.to_string_lossy(),
                &h.label,
                &format!("{:.3}", h.start_s),
                &format!("{:.3}", h.end_s),
                &h.hamming.to_string(),
                &format!("{:.4}", h.score),
                &h.correlation.map_or(String::new(), |c| format!("{c:.4}")),
                mark,
            ])?;
        }
        out.flush()?;
        Ok(())
    };
    write(&mut out).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}
