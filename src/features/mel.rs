//! Mel filterbank with librosa's defaults: Slaney mel scale (`htk=False`) and Slaney area
//! normalisation (`norm="slaney"`), so `MelFilterbank` equals `librosa.filters.mel`.

/// Slaney scale: linear below 1 kHz, logarithmic above.
const LINEAR_MEL_LIMIT_HZ: f64 = 1000.0;
const LINEAR_HZ_PER_MEL: f64 = 200.0 / 3.0;
/// ln(6.4) / 27: the log-region step of the Slaney scale.
const LOG_MEL_STEP: f64 = 0.068_751_777_420_949_12;

pub fn hz_to_mel(hz: f64) -> f64 {
    let min_log_mel = LINEAR_MEL_LIMIT_HZ / LINEAR_HZ_PER_MEL;
    if hz >= LINEAR_MEL_LIMIT_HZ {
        min_log_mel + (hz / LINEAR_MEL_LIMIT_HZ).ln() / LOG_MEL_STEP
    } else {
        hz / LINEAR_HZ_PER_MEL
    }
}

pub fn mel_to_hz(mel: f64) -> f64 {
    let min_log_mel = LINEAR_MEL_LIMIT_HZ / LINEAR_HZ_PER_MEL;
    if mel >= min_log_mel {
        LINEAR_MEL_LIMIT_HZ * (LOG_MEL_STEP * (mel - min_log_mel)).exp()
    } else {
        mel * LINEAR_HZ_PER_MEL
    }
}

/// One triangular filter, stored sparsely: weights for bins `first..first + weights.len()`.
#[derive(Debug, Clone)]
struct Filter {
    first: usize,
    weights: Vec<f32>,
}

#[derive(Debug, Clone)]
pub struct MelFilterbank {
    filters: Vec<Filter>,
    n_bins: usize,
}

impl MelFilterbank {
    /// `n_mels` triangular filters over `[fmin, fmax]` Hz for an `n_fft`-point spectrum at `sample_rate`.
    pub fn new(sample_rate: u32, n_fft: usize, n_mels: usize, fmin: f64, fmax: f64) -> Self {
        let n_bins = n_fft / 2 + 1;
        let bin_hz: Vec<f64> = (0..n_bins)
            .map(|k| k as f64 * f64::from(sample_rate) / n_fft as f64)
            .collect();
        let (mel_lo, mel_hi) = (hz_to_mel(fmin), hz_to_mel(fmax));
        let edges: Vec<f64> = (0..n_mels + 2)
            .map(|i| mel_to_hz(mel_lo + (mel_hi - mel_lo) * i as f64 / (n_mels + 1) as f64))
            .collect();
        let filters = (0..n_mels)
            .map(|m| {
                let (left, centre, right) = (edges[m], edges[m + 1], edges[m + 2]);
                let area_norm = 2.0 / (right - left);
                let dense: Vec<f32> = bin_hz
                    .iter()
                    .map(|&f| {
                        let rising = (f - left) / (centre - left);
                        let falling = (right - f) / (right - centre);
                        (rising.min(falling).max(0.0) * area_norm) as f32
                    })
                    .collect();
                sparse(&dense)
            })
            .collect();
        Self { filters, n_bins }
    }

    pub fn n_mels(&self) -> usize {
        self.filters.len()
    }

    pub fn n_bins(&self) -> usize {
        self.n_bins
    }

    /// Mel energies of one power spectrum.
    pub fn apply(&self, power: &[f32], mel: &mut [f32]) {
        debug_assert_eq!(power.len(), self.n_bins);
        for (out, filter) in mel.iter_mut().zip(&self.filters) {
            let bins = &power[filter.first..filter.first + filter.weights.len()];
            *out = bins.iter().zip(&filter.weights).map(|(p, w)| p * w).sum();
        }
    }

    /// Dense weight matrix, `n_mels` rows of `n_bins` (for tests and plots).
    pub fn dense(&self) -> Vec<Vec<f32>> {
        self.filters
            .iter()
            .map(|f| {
                let mut row = vec![0.0; self.n_bins];
                row[f.first..f.first + f.weights.len()].copy_from_slice(&f.weights);
                row
            })
            .collect()
    }
}

fn sparse(dense: &[f32]) -> Filter {
    let first = dense.iter().position(|&w| w > 0.0).unwrap_or(0);
    let last = dense
        .iter()
        .rposition(|&w| w > 0.0)
        .map_or(first, |l| l + 1);
    Filter {
        first,
        weights: dense[first..last].to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mel_scale_round_trips() {
        for hz in [0.0, 300.0, 999.0, 1000.0, 4000.0, 8000.0] {
            assert!((mel_to_hz(hz_to_mel(hz)) - hz).abs() < 1e-6, "{hz}");
        }
        assert!((hz_to_mel(1000.0) - 15.0).abs() < 1e-12);
    }

    #[test]
    fn every_filter_has_weight() {
        let fb = MelFilterbank::new(16_000, 512, 64, 0.0, 8000.0);
        assert_eq!(fb.n_mels(), 64);
        assert!(fb.dense().iter().all(|row| row.iter().any(|&w| w > 0.0)));
    }
}
