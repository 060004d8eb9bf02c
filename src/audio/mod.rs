//! Audio input: decoding any supported file to mono f32 at 16 kHz, and resampling.

pub mod decode;
#[cfg(feature = "gui")]
pub mod device;
pub mod resample;

pub use decode::{
    AudioError, AudioSource, DecodeStats, DecodedAudio, SourceInfo, TARGET_SAMPLE_RATE,
    decode_excerpt, decode_file, decode_prefix,
};
