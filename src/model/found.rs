//! How much a fingerprint model's codes must agree with a file for a match to be found, not a
//! candidate (see `search::fingerprint::is_found`). The codes' scores depend on the model
//! (its bits, its summary, what it was trained on), so each model carries its own, calibrated
//! after training on held-out audio that is not in the index (`earshot train fingerprint`, or
//! `earshot eval fingerprint --calibrate --write-thresholds`), and kept in its `config.json`.

use serde::{Deserialize, Serialize};

/// Query lengths (seconds) at which the thresholds are calibrated; between them they are
/// interpolated, beyond them held. The exact-match protocol's query lengths.
pub const FOUND_AT_SECONDS: [f64; 4] = [1.0, 2.0, 3.0, 5.0];

/// Thresholds on a match's codes score (its `score`, times the share of the query within the
/// file), one per length of [`FOUND_AT_SECONDS`], by what the file's audio says of the match.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FoundThresholds {
    /// By the codes alone (the audio not checked, or nothing like the query there).
    pub codes: [f32; 4],
    /// When the file's samples confirm the query's (they correlate and stand out).
    pub confirmed: [f32; 4],
    /// When only a room's faint samples and lined-up onsets back it.
    pub room: [f32; 4],
    /// When the query's blocks each peak with a room's match.
    pub agreed: [f32; 4],
}

impl Default for FoundThresholds {
    /// For a model whose config has none (written before models carried them): those of the
    /// fingerprint model Earshot shipped then, calibrated on the calibration split by the rule
    /// of `search::fingerprint::calibrate_found` as the search stood at each step, partly by
    /// hand. A model that is not that one should be calibrated.
    fn default() -> Self {
        Self {
            codes: [0.43, 0.66, 0.66, 0.38],
            confirmed: [0.37, 0.31, 0.33, 0.15],
            room: [0.40, 0.37, 0.34, 0.10],
            agreed: [0.20, 0.43, 0.34, 0.20],
        }
    }
}

impl FoundThresholds {
    /// Every threshold is a score a match can reach (0 to 1).
    pub fn check(&self) -> Result<(), String> {
        let tables = [self.codes, self.confirmed, self.room, self.agreed];
        match tables.iter().flatten().all(|t| (0.0..=1.0).contains(t)) {
            true => Ok(()),
            false => Err("found thresholds must lie between 0 and 1".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_outside_a_score_s_range_are_refused() {
        assert!(FoundThresholds::default().check().is_ok());
        let bad = FoundThresholds {
            room: [0.4, f32::NAN, 0.3, 0.1],
            ..FoundThresholds::default()
        };
        assert!(bad.check().is_err());
        let text = serde_json::to_string(&FoundThresholds::default()).unwrap_or_default();
        let back: Result<FoundThresholds, _> = serde_json::from_str(&text);
        assert_eq!(back.ok(), Some(FoundThresholds::default()));
    }
}
