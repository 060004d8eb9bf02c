//! A query cut into segments of its encoder's windows and encoded.

use super::SearchError;
use crate::features::FeatureMatrix;
use crate::features::segment::segments_of;
use crate::index::ModeIndex;
use crate::index::hamming;
use crate::model::{Encoded, Encoder};

/// A query cut into segments and encoded.
pub(super) struct QuerySegments {
    pub starts: Vec<usize>,
    pub encoded: Encoded,
    /// Per segment and bit, how much a differing bit counts when verifying a fingerprint match:
    /// the bit's margin over the segment's mean margin (empty without margins).
    pub bit_weights: Vec<f32>,
}

impl QuerySegments {
    /// Bits by which `code` differs from query segment `j`: each weighted by how sure the query
    /// is of it (weights average 1 over a segment, so this is on the scale of a Hamming distance),
    /// and plainly counted.
    pub fn distances(&self, j: usize, code: &[u64]) -> (f32, u32) {
        let words = code.len();
        let query = &self.encoded.codes[j * words..][..words];
        let plain = hamming::distance(query, code);
        if self.bit_weights.is_empty() {
            return (plain as f32, plain);
        }
        let bits = self.bit_weights.len() / self.starts.len();
        let weights = &self.bit_weights[j * bits..][..bits];
        let mut sum = 0.0;
        for (w, (a, b)) in query.iter().zip(code).enumerate() {
            let mut differ = a ^ b;
            while differ != 0 {
                sum += weights
                    .get(w * 64 + differ.trailing_zeros() as usize)
                    .copied()
                    .unwrap_or(1.0);
                differ &= differ - 1;
            }
        }
        (sum, plain)
    }
}

impl QuerySegments {
    /// Cuts `frames` into the encoder's query windows, leaves out silent ones and encodes the
    /// rest.
    /// `data` is the index section searched: its input says how to cut, and its library code
    /// (if it has one) codes the embeddings.
    pub fn encode(
        frames: &FeatureMatrix,
        data: &ModeIndex,
        encoder: &dyn Encoder,
    ) -> Result<Self, SearchError> {
        let input = &data.input;
        let seg = input.segmentation;
        let mut segments = segments_of(frames, seg.window, seg.query_hop);
        segments.retain(|s| !input.front_end.is_silent(&s.values));
        if segments.is_empty() {
            return Err(SearchError::SilentQuery);
        }
        let values: Vec<&[f32]> = segments.iter().map(|s| s.values.as_slice()).collect();
        let mut encoded = Encoded::default();
        encoder.encode(&values, &mut encoded)?;
        if let Some(code) = &data.library_code {
            let (codes, margins) = (&mut encoded.codes, &mut encoded.margins);
            code.encode_with_margins(&encoded.embeddings, codes, margins);
        }
        let bits = data.bits();
        let bit_weights = if encoded.margins.len() == segments.len() * bits {
            bit_weights(&encoded.margins, bits)
        } else {
            Vec::new()
        };
        Ok(Self {
            starts: segments.iter().map(|s| s.start_frame).collect(),
            encoded,
            bit_weights,
        })
    }
}

/// Per-segment weights from margins: `|margin|` over the segment's mean `|margin|`.
fn bit_weights(margins: &[f32], bits: usize) -> Vec<f32> {
    let mut weights: Vec<f32> = margins.iter().map(|m| m.abs()).collect();
    for segment in weights.chunks_mut(bits.max(1)) {
        let mean = segment.iter().sum::<f32>() / segment.len() as f32;
        segment
            .iter_mut()
            .for_each(|w| *w = if mean > 0.0 { *w / mean } else { 1.0 });
    }
    weights
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsure_query_bits_count_less_when_they_differ() {
        // One 4-bit segment, code 0b0011; margins say bits 0 and 2 are sure, 1 and 3 are not.
        let margins = [3.0, 1.0, -3.0, -1.0];
        let q = QuerySegments {
            starts: vec![0],
            encoded: Encoded {
                codes: vec![0b0011],
                ..Encoded::default()
            },
            bit_weights: bit_weights(&margins, 4),
        };
        assert_eq!(q.bit_weights, vec![1.5, 0.5, 1.5, 0.5]);
        assert_eq!(q.distances(0, &[0b0011]), (0.0, 0));
        assert_eq!(q.distances(0, &[0b0001]), (0.5, 1)); // an unsure bit differs
        assert_eq!(q.distances(0, &[0b0111]), (1.5, 1)); // a sure bit differs
        assert_eq!(q.distances(0, &[0b1100]), (4.0, 4)); // all differ: the plain count
        let plain = QuerySegments {
            bit_weights: Vec::new(),
            ..q
        };
        assert_eq!(plain.distances(0, &[0b0111]), (1.0, 1));
    }
}
