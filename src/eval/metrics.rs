//! Retrieval metrics over a ranked database.
//!
//! Conventions (those of the deep-hashing literature AudioNet follows):
//! - AP@k averages the precision at each relevant item within the top k, divided by the number of
//!   relevant items found there (0 when none is); AP@all divides by all relevant items.
//! - Precision within Hamming radius r is relevant / retrieved over the items at distance <= r,
//!   and 0 for a query that retrieves nothing.

use crate::index::hamming;

/// A database (or query set) of packed codes and unit-length embeddings.
pub struct CodeSet<'a> {
    pub words: usize,
    pub codes: &'a [u64],
    pub embeddings: &'a [f32],
    pub dim: usize,
    /// Each item's bit margins (`bits` each; empty for codes that have none): a query ranks by
    /// them with [`Agreement::Margins`].
    pub margins: &'a [f32],
}

impl CodeSet<'_> {
    pub fn len(&self) -> usize {
        // Without codes (embeddings alone), the set is its embeddings, ranked by cosine only.
        self.codes
            .len()
            .checked_div(self.words)
            .unwrap_or(self.embeddings.len() / self.dim.max(1))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn code(&self, i: usize) -> &[u64] {
        &self.codes[i * self.words..(i + 1) * self.words]
    }

    pub fn embedding(&self, i: usize) -> &[f32] {
        &self.embeddings[i * self.dim..(i + 1) * self.dim]
    }

    pub fn margins(&self, i: usize) -> &[f32] {
        let bits = self.margins.len() / self.len().max(1);
        &self.margins[i * bits..(i + 1) * bits]
    }
}

/// The database ranked for one query as the engine ranks it: fewest differing bits first, ties
/// by the higher cosine of the embeddings, then by position. Returns (index, distance) pairs.
pub fn rank(db: &CodeSet<'_>, query_code: &[u64], query_embedding: &[f32]) -> Vec<(usize, u32)> {
    let mut scored: Vec<(usize, u32, f32)> = (0..db.len())
        .map(|i| {
            let cosine: f32 = db
                .embedding(i)
                .iter()
                .zip(query_embedding)
                .map(|(a, b)| a * b)
                .sum();
            (i, hamming::distance(db.code(i), query_code), cosine)
        })
        .collect();
    scored.sort_by(|a, b| a.1.cmp(&b.1).then(b.2.total_cmp(&a.2)).then(a.0.cmp(&b.0)));
    scored.into_iter().map(|(i, d, _)| (i, d)).collect()
}

/// AP over the first `k` of a ranking given as relevance flags (see the module's conventions).
pub fn average_precision(relevant: &[bool], k: usize) -> f64 {
    let mut hits = 0usize;
    let mut sum = 0.0;
    for (i, _) in relevant.iter().take(k).enumerate().filter(|(_, r)| **r) {
        hits += 1;
        sum += hits as f64 / (i + 1) as f64;
    }
    let denominator = if k >= relevant.len() {
        relevant.iter().filter(|r| **r).count()
    } else {
        hits
    };
    if denominator == 0 {
        0.0
    } else {
        sum / denominator as f64
    }
}

pub fn precision_at(relevant: &[bool], k: usize) -> f64 {
    relevant.iter().take(k).filter(|r| **r).count() as f64 / k.max(1) as f64
}

/// Mean retrieval figures over a set of queries.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct RetrievalScores {
    pub map_all: f64,
    pub map_100: f64,
    pub p_at_10: f64,
    pub p_hamming2: f64,
    pub queries: usize,
    pub database: usize,
}

/// Scores every query against the database; relevance is equal labels.
pub fn retrieval_scores(
    db: &CodeSet<'_>,
    db_labels: &[usize],
    queries: &CodeSet<'_>,
    query_labels: &[usize],
) -> RetrievalScores {
    let mut s = RetrievalScores {
        queries: queries.len(),
        database: db.len(),
        ..Default::default()
    };
    for (q, &label) in query_labels.iter().enumerate().take(queries.len()) {
        let ranked = rank(db, queries.code(q), queries.embedding(q));
        let relevant: Vec<bool> = ranked.iter().map(|&(i, _)| db_labels[i] == label).collect();
        s.map_all += average_precision(&relevant, relevant.len());
        s.map_100 += average_precision(&relevant, 100);
        s.p_at_10 += precision_at(&relevant, 10);
        let within = ranked.iter().take_while(|&&(_, d)| d <= 2).count();
        s.p_hamming2 += precision_at(&relevant[..within], within) * (within > 0) as u8 as f64;
    }
    let n = queries.len().max(1) as f64;
    for x in [
        &mut s.map_all,
        &mut s.map_100,
        &mut s.p_at_10,
        &mut s.p_hamming2,
    ] {
        *x /= n;
    }
    s
}

/// The database ranked for a query given by its bit margins, by
/// [`crate::search::rerank::margin_agreement`], highest first, ties by position.
pub fn rank_by_margins(db: &CodeSet<'_>, margins: &[f32]) -> Vec<usize> {
    use crate::search::rerank::margin_agreement;
    let mut scored: Vec<(usize, f32)> = (0..db.len())
        .map(|i| (i, margin_agreement(db.code(i), margins)))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.into_iter().map(|(i, _)| i).collect()
}

