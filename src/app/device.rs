//! Playback and microphone capture (rodio over cpal). Both are optional at run time: on a
//! machine without a sound device they return an error that says why, and the app disables its
//! play and record buttons instead of failing.

use std::num::NonZero;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rodio::Source;

use crate::audio::TARGET_SAMPLE_RATE;
use crate::audio::resample::StreamResampler;

#[derive(Debug, Clone, thiserror::Error)]
pub enum DeviceError {
    #[error("no sound output: {0}")]
    Output(String),
    #[error("no microphone: {0}")]
    Input(String),
}

/// An open output device with one player on it.
pub struct Playback {
    // Dropping the sink closes the device, so it lives as long as the player.
    _sink: rodio::MixerDeviceSink,
    player: rodio::Player,
}

impl Playback {
    pub fn open() -> Result<Self, DeviceError> {
        let mut sink = rodio::DeviceSinkBuilder::open_default_sink()
            .map_err(|e| DeviceError::Output(e.to_string()))?;
        sink.log_on_drop(false);
        let player = rodio::Player::connect_new(sink.mixer());
        Ok(Self {
            _sink: sink,
            player,
        })
    }

    /// Stops whatever plays and plays `samples` (mono at `rate` Hz).
    pub fn play(&self, samples: Vec<f32>, rate: u32) {
        let (Some(channels), Some(rate)) = (NonZero::new(1), NonZero::new(rate.max(1))) else {
            return;
        };
        self.player.clear();
        self.player
            .append(rodio::buffer::SamplesBuffer::new(channels, rate, samples));
        self.player.play();
    }

    pub fn stop(&self) {
        self.player.clear();
    }

    pub fn is_playing(&self) -> bool {
        !self.player.empty() && !self.player.is_paused()
    }
}

/// Checks once whether an output and an input device can be opened (slow on some systems:
/// call it off the UI thread).
pub fn probe() -> (Result<(), DeviceError>, Result<(), DeviceError>) {
    let output = Playback::open().map(drop);
    let input = rodio::microphone::MicrophoneBuilder::new()
        .default_device()
        .map_err(|e| DeviceError::Input(e.to_string()))
        .and_then(|b| {
            b.default_config()
                .map_err(|e| DeviceError::Input(e.to_string()))
        })
        .map(drop);
    (output, input)
}

/// Microphone capture on its own thread, until [`Recording::finish`].
pub struct Recording {
    samples: Arc<Mutex<Vec<f32>>>,
    /// Peak level of the last block, as `f32` bits (0..1).
    level: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
    rate: Arc<AtomicU32>,
    thread: Option<JoinHandle<Result<(), DeviceError>>>,
}

impl Recording {
    /// Starts capturing from the default microphone; fails at once when there is none.
    pub fn start() -> Result<Self, DeviceError> {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let level = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let rate = Arc::new(AtomicU32::new(0));
        let (opened_tx, opened_rx) = std::sync::mpsc::channel();
        let thread = {
            let (samples, level, stop, rate) =
                (samples.clone(), level.clone(), stop.clone(), rate.clone());
            // cpal streams cannot move between threads: open it on the capture thread.
            std::thread::spawn(move || {
                let mic = match open_microphone() {
                    Ok(mic) => {
                        let _ = opened_tx.send(Ok(()));
                        mic
                    }
                    Err(e) => {
                        let _ = opened_tx.send(Err(e.clone()));
                        return Err(e);
                    }
                };
                capture(mic, &samples, &level, &stop, &rate);
                Ok(())
            })
        };
        match opened_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => Ok(Self {
                samples,
                level,
                stop,
                rate,
                thread: Some(thread),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                stop.store(true, Ordering::Relaxed);
                Err(DeviceError::Input("the microphone did not open".into()))
            }
        }
    }

    pub fn level(&self) -> f32 {
        f32::from_bits(self.level.load(Ordering::Relaxed))
    }

    pub fn elapsed_s(&self) -> f64 {
        let rate = self.rate.load(Ordering::Relaxed).max(1);
        let n = self.samples.lock().map_or(0, |s| s.len());
        n as f64 / f64::from(rate)
    }

    /// Stops and returns what was captured, mono at 16 kHz.
    pub fn finish(mut self) -> Vec<f32> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let captured = self
            .samples
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default();
        let rate = self.rate.load(Ordering::Relaxed);
        to_engine_rate(&captured, rate)
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn open_microphone() -> Result<rodio::microphone::Microphone, DeviceError> {
    let input = |e: &dyn std::fmt::Display| DeviceError::Input(e.to_string());
    rodio::microphone::MicrophoneBuilder::new()
        .default_device()
        .map_err(|e| input(&e))?
        .default_config()
        .map_err(|e| input(&e))?
        .open_stream()
        .map_err(|e| input(&e))
}

/// Reads the microphone in blocks of ~20 ms, mixing to mono, until `stop`.
fn capture(
    mut mic: rodio::microphone::Microphone,
    samples: &Mutex<Vec<f32>>,
    level: &AtomicU32,
    stop: &AtomicBool,
    rate: &AtomicU32,
) {
    let channels = usize::from(mic.channels().get());
    let sample_rate = mic.sample_rate().get();
    rate.store(sample_rate, Ordering::Relaxed);
    let block = (sample_rate as usize / 50).max(1) * channels;
    let mut buffer = Vec::with_capacity(block);
    while !stop.load(Ordering::Relaxed) {
        buffer.clear();
        buffer.extend(mic.by_ref().take(block));
        if buffer.is_empty() {
            break; // the device went away
        }
        let mono: Vec<f32> = buffer
            .chunks(channels)
            .map(|c| c.iter().sum::<f32>() / c.len() as f32)
            .collect();
        let peak = mono.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        level.store(peak.min(1.0).to_bits(), Ordering::Relaxed);
        if let Ok(mut s) = samples.lock() {
            s.extend_from_slice(&mono);
        }
    }
}

/// Mono samples at `rate` resampled to the engine's 16 kHz.
fn to_engine_rate(samples: &[f32], rate: u32) -> Vec<f32> {
    if rate == TARGET_SAMPLE_RATE || samples.is_empty() {
        return samples.to_vec();
    }
    match StreamResampler::new(rate, TARGET_SAMPLE_RATE) {
        Ok(mut r) => {
            let mut out = r.push(samples).to_vec();
            out.extend_from_slice(r.finish());
            out
        }
        Err(_) => Vec::new(),
    }
}
