//! Exact re-ranking of candidates by cosine, with query expansion: the query is moved towards
//! the library items it matches best, and the candidates are scored again. Both use only the
//! library's stored embeddings, so they help whatever the labels (there are none).
//!
//! The expansion's settings were chosen on ESC-50's classes 0-39 (folds 1-4 against fold 5),
//! never on the zero-shot classes 40-49 that the figures in the README report; see
//! `earshot eval esc50 --unsupervised`.

use crate::index::vector::{dot, normalise};

/// Candidates the codes hand to the exact re-rank.
pub const RERANK_CANDIDATES: usize = 300;
/// The query is expanded with its best `EXPANSION_NEIGHBOURS` items, each weighted by its
/// cosine (average query expansion weighted by similarity; on the classes 0-39: 0.439 mAP@all
/// exact, 0.489 with 5 neighbours, 0.481 with 10, 0.485 with 3).
pub const EXPANSION_NEIGHBOURS: usize = 5;

/// How much a trained head's code agreement (with the query's bit margins,
/// [`margin_agreement`]) counts beside the cosine when its candidates are re-ranked ([`fuse`]).
/// A head trained elsewhere knows the classes it saw, cosine knows any sound; a user's library
/// holds either. Chosen on ESC-50 validation splits only, folds 1-3 against fold 4
/// (`earshot eval esc50 --model HEAD --validation validation|zero-shot-validation`), as the
/// weight with the best mean mAP@all over all classes seen (0.897 by codes alone, 0.499 by
/// cosine alone) and classes 30-39 unseen (0.415 and 0.518): weight 2 gives 0.873 and 0.499
/// (mean 0.686), 1 gives 0.835 and 0.528 (0.682), 4 gives 0.887 and 0.467 (0.677). Agreement by
/// differing bits did worse at every weight (best mean 0.666, weight 1).
pub const CODE_WEIGHT: f32 = 2.0;

/// As [`CODE_WEIGHT`], for a code learned from labels on a small part of the library (a few
/// queries' relevant / not-relevant marks): it knows the marked sounds, and nothing of the
/// rest. Chosen on a validation library (ESC-50 folds 1-3, queries fold 4) marked as an
/// annotator would: one query each for 10 classes, its top 20 results marked relevant when of
/// the query's class. Mean mAP@all of the marked classes' queries and the others' was best at
/// 0.5: 0.543 and 0.399, against 0.503 and 0.422 before learning (0.25: 0.526 and 0.412; 1:
/// 0.559 and 0.374). Ranked by the learned codes alone, the other classes' queries fell from
/// 0.46 to 0.06 on ESC-50's own split: such codes must not rank a library alone.
pub const PARTIAL_LABELS_CODE_WEIGHT: f32 = 0.5;

/// How far two codes agree, from 1 (equal) through 0 (as far apart as chance) to -1.
pub fn agreement(distance: u32, bits: usize) -> f32 {
    1.0 - 2.0 * distance as f32 / bits.max(1) as f32
}

/// How far a database code agrees with a query given by its bit margins (each bit's value
/// less its threshold): the margins of the bits they share less those of the bits they do
/// not, over the sum of all margins; from 1 (every bit agrees) to -1. A query bit that nearly
/// flipped counts little, one far from its threshold counts much (an asymmetric distance: the
/// library keeps only bits). Ranks ESC-50 better than the Hamming distance at every code length
/// (validation split, folds 1-3 against fold 4, mAP@all: 16 bits 0.766 to 0.792, 32 bits 0.847
/// to 0.878, 64 bits 0.879 to 0.897, 128 bits 0.884 to 0.894; classes 30-39 unseen, 64 bits,
/// 0.368 to 0.415).
pub fn margin_agreement(code: &[u64], margins: &[f32]) -> f32 {
    let (mut agree, mut total) = (0.0f32, 0.0f32);
    for (b, m) in margins.iter().enumerate() {
        let bit = code.get(b / 64).is_some_and(|w| w >> (b % 64) & 1 == 1);
        agree += if bit { *m } else { -*m };
        total += m.abs();
    }
    if total > 0.0 { agree / total } else { 0.0 }
}

/// Adds `weight` times each item's code agreement to its score and sorts again (best first).
pub fn fuse(scored: &mut [(usize, f32)], agreement: impl Fn(usize) -> f32, weight: f32) {
    for (i, score) in scored.iter_mut() {
        *score += weight * agreement(*i);
    }
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
}