/// Every query ranked by [`rank_by_margins`].
pub fn margin_scores(
    db: &CodeSet<'_>,
    db_labels: &[usize],
    queries: &CodeSet<'_>,
    query_labels: &[usize],
) -> RetrievalScores {
    let rankings: Vec<Vec<usize>> = (0..queries.len())
        .map(|q| rank_by_margins(db, queries.margins(q)))
        .collect();
    scores_of_rankings(&rankings, db_labels, query_labels, db.len())
}

/// Mean figures of rankings made elsewhere (`rankings[q]` orders the database for query `q`);
/// precision within a Hamming radius does not apply and stays 0.
pub fn scores_of_rankings(
    rankings: &[Vec<usize>],
    db_labels: &[usize],
    query_labels: &[usize],
    database: usize,
) -> RetrievalScores {
    let mut s = RetrievalScores {
        queries: rankings.len(),
        database,
        ..Default::default()
    };
    for (ranked, &label) in rankings.iter().zip(query_labels) {
        let relevant: Vec<bool> = ranked.iter().map(|&i| db_labels[i] == label).collect();
        s.map_all += average_precision(&relevant, relevant.len());
        s.map_100 += average_precision(&relevant, 100);
        s.p_at_10 += precision_at(&relevant, 10);
    }
    let n = rankings.len().max(1) as f64;
    for x in [&mut s.map_all, &mut s.map_100, &mut s.p_at_10] {
        *x /= n;
    }
    s
}

/// Per query: the database ranked by the codes, its best `RERANK_CANDIDATES` re-ranked by
/// cosine with expansion, the rest after them in code order.
pub fn reranked_scores(
    db: &CodeSet<'_>,
    db_labels: &[usize],
    queries: &CodeSet<'_>,
    query_labels: &[usize],
    fusion: Fusion,
) -> RetrievalScores {
    use crate::search::rerank::{RERANK_CANDIDATES, agreement, fuse, margin_agreement, rerank};
    let rankings: Vec<Vec<usize>> = (0..queries.len())
        .map(|q| {
            let ranked = rank(db, queries.code(q), queries.embedding(q));
            let cut = RERANK_CANDIDATES.min(ranked.len());
            let candidates: Vec<usize> = ranked[..cut].iter().map(|&(i, _)| i).collect();
            let mut scored = rerank(queries.embedding(q), &candidates, |i| db.embedding(i));
            if fusion.code_weight > 0.0 {
                let distance: std::collections::HashMap<usize, u32> =
                    ranked[..cut].iter().copied().collect();
                let agree = |i: usize| match fusion.agreement {
                    Agreement::Bits => agreement(distance[&i], fusion.bits),
                    Agreement::Margins => margin_agreement(db.code(i), queries.margins(q)),
                };
                fuse(&mut scored, agree, fusion.code_weight);
            }
            let mut order: Vec<usize> = scored.into_iter().map(|(i, _)| i).collect();
            order.extend(ranked[cut..].iter().map(|&(i, _)| i));
            order
        })
        .collect();
    scores_of_rankings(&rankings, db_labels, query_labels, db.len())
}

/// How re-ranked candidates weigh their codes (see [`crate::search::rerank::fuse`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fusion {
    pub bits: usize,
    /// 0: the cosine alone.
    pub code_weight: f32,
    pub agreement: Agreement,
}

/// How a code's agreement with the query is measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Agreement {
    /// By the bits that differ ([`crate::search::rerank::agreement`]).
    Bits,
    /// By the query's bit margins ([`crate::search::rerank::margin_agreement`]).
    Margins,
}

/// The `q` quantile (nearest rank) of `values`; 0 when empty.
pub fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_precision_follows_its_definition() {
        // Relevant at ranks 1, 3 and 6 of 6: (1/1 + 2/3 + 3/6) / 3.
        let r = [true, false, true, false, false, true];
        assert!((average_precision(&r, 6) - (1.0 + 2.0 / 3.0 + 0.5) / 3.0).abs() < 1e-12);
        // Top 3: two relevant found, (1 + 2/3) / 2.
        assert!((average_precision(&r, 3) - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
        assert_eq!(average_precision(&[false, false], 2), 0.0);
        assert!((precision_at(&r, 3) - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn ties_in_hamming_distance_go_to_the_closer_embedding() {
        let db = CodeSet {
            words: 1,
            codes: &[0b1111, 0b0001, 0b0001],
            embeddings: &[1.0, 0.0, 0.0, 1.0, 1.0, 0.0],
            dim: 2,
            margins: &[],
        };
        let order: Vec<usize> = rank(&db, &[0b0001], &[1.0, 0.0])
            .iter()
            .map(|r| r.0)
            .collect();
        assert_eq!(order, vec![2, 1, 0]);
        let queries = CodeSet {
            words: 1,
            codes: &[0b0001],
            embeddings: &[1.0, 0.0],
            dim: 2,
            margins: &[],
        };
        let s = retrieval_scores(&db, &[7, 7, 3], &queries, &[7]);
        // Ranking 2 (label 3), 1 (7), 0 (7): AP = (1/2 + 2/3) / 2; radius 2 holds items 2 and 1.
        assert!((s.map_all - (0.5 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
        assert!((s.p_hamming2 - 0.5).abs() < 1e-12);
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 0.5), 50.0);
        assert_eq!(percentile(&mut v, 0.95), 95.0);
        assert_eq!(percentile(&mut [], 0.5), 0.0);
    }
}
