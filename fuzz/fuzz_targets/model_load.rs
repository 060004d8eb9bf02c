//! The model loader on arbitrary files: the input is `config.json`, a NUL byte, then
//! `model.safetensors`. Both encoders must load or refuse with an error naming the file, never
//! panic or allocate from sizes in the config before the weights are checked against them.
#![no_main]

use std::path::Path;

use earshot::model::config::ModelFiles;
use earshot::model::events::{EventsConfig, EventsEncoder};
use earshot::model::fingerprint::{FingerprintConfig, FingerprintEncoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (config, weights) = (&data[..split], data.get(split + 1..).unwrap_or_default());
    let dir = Path::new("/fuzz/model");
    let named = |e: earshot::model::config::ModelError| {
        assert!(e.to_string().contains("/fuzz/model"), "{e}");
    };
    match ModelFiles::<EventsConfig>::from_bytes(dir, config, weights.to_vec()) {
        Ok(files) => {
            if let Err(e) = EventsEncoder::from_files(files) {
                named(e);
            }
        }
        Err(e) => named(e),
    }
    match ModelFiles::<FingerprintConfig>::from_bytes(dir, config, weights.to_vec()) {
        Ok(files) => {
            if let Err(e) = FingerprintEncoder::from_files(files) {
                named(e);
            }
        }
        Err(e) => named(e),
    }
});
