//! Approximate nearest neighbours over the float embeddings with HNSW (hnsw_rs), cosine distance.
//!
//! The codes are not indexed here: hnsw_rs's `DistHamming` counts differing *words*, not bits,
//! so Hamming search uses [`super::hamming`] and [`super::buckets`] instead.

use hnsw_rs::prelude::{DistCosine, Hnsw};

/// Links per node and search breadth: hnsw_rs's usual settings for recall above 0.95.
const MAX_CONNECTIONS: usize = 16;
const MAX_LAYERS: usize = 16;
const EF_CONSTRUCTION: usize = 200;
const EF_SEARCH_MIN: usize = 64;

pub struct EmbeddingIndex {
    hnsw: Hnsw<'static, f32, DistCosine>,
}

impl EmbeddingIndex {
    /// Builds the graph over `embeddings` (`dim` floats per item), in parallel.
    pub fn build(embeddings: &[f32], dim: usize) -> Self {
        let n = embeddings.len().checked_div(dim).unwrap_or(0);
        let hnsw = Hnsw::new(
            MAX_CONNECTIONS,
            n.max(1),
            MAX_LAYERS,
            EF_CONSTRUCTION,
            DistCosine {},
        );
        let items: Vec<(&[f32], usize)> = embeddings.chunks_exact(dim.max(1)).zip(0..n).collect();
        hnsw.parallel_insert_slice(&items);
        Self { hnsw }
    }

    /// The `k` nearest items as `(cosine distance, index)`, nearest first.
    pub fn nearest(&self, query: &[f32], k: usize) -> Vec<(f32, usize)> {
        let mut hits: Vec<(f32, usize)> = self
            .hnsw
            .search(query, k, EF_SEARCH_MIN.max(2 * k))
            .into_iter()
            .map(|n| (n.distance, n.d_id))
            .collect();
        hits.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SeededRng;

    #[test]
    fn finds_an_item_from_itself() {
        let mut rng = SeededRng::new(11);
        let dim = 16;
        let data: Vec<f32> = (0..2000 * dim).map(|_| rng.normal() as f32).collect();
        let index = EmbeddingIndex::build(&data, dim);
        for i in [0, 777, 1999] {
            let hits = index.nearest(&data[i * dim..(i + 1) * dim], 5);
            assert_eq!(hits[0].1, i);
            assert!(hits[0].0 < 1e-5);
        }
    }
}
