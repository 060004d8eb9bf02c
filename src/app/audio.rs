//! Sound devices as the app sees them: probed once in the background; play and record buttons
//! are disabled, with the reason as their tooltip, when a device is missing.

use std::path::PathBuf;

use eframe::egui;

use super::device::{self, Playback, Recording};
use super::task::{self, Task};
use super::{Command, EarshotApp};
use crate::audio::TARGET_SAMPLE_RATE;

/// Longest stretch of a file played from a result (decoding more would only cost time).
const PLAY_SECONDS: f64 = 30.0;

pub struct AudioState {
    /// `Ok` when a device was found; the reason otherwise. `None` while probing.
    output: Option<Result<(), String>>,
    input: Option<Result<(), String>>,
    probe: Option<Task<(), DeviceProbe>>,
    playback: Option<Playback>,
    recording: Option<Recording>,
    /// A file being decoded for playback.
    loading: Option<Task<(), Result<Vec<f32>, String>>>,
    pub error: Option<String>,
}

/// What probing the sound devices found: each `Ok`, or why it cannot be used.
struct DeviceProbe {
    output: Result<(), String>,
    input: Result<(), String>,
}

impl AudioState {
    pub fn new(ctx: &egui::Context, probe: bool) -> Self {
        let mut state = Self {
            output: None,
            input: None,
            probe: None,
            playback: None,
            recording: None,
            loading: None,
            error: None,
        };
        if probe {
            state.probe = Some(Task::spawn(ctx, "devices", |_| {
                let (output, input) = device::probe();
                DeviceProbe {
                    output: output.map_err(|e| e.to_string()),
                    input: input.map_err(|e| e.to_string()),
                }
            }));
        } else {
            let none = || Err("sound devices are not used in this session".to_owned());
            (state.output, state.input) = (Some(none()), Some(none()));
        }
        state
    }

    pub fn is_busy(&self) -> bool {
        self.probe.is_some() || self.loading.is_some()
    }

    pub fn poll(&mut self) {
        match task::finished(&mut self.probe) {
            Some(Ok(found)) => (self.output, self.input) = (Some(found.output), Some(found.input)),
            Some(Err(e)) => (self.output, self.input) = (Some(Err(e.clone())), Some(Err(e))),
            None => {}
        }
        if let Some(result) = task::finished_flat(&mut self.loading) {
            match result {
                Ok(samples) => self.play_samples(samples),
                Err(e) => self.error = Some(e),
            }
        }
    }

    /// Why playback is unavailable (`None` when it is available).
    pub fn output_problem(&self) -> Option<String> {
        match &self.output {
            None => Some("looking for a sound output…".into()),
            Some(Err(e)) => Some(format!("Playback is off: {e}")),
            Some(Ok(())) => None,
        }
    }

    pub fn input_problem(&self) -> Option<String> {
        match &self.input {
            None => Some("looking for a microphone…".into()),
            Some(Err(e)) => Some(format!("Recording is off: {e}")),
            Some(Ok(())) => None,
        }
    }

    pub fn is_recording(&self) -> bool {
        self.recording.is_some()
    }

    pub fn is_playing(&self) -> bool {
        self.playback.as_ref().is_some_and(Playback::is_playing)
    }

    pub fn play_samples(&mut self, samples: Vec<f32>) {
        if self.output_problem().is_some() {
            return;
        }
        if self.playback.is_none() {
            match Playback::open() {
                Ok(p) => self.playback = Some(p),
                Err(e) => {
                    self.output = Some(Err(e.to_string()));
                    return;
                }
            }
        }
        if let Some(p) = &self.playback {
            p.play(samples, TARGET_SAMPLE_RATE);
        }
    }

    /// Decodes `path` from `from_s` in the background, then plays it.
    pub fn play_file(&mut self, ctx: &egui::Context, path: PathBuf, from_s: f64) {
        if self.output_problem().is_some() {
            return;
        }
        self.loading = Some(Task::spawn(ctx, "play", move |_| {
            let window = Some((from_s, from_s + PLAY_SECONDS));
            let clip = crate::session::Clip::read(&path, window).map_err(|e| e.to_string())?;
            Ok(clip.samples().to_vec())
        }));
    }

    pub fn stop(&mut self) {
        if let Some(p) = &self.playback {
            p.stop();
        }
    }

    /// Starts recording, or stops and returns what was recorded.
    pub fn toggle_recording(&mut self) -> Option<Vec<f32>> {
        if let Some(r) = self.recording.take() {
            return Some(r.finish());
        }
        if self.input_problem().is_some() {
            return None;
        }
        match Recording::start() {
            Ok(r) => self.recording = Some(r),
            Err(e) => self.input = Some(Err(e.to_string())),
        }
        None
    }
}

/// The record button, with a level meter and the elapsed time while recording.
pub fn record_button(app: &mut EarshotApp, ui: &mut egui::Ui) {
    if let Some(r) = &app.audio.recording {
        let stop = ui
            .button("Stop")
            .on_hover_text("Stop and search with the recording (Ctrl+R)")
            .clicked();
        ui.add(egui::ProgressBar::new(r.level()).desired_width(80.0));
        ui.label(format!("{:.1} s", r.elapsed_s()));
        ui.ctx().request_repaint();
        if stop {
            app.push(Command::ToggleRecording);
        }
        return;
    }
    let problem = app.audio.input_problem();
    let button = ui.add_enabled(problem.is_none(), egui::Button::new("Record"));
    let button = match problem {
        Some(why) => button.on_disabled_hover_text(why),
        None => button.on_hover_text("Record a query from the microphone (Ctrl+R)"),
    };
    if button.clicked() {
        app.push(Command::ToggleRecording);
    }
}

/// A play button that is disabled, saying why, without a sound output.
pub fn play_button(app: &EarshotApp, ui: &mut egui::Ui, label: &str, tip: &str) -> bool {
    let problem = app.audio.output_problem();
    let button = ui.add_enabled(problem.is_none(), egui::Button::new(label));
    let button = match problem {
        Some(why) => button.on_disabled_hover_text(why),
        None => button.on_hover_text(tip),
    };
    button.clicked()
}
