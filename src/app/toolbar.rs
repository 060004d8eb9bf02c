//! The toolbar: open or record a query, the search mode, the central view, overlays, About.

use eframe::egui;

use super::{Command, EarshotApp, audio, settings};
use crate::model::Mode;

/// One row, wrapped onto a second where the window is too narrow (large text scales).
pub fn show(app: &mut EarshotApp, ui: &mut egui::Ui) {
    ui.horizontal_wrapped(|ui| {
        ui.heading("Earshot");
        ui.separator();
        if ui
            .button("Open clip…")
            .on_hover_text("Search with an audio file (Ctrl+O); or drop one on the window")
            .clicked()
        {
            app.push(Command::OpenDialog);
        }
        let batching = app.tasks.batch.is_some();
        if ui
            .add_enabled(!batching, egui::Button::new("Batch…"))
            .on_hover_text("Search with every clip in a folder: their results in one table (a CSV in the exports folder)")
            .clicked()
        {
            app.push(Command::BatchDialog);
        }
        audio::record_button(app, ui);
        ui.separator();
        let mut mode = app.settings.mode;
        ui.selectable_value(&mut mode, Mode::Events, "Similar sounds")
            .on_hover_text("Other sounds like this one (events encoder)");
        ui.selectable_value(&mut mode, Mode::Fingerprint, "Exact match")
            .on_hover_text("Where this exact clip occurs, with its time (fingerprint encoder)");
        if mode != app.settings.mode {
            app.push(Command::SetMode(mode));
        }
        ui.separator();
        let view = &mut app.settings.central_view;
        ui.selectable_value(view, settings::CentralView::Results, "Results");
        ui.selectable_value(view, settings::CentralView::Map, "Map");
        ui.separator();
        let encoder = app
            .encoders
            .as_ref()
            .and_then(|e| e.get(&app.settings.mode))
            .map(|e| e.info().name.clone());
        let attention = if encoder.as_deref() == Some(crate::model::birdnet::ARCHITECTURE) {
            "Draw where BirdNET's last feature map is stronger than it is for noise: over time, a \
             quarter second at a time, and over frequency, in three bands of its mel range \
             (0.5-2.1, 2.1-5.9 and 5.9-15 kHz; the spectrogram shows up to 8 kHz)"
        } else {
            "Draw the encoder's attention over the spectrograms"
        };
        ui.checkbox(&mut app.settings.show_attention, "Attention")
            .on_hover_text(attention);
        ui.checkbox(&mut app.settings.show_inspector, "Inspector");
        ui.separator();
        if ui
            .button("Models")
            .on_hover_text("What each mode uses; import BirdNET v2.4")
            .clicked()
        {
            app.push(Command::ToggleModels);
        }
        if ui.button("About").clicked() {
            app.show_about = !app.show_about;
        }
    });
}
