//! DCT-II with orthonormal scaling (scipy's `dct(type=2, norm="ortho")`), as librosa's MFCC uses.

#[derive(Debug, Clone)]
pub struct Dct {
    /// `n_out` rows of `n_in` coefficients.
    basis: Vec<f32>,
    n_in: usize,
    n_out: usize,
}

impl Dct {
    pub fn new(n_in: usize, n_out: usize) -> Self {
        let n = n_in as f64;
        let mut basis = Vec::with_capacity(n_in * n_out);
        for k in 0..n_out {
            let scale = if k == 0 {
                (1.0 / n).sqrt()
            } else {
                (2.0 / n).sqrt()
            };
            for i in 0..n_in {
                basis.push(
                    (scale * (std::f64::consts::PI * k as f64 * (i as f64 + 0.5) / n).cos()) as f32,
                );
            }
        }
        Self { basis, n_in, n_out }
    }

    pub fn n_out(&self) -> usize {
        self.n_out
    }

    pub fn apply(&self, input: &[f32], out: &mut [f32]) {
        for (o, row) in out.iter_mut().zip(self.basis.chunks_exact(self.n_in)) {
            *o = row.iter().zip(input).map(|(b, x)| b * x).sum();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dct_is_orthonormal() {
        let dct = Dct::new(16, 16);
        let x: Vec<f32> = (0..16).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut y = vec![0.0; 16];
        dct.apply(&x, &mut y);
        let energy = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>();
        assert!((energy(&x) - energy(&y)).abs() < 1e-4);
    }
}
