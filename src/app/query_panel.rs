//! The query: its spectrogram with the attention heatmap, a region dragged out to search with,
//! play, and what the search cost.

use eframe::egui::{self, Vec2};

use super::spectrogram_view::{self, REGION_COLOUR};
use super::{Command, EarshotApp, audio};

/// Shortest region a drag selects, in seconds (shorter drags are clicks).
const MIN_SELECTION_S: f64 = 0.1;
const SPECTROGRAM_HEIGHT: f32 = 140.0;

pub fn show(app: &mut EarshotApp, ui: &mut egui::Ui) {
    let loading = app.tasks.query.is_some();
    let Some(query) = &app.query else {
        ui.horizontal(|ui| {
            if loading {
                ui.spinner();
                ui.label("decoding the query…");
            } else {
                ui.add(egui::Label::new("Drop an audio file here, open one (Ctrl+O), record one (Ctrl+R), or click a file in the library to search with it.").wrap());
            }
        });
        return;
    };
    let duration = query.clip.duration_s();
    let searching = loading || app.tasks.search.is_some();
    let mut commands = Vec::new();
    ui.horizontal_wrapped(|ui| {
        for (enabled, text, tip, command) in [
            (
                app.history.can_go_back(),
                "←",
                "Back to the query before (Alt+Left)",
                Command::Back,
            ),
            (
                app.history.can_go_forward(),
                "→",
                "Forward to the next query (Alt+Right)",
                Command::Forward,
            ),
        ] {
            if ui
                .add_enabled(enabled, egui::Button::new(text).small())
                .on_hover_text(tip)
                .clicked()
            {
                commands.push(command);
            }
        }
        ui.strong(format!("Query: {}", query.clip.name))
            .on_hover_text(&query.clip.name);
        ui.weak(format!("{duration:.2} s"));
        if let Some(note) = &query.clip.note() {
            ui.colored_label(ui.visuals().warn_fg_color, note);
        }
        if audio::play_button(app, ui, "Play", "Play the query (its selection, if any)") {
            commands.push(Command::PlayQuery);
        }
        if let Some((a, b)) = query.selection {
            ui.label(
                egui::RichText::new(format!("searching {a:.2}–{b:.2} s")).color(REGION_COLOUR),
            );
            if ui
                .small_button("whole clip")
                .on_hover_text("Search with the whole clip")
                .clicked()
            {
                commands.push(Command::SelectRegion(None));
            }
        } else {
            ui.weak("drag over the spectrogram to search with a part of it");
        }
        if searching {
            ui.spinner();
        } else if let Some(outcome) = &query.outcome {
            ui.weak(format!(
                "{} in {:.0} ms ({} search)",
                super::text::count(outcome.hits.len(), "result"),
                outcome.elapsed.as_secs_f64() * 1000.0,
                outcome.mode.name()
            ));
        }
    });
    let show_attention = app.settings.show_attention;
    let Some(query) = &mut app.query else {
        return;
    };
    // Shorter in a short window (large text), so that the results keep rows in sight.
    let height = SPECTROGRAM_HEIGHT.min(ui.available_height() * 0.3);
    let size = Vec2::new(ui.available_width(), height);
    let attention = query
        .attention
        .as_ref()
        .and_then(Option::as_ref)
        .filter(|_| show_attention);
    let (response, rect) =
        spectrogram_view::show(ui, &query.clip, &mut query.texture, size, attention);
    let response = response
        .on_hover_text("Drag to select the part to search with; double-click for the whole clip");
    let painter = ui.painter_at(rect);
    let drag_id = egui::Id::unique("query-drag-start");
    let at = |x: f32| spectrogram_view::time_at(rect, duration, x);
    if response.drag_started()
        && let Some(p) = response.interact_pointer_pos()
    {
        ui.data_mut(|d| d.insert_temp(drag_id, at(p.x)));
    }
    let start: Option<f64> = ui.data(|d| d.get_temp(drag_id));
    let pointer = response.interact_pointer_pos().map(|p| at(p.x));
    match (start, pointer) {
        (Some(a), Some(b)) if response.dragged() => {
            spectrogram_view::draw_region(&painter, rect, duration, (a.min(b), a.max(b)), true);
        }
        _ => {
            if let Some(region) = query.selection {
                spectrogram_view::draw_region(&painter, rect, duration, region, true);
            }
        }
    }
    if response.drag_stopped() {
        if let (Some(a), Some(b)) = (start, pointer) {
            let (a, b) = (a.min(b), a.max(b));
            if b - a >= MIN_SELECTION_S {
                commands.push(Command::SelectRegion(Some((a, b))));
            }
        }
        ui.data_mut(|d| d.remove::<f64>(drag_id));
    }
    if response.double_clicked() {
        commands.push(Command::SelectRegion(None));
    }
    if let Some(error) = &query.error {
        ui.colored_label(ui.visuals().error_fg_color, super::text::drawable(error));
    }
    for c in commands {
        app.push(c);
    }
}
