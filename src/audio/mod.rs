//! Audio input: decoding any supported file to mono f32 at the rate asked for, and resampling.

pub mod decode;
pub mod envelope;
pub mod resample;

pub use decode::{
    AudioError, AudioSource, DecodeStats, DecodedAudio, ExcerptReader, OUTPUT_RATE_RANGE,
    SourceInfo, Stretch, TARGET_SAMPLE_RATE, decode_excerpt, decode_excerpts, decode_file,
    decode_prefix,
};
pub use envelope::Envelope;
