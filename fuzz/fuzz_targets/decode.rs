//! The decoding wrapper on arbitrary bytes: probing, demuxing, decoding, down-mixing and
//! resampling must return audio or an error, never panic, hang or allocate without bound.
#![no_main]

use std::io::Cursor;
use std::ops::ControlFlow;
use std::path::Path;

use earshot::audio::AudioSource;
use libfuzzer_sys::fuzz_target;

/// Format hints tried: the first byte picks one (or none), as a file's extension would.
const HINTS: [Option<&str>; 7] = [
    None,
    Some("wav"),
    Some("flac"),
    Some("mp3"),
    Some("ogg"),
    Some("aiff"),
    Some("m4a"),
];
/// Output samples after which decoding stops (a minute at 16 kHz): headers may promise hours.
const MAX_SAMPLES: usize = 16_000 * 60;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let hint = HINTS[usize::from(pick) % HINTS.len()];
    let source = Box::new(Cursor::new(bytes.to_vec()));
    let Ok(audio) = AudioSource::from_media_source(Path::new("fuzz-input"), source, hint) else {
        return;
    };
    let mut samples = 0usize;
    if let Ok(stats) = audio.stream(|chunk| {
        assert!(chunk.iter().all(|x| x.is_finite()), "non-finite sample delivered");
        samples += chunk.len();
        if samples > MAX_SAMPLES {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }) {
        assert_eq!(stats.output_samples as usize, samples);
    }
});
