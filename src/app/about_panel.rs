//! The About window: version, the models in use and where they were found, the licenses of the
//! data behind the shipped models, and where the app keeps its files.

use eframe::egui;

use super::EarshotApp;
use crate::about;

pub fn show(app: &mut EarshotApp, ctx: &egui::Context) {
    let mut open = app.show_about;
    egui::Window::new("About Earshot")
        .open(&mut open)
        .collapsible(false)
        .resizable(false)
        .default_width(520.0)
        .pivot(egui::Align2::CENTER_CENTER)
        .default_pos(ctx.content_rect().center())
        .show(ctx, |ui| {
            ui.heading(format!("Earshot {}", about::VERSION));
            ui.label("Explore audio collections by example: similar sounds and exact matches.");
            ui.add_space(6.0);
            ui.strong("Models");
            for (mode, name, place) in &app.about_models {
                ui.label(format!("{}: {name}", mode.name()));
                ui.weak(place);
            }
            ui.add_space(6.0);
            ui.strong("Licenses");
            ui.label(format!("Earshot: {}", about::LICENSE));
            for (data, license) in about::DATA_LICENSES {
                ui.label(format!("{data}: {license}"));
            }
            ui.add_space(6.0);
            ui.strong("Files");
            ui.label(format!(
                "Libraries, settings and exports: {}",
                app.options.data_dir.display()
            ));
        });
    app.show_about = open;
}
