//! Where an encoder looks in a clip, measured by hiding parts of it (occlusion): each cell of a
//! grid over the clip's spectrogram (a band of frequencies over a stretch of time) is set to the
//! clip's own floor and the clip encoded again; the cell's value is how far
//! that moves the embedding (1 - cosine). It follows the sound: over 50 ESC-50 clips (fold 1, one
//! per class), the events encoder's map, averaged over time, correlates 0.57 with the clip's own
//! band energy, where the network's attention mask correlated -0.08 (the mask favours the same
//! bands whatever it hears, so every clip looked alike). Maps of different clips correlate 0.46,
//! as their band energies do (0.50); see the test
//! `on_esc50_the_events_attention_follows_each_clip_s_band_energy`.

use super::{AttentionMap, EncodeError, Encoded, Encoder};

/// Rows of the map: bands of frequency, lowest first, each an equal share of the features.
pub const ROWS: usize = 16;
/// The most time columns a map has, and the fewest frames a column takes.
pub const MAX_COLUMNS: usize = 8;
const MIN_COLUMN_FRAMES: usize = 25;
/// The most frames a map covers (from the start of what it is given): hiding a stretch of a long
/// clip costs an encoding of all of it, `ROWS x MAX_COLUMNS` times.
pub const MAX_FRAMES: usize = 1_000;
/// The share of the clip's values (all bands, all frames) below which its floor lies: what a
/// hidden cell is set to. A level the clip itself has, unlike digital silence; and one taken over
/// the whole spectrogram, since a band's own level over time would hide nothing of a steady tone.
const FLOOR_QUANTILE: f64 = 0.2;

/// The occlusion map of `frames` (frame-major, `dims` values a frame) for `encoder`, over
/// `kept` (the frames worth looking at, cut to [`MAX_FRAMES`]); `None` when nothing is kept.
pub fn occlusion_map(
    encoder: &dyn Encoder,
    frames: &[f32],
    dims: usize,
    kept: std::ops::Range<usize>,
) -> Result<Option<AttentionMap>, EncodeError> {
    let n_frames = frames.len() / dims.max(1);
    let kept = kept.start.min(n_frames)..kept.end.min(n_frames).min(kept.start + MAX_FRAMES);
    if kept.is_empty() || dims < ROWS {
        return Ok(None);
    }
    let columns = (kept.len() / MIN_COLUMN_FRAMES).clamp(1, MAX_COLUMNS);
    let clip = &frames[kept.start * dims..kept.end * dims];
    let floor = floor(clip);
    let mut copies = vec![clip.to_vec()];
    for r in 0..ROWS {
        for c in 0..columns {
            let mut hidden = clip.to_vec();
            for f in kept.len() * c / columns..kept.len() * (c + 1) / columns {
                for b in dims * r / ROWS..dims * (r + 1) / ROWS {
                    hidden[f * dims + b] = floor;
                }
            }
            copies.push(hidden);
        }
    }
    let refs: Vec<&[f32]> = copies.iter().map(Vec::as_slice).collect();
    let mut encoded = Encoded::default();
    encoder.encode(&refs, &mut encoded)?;
    let dim = encoded.embeddings.len() / copies.len();
    let mut embeddings = encoded.embeddings.chunks_exact(dim.max(1));
    let whole = embeddings.next().unwrap_or_default();
    let values = embeddings.map(|e| 1.0 - cosine(whole, e)).collect();
    Ok(Some(AttentionMap {
        rows: ROWS,
        columns,
        values,
        frames: kept,
        row_edges_hz: None,
    }))
}

/// The [`FLOOR_QUANTILE`] of `values` (not empty).
fn floor(values: &[f32]) -> f32 {
    let mut sorted = values.to_vec();
    let at = ((sorted.len() - 1) as f64 * FLOOR_QUANTILE) as usize;
    *sorted.select_nth_unstable_by(at, f32::total_cmp).1
}

/// As `index::vector::cosine`, which the encoders, upstream of the store, do not import.
fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut ab, mut aa, mut bb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.iter().zip(b) {
        (ab, aa, bb) = (ab + x * y, aa + x * x, bb + y * y);
    }
    ab / (aa * bb).sqrt().max(f32::EPSILON)
}
