//! What the hash-head commands share: a backbone's embeddings of ESC-50 (cached), and how
//! heads and label-free codes score on a split.

use std::path::Path;

use anyhow::Context;

use crate::eval::esc50::{self, Esc50, Ranking, Split, WindowEmbeddings};
use crate::eval::metrics::{Agreement, RetrievalScores};
use crate::index::library_code::LibraryCode;
use crate::model::hash_head::HashHead;
use crate::model::{Encoder, Mode};
use crate::train::hash_head::{HeadOptions, HeadRecipe, LabelledEmbeddings, train_head};

/// The code length whose recipe is ablated.
pub const ABLATED_BITS: usize = 64;

/// The installed model `name`, which must be a backbone (embeddings without codes).
pub fn backbone(name: &str) -> anyhow::Result<Box<dyn Encoder>> {
    let encoder = crate::model::encoder_for(
        Mode::Events,
        Some(&crate::model::model_folder(Path::new(name))),
    )
    .with_context(|| {
        format!("loading the backbone {name} (import it with `earshot models import`)")
    })?;
    anyhow::ensure!(
        encoder.info().bits == 0 && encoder.info().embedding_dim > 0,
        "{name} is not a backbone: it gives codes of its own"
    );
    Ok(encoder)
}

/// Code weights tried when a head's candidates are re-ranked (the engine's
/// [`crate::search::rerank::CODE_WEIGHT`] was chosen among these on the validation splits).
pub const FUSION_WEIGHTS: [f32; 7] = [0.1, 0.3, 0.5, 1.0, 2.0, 4.0, 8.0];

/// A head's scores: ranked by its codes; by its codes then re-ranked by cosine; and re-ranked
/// with each of [`FUSION_WEIGHTS`] for its codes.
pub struct HeadScores {
    pub hamming: RetrievalScores,
    /// Ranked by the query's bit margins on the database's bits.
    pub margins: RetrievalScores,
    pub reranked: RetrievalScores,
    pub fused: Vec<(f32, RetrievalScores)>,
    /// As `fused`, with the codes' agreement measured by the query's bit margins.
    pub fused_by_margins: Vec<(f32, RetrievalScores)>,
}

/// One row of a card's ablation or baseline table.
pub struct Row {
    pub name: String,
    pub scores: RetrievalScores,
}

/// The split's clips, a backbone's embeddings of them, and how they are scored.
pub struct Bench<'a> {
    data: &'a Esc50,
    pub windows: WindowEmbeddings,
    split: Split,
}

impl<'a> Bench<'a> {
    /// The installed backbone `name`'s embeddings of every clip (cached after the first run).
    pub fn new(
        data: &'a Esc50,
        name: &str,
        split: Split,
        cache: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let backbone = backbone(name)?;
        eprintln!("embedding ESC-50 with {name} (cached after the first run)...");
        let encoders = crate::session::Encoders::from([(Mode::Events, backbone)]);
        let cache = cache
            .map(Path::to_path_buf)
            .or_else(esc50::default_cache_dir);
        let windows = esc50::window_embeddings(&encoders, data, cache.as_deref())?;
        for (path, reason) in &windows.failed {
            eprintln!("cannot read {}: {reason}; left out", path.display());
        }
        Ok(Self {
            data,
            windows,
            split,
        })
    }

    pub fn head(&self, head: &HashHead, bits: usize) -> anyhow::Result<HeadScores> {
        let (db, queries) = esc50::split_ids(self.data, self.split);
        let (db, queries) = (
            esc50::head_codes(head, bits, &self.windows.select(&db))?,
            esc50::head_codes(head, bits, &self.windows.select(&queries))?,
        );
        let score = |ranking| esc50::score_codes(self.data, &db, &queries, ranking).scores;
        let fused = |agreement| {
            FUSION_WEIGHTS
                .iter()
                .map(|&code_weight| {
                    let ranking = Ranking::Reranked {
                        code_weight,
                        agreement,
                    };
                    (code_weight, score(ranking))
                })
                .collect()
        };
        Ok(HeadScores {
            hamming: score(Ranking::Hamming),
            margins: score(Ranking::Margins),
            reranked: score(Ranking::Reranked {
                code_weight: 0.0,
                agreement: Agreement::Bits,
            }),
            fused: fused(Agreement::Bits),
            fused_by_margins: fused(Agreement::Margins),
        })
    }

    /// The 64-bit head trained with each part of the recipe left out.
    pub fn ablations(
        &self,
        set: &LabelledEmbeddings<'_>,
        backbone: &str,
        options: &HeadOptions,
    ) -> anyhow::Result<Vec<Row>> {
        let full = options.recipe;
        let variants = [
            (
                "AudioNet's loss added",
                HeadRecipe {
                    audionet: true,
                    ..full
                },
            ),
            (
                "AudioNet's loss instead of hash centres",
                HeadRecipe {
                    audionet: true,
                    centres: false,
                    ..full
                },
            ),
            (
                "clip means instead of window subsets",
                HeadRecipe {
                    window_subsets: false,
                    ..full
                },
            ),
            (
                "without dropout",
                HeadRecipe {
                    dropout: false,
                    ..full
                },
            ),
            (
                "random centres",
                HeadRecipe {
                    hadamard: false,
                    ..full
                },
            ),
        ];
        let mut rows = Vec::new();
        for (name, recipe) in variants {
            if recipe == full || (!recipe.centres && !recipe.audionet) {
                continue;
            }
            let options = HeadOptions {
                recipe,
                ..options.clone()
            };
            let (_, head) = train_head(set, backbone, ABLATED_BITS, &options)?;
            rows.push(Row {
                name: name.to_string(),
                scores: self.head(&head, ABLATED_BITS)?.margins,
            });
        }
        Ok(rows)
    }

    /// What needs no labels: cosine on standardised embeddings, and a PCA + ITQ code learned on
    /// the database's windows, alone and re-ranked.
    pub fn baselines(&self, bits: usize, seed: u64) -> anyhow::Result<Vec<Row>> {
        let (db_ids, query_ids) = esc50::split_ids(self.data, self.split);
        let code = LibraryCode::learn(
            &esc50::windows_of(&self.windows, &db_ids),
            self.windows.dim,
            bits,
            seed,
        )?;
        let (db, queries) = (
            esc50::library_codes(&code, &self.windows.select(&db_ids)),
            esc50::library_codes(&code, &self.windows.select(&query_ids)),
        );
        let cosine = |c: &esc50::ClipCodes| esc50::ClipCodes {
            bits: 0,
            words: 0,
            codes: Vec::new(),
            ids: c.ids.clone(),
            dim: c.dim,
            embeddings: c.embeddings.clone(),
            margins: Vec::new(),
        };
        let score = |d: &esc50::ClipCodes, q: &esc50::ClipCodes, r| {
            esc50::score_codes(self.data, d, q, r).scores
        };
        Ok(vec![
            Row {
                name: "cosine on standardised embeddings (no codes)".into(),
                scores: score(&cosine(&db), &cosine(&queries), Ranking::Hamming),
            },
            Row {
                name: format!("PCA + ITQ, {bits} bits, learned on the database (no labels)"),
                scores: score(&db, &queries, Ranking::Hamming),
            },
            Row {
                name: format!("PCA + ITQ, {bits} bits, re-ranked by cosine with query expansion"),
                scores: score(
                    &db,
                    &queries,
                    Ranking::Reranked {
                        code_weight: 0.0,
                        agreement: Agreement::Bits,
                    },
                ),
            },
        ])
    }
}
