//! The selected result beside the query: both spectrograms with their attention, the matched
//! region marked, the result's whole file with every result in it, and the two hash codes as bit
//! grids with the differing bits highlighted.

use eframe::egui::{self, Vec2};

use super::spectrogram_view;
use super::text::{clock, file_name};
use super::{Command, EarshotApp, audio};

const SPECTROGRAM_HEIGHT: f32 = 110.0;
const BIT_CELL: f32 = 14.0;

pub fn show(app: &mut EarshotApp, ui: &mut egui::Ui) {
    ui.heading("Inspector");
    let show_attention = app.settings.show_attention;
    if app.tasks.inspect.is_some() {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label("reading the result…");
        });
    }
    let inspected = match &app.inspector {
        Some(Ok(i)) => i,
        Some(Err(e)) => {
            ui.colored_label(ui.visuals().error_fg_color, e);
            return;
        }
        None => {
            if app.tasks.inspect.is_none() {
                ui.weak("Select a result to compare it with the query.");
            }
            return;
        }
    };
    let hit = inspected.hit.clone();
    ui.strong(file_name(&hit.path))
        .on_hover_text(super::text::shown_path(&hit.path));
    ui.label(format!(
        "{} · {} – {} · score {:.3}",
        hit.label,
        clock(hit.start_s),
        clock(hit.end_s),
        hit.score
    ));
    if let Some(c) = hit.correlation {
        ui.label(format!(
            "Confirmed against the file's audio: the query's samples correlate {c:.2} with the file's here"
        ));
    }
    let mut commands = Vec::new();
    ui.horizontal(|ui| {
        if audio::play_button(
            app,
            ui,
            "Play match",
            "Play the result from the matched time",
        ) {
            commands.push(Command::play_match(&hit));
        }
        if ui
            .button("Search with it")
            .on_hover_text("Make the matched part the query")
            .clicked()
        {
            commands.push(Command::query_match(&hit));
        }
    });
    let width = ui.available_width();
    ui.add_space(4.0);
    ui.label("Result (matched part outlined)");
    let Some(Ok(inspected)) = &app.inspector else {
        return;
    };
    let attention = inspected
        .attention
        .as_ref()
        .and_then(Option::as_ref)
        .filter(|_| show_attention);
    let (_, rect) = spectrogram_view::show(
        ui,
        &inspected.clip,
        &mut app.inspector_textures,
        Vec2::new(width, SPECTROGRAM_HEIGHT),
        attention,
    );
    spectrogram_view::draw_region(
        &ui.painter_at(rect),
        rect,
        inspected.clip.duration_s(),
        inspected.matched,
        false,
    );
    super::file_view::show(app, ui, &hit.path);
    if let Some(query) = &mut app.query {
        ui.label("Query");
        let attention = query
            .attention
            .as_ref()
            .and_then(Option::as_ref)
            .filter(|_| show_attention);
        let (_, rect) = spectrogram_view::show(
            ui,
            &query.clip,
            &mut query.texture,
            Vec2::new(width, SPECTROGRAM_HEIGHT * 0.8),
            attention,
        );
        if let Some(region) = query.selection {
            spectrogram_view::draw_region(
                &ui.painter_at(rect),
                rect,
                query.clip.duration_s(),
                region,
                false,
            );
        }
    }
    codes(ui, &hit);
    for c in commands {
        app.push(c);
    }
}

fn codes(ui: &mut egui::Ui, hit: &crate::search::Hit) {
    ui.add_space(6.0);
    let Some(codes) = &hit.codes else {
        return;
    };
    let bits = codes.bits;
    if bits == 0 {
        ui.weak(format!(
            "Ranked by the cosine of the embeddings ({:.3}): this model has no hash codes yet.",
            hit.score
        ));
        return;
    }
    ui.label(
        egui::RichText::new(format!("Hamming distance {} of {bits} bits", hit.hamming)).strong(),
    );
    ui.horizontal(|ui| {
        ui.vertical(|ui| {
            ui.label("query segment");
            spectrogram_view::bit_grid(ui, &codes.query, &codes.library, bits, BIT_CELL);
        });
        ui.add_space(12.0);
        ui.vertical(|ui| {
            ui.label("matched segment");
            spectrogram_view::bit_grid(ui, &codes.library, &codes.query, bits, BIT_CELL);
        });
    });
    ui.weak("blue, crossed: bits that differ");
}
