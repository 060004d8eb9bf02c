//! The status bar: which models are loaded, and the latest notice.

use eframe::egui;

use super::EarshotApp;

pub fn show(app: &mut EarshotApp, ui: &mut egui::Ui) {
    ui.horizontal(|ui| {
        match (&app.encoders, &app.encoder_error) {
            (Some(e), _) => {
                let names: Vec<String> = e.values().map(|e| e.info().name.clone()).collect();
                ui.weak(format!("models: {}", names.join(", ")));
            }
            (None, Some(_)) => {
                ui.colored_label(ui.visuals().error_fg_color, "models failed to load");
            }
            (None, None) => {
                ui.spinner();
                ui.weak("loading models…");
            }
        }
        if let Some(batch) = &app.tasks.batch {
            let p = batch.progress.unwrap_or_default();
            ui.separator();
            ui.spinner();
            ui.weak(format!("batch search: {} of {} clips", p.done, p.total));
        }
        if let Some(last) = app.notices.last().cloned() {
            ui.separator();
            ui.label(&last);
            if ui
                .small_button("dismiss")
                .on_hover_text("Dismiss")
                .clicked()
            {
                app.notices.pop();
            }
        }
    });
}
