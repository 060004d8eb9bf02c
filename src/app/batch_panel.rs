//! The last batch search's results in a window: every clip of the folder with what it found, one
//! table (the CSV written beside it holds the same rows). A clip's name searches with it in the
//! main window; ▶ plays a result from its matched time.

use eframe::egui;
use egui_extras::{Column, TableBuilder};

use super::text::{clock, file_name, shown_path};
use super::{Command, EarshotApp, audio};
use crate::model::Mode;

pub fn show(app: &mut EarshotApp, ctx: &egui::Context) {
    let Some(table) = &app.batch_table else {
        return;
    };
    let mut open = true;
    let mut commands = Vec::new();
    let title = format!("Batch results: {}", file_name(&table.folder));
    egui::Window::new(title)
        .open(&mut open)
        .default_size([760.0, 420.0])
        .pivot(egui::Align2::CENTER_CENTER)
        .default_pos(ctx.content_rect().center())
        .show(ctx, |ui| {
            ui.style_mut().wrap_mode = Some(egui::TextWrapMode::Truncate);
            ui.weak(&table.summary);
            let found_column = table.mode == Mode::Fingerprint;
            let row_height = ui.text_style_height(&egui::TextStyle::Body) + 6.0;
            let mut builder = TableBuilder::new(ui)
                .id_salt("batch table")
                .striped(true)
                .cell_layout(egui::Layout::left_to_right(egui::Align::Center))
                .auto_shrink([false, false])
                .column(Column::initial(180.0).at_least(80.0).clip(true))
                .column(Column::remainder().at_least(120.0).clip(true))
                .column(Column::initial(100.0).at_least(50.0).clip(true))
                .column(Column::exact(70.0))
                .column(Column::exact(55.0));
            if found_column {
                builder = builder.column(Column::exact(60.0));
            }
            builder = builder.column(Column::exact(30.0));
            builder
                .header(row_height, |mut header| {
                    let mut headings = vec!["query", "file", "label", "time", "score"];
                    if found_column {
                        headings.push("found");
                    }
                    headings.push("play");
                    for h in headings {
                        header.col(|ui| {
                            ui.strong(h);
                        });
                    }
                })
                .body(|body| {
                    body.rows(row_height, table.rows.len(), |mut row| {
                        let r = &table.rows[row.index()];
                        row.col(|ui| {
                            let link = ui.link(&r.query_name).on_hover_text(format!(
                                "{}\nsearch with this clip",
                                shown_path(&r.query)
                            ));
                            if link.clicked() {
                                commands.push(Command::QueryFile(r.query.clone(), None));
                            }
                        });
                        row.col(|ui| {
                            ui.label(file_name(&r.hit.path))
                                .on_hover_text(shown_path(&r.hit.path));
                        });
                        row.col(|ui| {
                            ui.label(&r.hit.label);
                        });
                        row.col(|ui| {
                            ui.label(clock(r.hit.start_s));
                        });
                        row.col(|ui| {
                            ui.label(format!("{:.3}", r.hit.score));
                        });
                        if found_column {
                            row.col(|ui| {
                                ui.label(match r.hit.found {
                                    Some(true) => "found",
                                    _ => "no",
                                });
                            });
                        }
                        row.col(|ui| {
                            if audio::play_button(app, ui, "▶", "Play from the matched time") {
                                commands.push(Command::play_match(&r.hit));
                            }
                        });
                    });
                });
        });
    if !open {
        app.batch_table = None;
    }
    for c in commands {
        app.push(c);
    }
}
