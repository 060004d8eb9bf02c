//! Float vectors as search compares them: dot products, cosines, unit length.

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The cosine of the angle between `a` and `b` (0 where either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let norm = dot(a, a).sqrt() * dot(b, b).sqrt();
    if norm > 0.0 { dot(a, b) / norm } else { 0.0 }
}

/// Scales `v` to unit length (a zero vector stays zero).
pub fn normalise(v: &mut [f32]) {
    let norm = dot(v, v).sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}