/// `candidates` ranked by their cosine with `query` after expansion, best first, with that
/// cosine. `query` and every `embedding(i)` must be unit length.
pub fn rerank<'a>(
    query: &[f32],
    candidates: &[usize],
    embedding: impl Fn(usize) -> &'a [f32],
) -> Vec<(usize, f32)> {
    let score = |q: &[f32]| -> Vec<(usize, f32)> {
        let mut scored: Vec<(usize, f32)> = candidates
            .iter()
            .map(|&i| (i, dot(q, embedding(i))))
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        scored
    };
    let first = score(query);
    let mut expanded = query.to_vec();
    for &(i, cosine) in first.iter().take(EXPANSION_NEIGHBOURS) {
        let weight = cosine.max(0.0);
        expanded
            .iter_mut()
            .zip(embedding(i))
            .for_each(|(q, e)| *q += weight * e);
    }
    normalise(&mut expanded);
    score(&expanded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margin_agreement_weighs_each_bit_by_how_sure_the_query_is() {
        // Query bits 0 and 1 set (margins 3 and 0.5), bits 2 and 3 clear (-1 and -0.5).
        let margins = [3.0, 0.5, -1.0, -0.5];
        assert_eq!(margin_agreement(&[0b0011], &margins), 1.0);
        assert_eq!(margin_agreement(&[0b1100], &margins), -1.0);
        // Flipping the unsure bit 1 costs less than flipping the sure bit 0.
        let unsure = margin_agreement(&[0b0001], &margins);
        let sure = margin_agreement(&[0b0010], &margins);
        assert!(
            (unsure - 0.8).abs() < 1e-6 && (sure + 0.2).abs() < 1e-6,
            "{unsure} {sure}"
        );
        assert_eq!(margin_agreement(&[0b0011], &[0.0; 4]), 0.0);
    }

    #[test]
    fn fusing_weighs_code_agreement_beside_the_cosine() {
        assert_eq!(agreement(0, 64), 1.0);
        assert_eq!(agreement(32, 64), 0.0);
        assert_eq!(agreement(64, 64), -1.0);
        // Item 0 is nearer by cosine, item 1 by code (16 bits closer: agreement 0.5 higher).
        let distance = [24u32, 8];
        let mut scored = vec![(0, 0.8f32), (1, 0.6)];
        fuse(&mut scored, |i| agreement(distance[i], 64), 0.1);
        assert_eq!(scored[0].0, 0, "a small weight keeps the cosine's order");
        let mut scored = vec![(0, 0.8f32), (1, 0.6)];
        fuse(&mut scored, |i| agreement(distance[i], 64), 1.0);
        assert_eq!(
            scored[0].0, 1,
            "weight 1: half the bits count more than 0.2 of cosine"
        );
        assert!((scored[0].1 - (0.6 + 0.75)).abs() < 1e-6);
    }

    #[test]
    fn expansion_pulls_in_the_neighbours_of_the_best_match() {
        // Item 1 is nearer the query than item 2, but item 2 lies with the query's best
        // matches (items 0 and 3) and item 1 off to one side: expansion swaps them.
        let mut items: Vec<Vec<f32>> = vec![
            vec![1.0, 0.2, 0.0],
            vec![0.75, 0.0, 0.6614],
            vec![0.7, 0.7, 0.0],
            vec![0.8, 0.6, 0.0],
        ];
        items.iter_mut().for_each(|v| normalise(v));
        let query = [1.0f32, 0.0, 0.0];
        let plain: Vec<usize> = {
            let mut s: Vec<(usize, f32)> = (0..4).map(|i| (i, dot(&query, &items[i]))).collect();
            s.sort_by(|a, b| b.1.total_cmp(&a.1));
            s.iter().map(|p| p.0).collect()
        };
        let ranked: Vec<usize> = rerank(&query, &[0, 1, 2, 3], |i| &items[i])
            .iter()
            .map(|p| p.0)
            .collect();
        assert_eq!(plain, vec![0, 3, 1, 2]);
        assert_eq!(ranked[0], 0);
        assert!(
            ranked.iter().position(|&i| i == 2) < ranked.iter().position(|&i| i == 1),
            "{ranked:?}"
        );
    }
}
