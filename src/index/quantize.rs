//! Embeddings on disk in 8 bits: each vector as a scale (its largest magnitude / 127, f32) and
//! one signed byte per value. A value moves by at most half a step, 0.4% of the vector's largest
//! magnitude, and a cosine by about as much; `earshot eval esc50` measures what it costs in mAP.

/// Bytes of one stored vector of `dim` values.
pub fn stored_len(dim: usize) -> usize {
    4 + dim
}

/// Appends `vector` in 8 bits to `out`.
pub fn push_vector(vector: &[f32], out: &mut Vec<u8>) {
    let peak = vector
        .iter()
        .filter(|x| x.is_finite())
        .fold(0.0f32, |m, x| m.max(x.abs()));
    let scale = peak / 127.0;
    out.extend_from_slice(&scale.to_le_bytes());
    let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    out.extend(
        vector
            .iter()
            .map(|&x| (x * inverse).round().clamp(-127.0, 127.0) as i8 as u8),
    );
}

/// The values of vectors stored by [`push_vector`], `dim` each.
pub fn read_vectors(bytes: &[u8], dim: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(bytes.len() / stored_len(dim).max(1) * dim);
    for stored in bytes.chunks_exact(stored_len(dim)) {
        let scale = f32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
        out.extend(stored[4..].iter().map(|&b| f32::from(b as i8) * scale));
    }
    out
}

/// A vector as it comes back from disk (what search sees).
pub fn round_trip(vector: &[f32]) -> Vec<f32> {
    let mut bytes = Vec::new();
    push_vector(vector, &mut bytes);
    read_vectors(&bytes, vector.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_come_back_within_half_a_step_and_cosines_barely_move() {
        let v: Vec<f32> = (0..1024)
            .map(|i| ((i as f32) * 0.37).sin() * (1.0 + i as f32 / 500.0))
            .collect();
        let back = round_trip(&v);
        let peak = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        assert!(
            v.iter()
                .zip(&back)
                .all(|(a, b)| (a - b).abs() <= 0.5 * peak / 127.0 + 1e-6)
        );
        let dot: f32 = v.iter().zip(&back).map(|(a, b)| a * b).sum();
        let norms = v.iter().map(|x| x * x).sum::<f32>().sqrt()
            * back.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!(dot / norms > 0.9999, "{}", dot / norms);
        assert_eq!(round_trip(&[0.0; 4]), vec![0.0; 4]);
        assert_eq!(stored_len(1024), 1028);
    }
}
