//! A run's checkpoint: the weights, the optimiser's moments and the caller's progress record,
//! saved after every epoch so that a stopped run resumes exactly.

use std::path::Path;

use candle_core::Device;
use candle_nn::VarMap;
use serde::Serialize;

use super::optim::{AdamW, seeded_init, sorted_vars, var_tensors};
use super::{TrainError, io_error};
use crate::model::config::write_tensors;

const CHECKPOINT_WEIGHTS: &str = "checkpoint.safetensors";
const CHECKPOINT_STATE: &str = "checkpoint.json";

/// Saves the weights, the optimiser's moments and `state` (the caller's progress record).
pub fn save_checkpoint<S: Serialize>(
    out: &Path,
    state: &S,
    varmap: &VarMap,
    adam: &AdamW,
) -> Result<(), TrainError> {
    let mut tensors = var_tensors(varmap);
    tensors.extend(adam.moments());
    write_tensors(&tensors, &out.join(CHECKPOINT_WEIGHTS))?;
    let json = out.join(CHECKPOINT_STATE);
    let text = serde_json::to_string_pretty(state).map_err(|e| TrainError::BadCheckpoint {
        path: json.clone(),
        reason: e.to_string(),
    })?;
    crate::fsutil::write_atomic(&json, text.as_bytes()).map_err(io_error(&json))
}

/// Seeds the weights and makes the optimiser; when resuming from a checkpoint in `dir`,
/// restores both and returns the saved state in place of `fresh`. `same_options` says why the
/// saved state's options differ from this run's, if they do; `step` reads its step.
pub fn start_or_resume<S: serde::de::DeserializeOwned>(
    varmap: &VarMap,
    (seed, weight_decay): (u64, f64),
    dir: &Path,
    resume: bool,
    fresh: S,
    same_options: impl Fn(&S) -> Result<(), String>,
    step: impl Fn(&S) -> usize,
) -> Result<(AdamW, S), TrainError> {
    seeded_init(varmap, seed)?;
    let mut adam = AdamW::new(varmap, weight_decay)?;
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    if resume && dir.join(CHECKPOINT_STATE).is_file() {
        let state = load_checkpoint(dir, varmap, &mut adam, same_options, step)?;
        return Ok((adam, state));
    }
    Ok((adam, fresh))
}

/// Restores weights and optimiser moments, and returns the saved state.
fn load_checkpoint<S: serde::de::DeserializeOwned>(
    out: &Path,
    varmap: &VarMap,
    adam: &mut AdamW,
    same_options: impl Fn(&S) -> Result<(), String>,
    step: impl Fn(&S) -> usize,
) -> Result<S, TrainError> {
    let json = out.join(CHECKPOINT_STATE);
    let bad = |path: &Path, reason: String| TrainError::BadCheckpoint {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read(&json).map_err(io_error(&json))?;
    let state: S = serde_json::from_slice(&text).map_err(|e| bad(&json, e.to_string()))?;
    same_options(&state).map_err(|reason| TrainError::CheckpointMismatch {
        path: json.clone(),
        reason,
    })?;
    let weights = out.join(CHECKPOINT_WEIGHTS);
    let tensors = candle_core::safetensors::load(&weights, &Device::Cpu)
        .map_err(|e| bad(&weights, e.to_string()))?;
    let get = |name: &str| {
        tensors
            .get(name)
            .ok_or_else(|| bad(&weights, format!("no tensor {name}")))
    };
    for (name, var) in sorted_vars(varmap) {
        var.set(get(&name)?)
            .map_err(|e| bad(&weights, e.to_string()))?;
    }
    for (name, _, m, v) in &mut adam.vars {
        *m = get(&format!("adam.m.{name}"))?.clone();
        *v = get(&format!("adam.v.{name}"))?.clone();
    }
    adam.step = step(&state);
    Ok(state)
}

/// Removes a finished run's checkpoint.
pub fn remove_checkpoint(out: &Path) {
    for f in [CHECKPOINT_WEIGHTS, CHECKPOINT_STATE] {
        let _ = std::fs::remove_file(out.join(f));
    }
    let _ = std::fs::remove_dir(out);
}

/// The options check of a resumed run: saved and current options must serialise the same.
pub fn same_options<O: Serialize + std::fmt::Debug>(saved: &O, current: &O) -> Result<(), String> {
    if serde_json::to_value(saved).ok() == serde_json::to_value(current).ok() {
        Ok(())
    } else {
        Err(format!("saved {saved:?}"))
    }
}
