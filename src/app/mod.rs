//! The desktop application (egui). It calls the engine; the engine never calls it.

use eframe::egui;

/// Opens the main window and runs until it is closed.
pub fn run() -> anyhow::Result<()> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("Earshot")
            .with_app_id("earshot")
            .with_inner_size([1100.0, 720.0])
            .with_min_inner_size([640.0, 400.0]),
        ..Default::default()
    };
    eframe::run_native(
        "Earshot",
        options,
        Box::new(|cc| Ok(Box::new(EarshotApp::new(cc)))),
    )
    .map_err(|e| anyhow::anyhow!("cannot open the Earshot window: {e}"))
}

/// The application; panels arrive with the app issue.
#[derive(Default)]
pub struct EarshotApp {}

impl EarshotApp {
    pub fn new(_cc: &eframe::CreationContext<'_>) -> Self {
        Self::default()
    }
}

impl eframe::App for EarshotApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        egui::CentralPanel::default().show(ui, |ui| {
            ui.vertical_centered(|ui| {
                ui.add_space(ui.available_height() / 3.0);
                ui.heading("Earshot");
                ui.label("Explore audio collections by example.");
                ui.add_space(8.0);
                ui.weak("The library, query and results panels are on their way.");
                ui.weak("Meanwhile, from a terminal: `earshot index FOLDER`, then `earshot query CLIP`.");
            });
        });
    }
}
