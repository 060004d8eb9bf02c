//! Hash heads on a backbone's embeddings (BirdNET v2.4's, for the shipped `events-birdnet-K`
//! models): each embedding is standardised by the statistics of the clips the head was trained
//! on, then a small MLP (`input -> hidden, ReLU -> bits`) gives the hash layer, and its balanced
//! sign the code. The head folder holds the head only; the backbone is an installed model
//! (imported by the user) named in the config, loaded beside it.
//!
//! As an [`Encoder`], a head reads what its backbone reads, gives the head's codes and the
//! standardised embeddings (the index keeps them, and search re-ranks by their cosine).

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use candle_nn::{Linear, Module, VarBuilder};
use serde::{Deserialize, Serialize};

use super::config::{ModelError, ModelFiles, Versioned};
use super::hashing::{balanced_bits, balanced_margins, pack_bits};
use super::{AttentionMap, EncodeError, Encoded, Encoder, EncoderInfo, EncoderInput};

/// What `config.json` says in `architecture`.
pub const ARCHITECTURE: &str = "hash-head";
/// Largest sizes a config may ask for.
const MAX_DIM: usize = 8192;
const MAX_BITS: usize = 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HashHeadConfig {
    pub format_version: u32,
    /// Always [`ARCHITECTURE`].
    pub architecture: String,
    /// The installed model whose embeddings the head reads (a model folder's name, such as
    /// `birdnet-v2.4`).
    pub backbone: String,
    /// The backbone's embedding size.
    pub input_dim: usize,
    /// Units of the hidden layer.
    pub hidden: usize,
    pub bits: usize,
}

impl Versioned for HashHeadConfig {
    fn format_version(&self) -> u32 {
        self.format_version
    }

    fn check(&self) -> Result<(), String> {
        if self.architecture != ARCHITECTURE {
            return Err(format!(
                "architecture {:?}, not {ARCHITECTURE:?}",
                self.architecture
            ));
        }
        if self.backbone.is_empty() || self.backbone.contains(['/', '\\']) {
            return Err(format!(
                "backbone {:?} is not an installed model's name",
                self.backbone
            ));
        }
        let in_range = |v: usize, max: usize| (1..=max).contains(&v);
        if !in_range(self.input_dim, MAX_DIM)
            || !in_range(self.hidden, MAX_DIM)
            || !in_range(self.bits, MAX_BITS)
        {
            return Err(format!(
                "sizes out of range: input {}, hidden {}, bits {} (1-{MAX_DIM}, 1-{MAX_DIM}, 1-{MAX_BITS})",
                self.input_dim, self.hidden, self.bits
            ));
        }
        Ok(())
    }
}

/// Per-dimension centring and scaling of the backbone's embeddings.
#[derive(Debug, Clone, PartialEq)]
pub struct Standardiser {
    pub mean: Vec<f32>,
    /// `1 / standard deviation`.
    pub scale: Vec<f32>,
}

impl Standardiser {
    /// Mean and deviation of `rows` (`dim` values each); a constant dimension keeps scale 1.
    pub fn fit(rows: &[f32], dim: usize) -> Self {
        let n = (rows.len() / dim.max(1)).max(1) as f64;
        let mut mean = vec![0.0f64; dim];
        for row in rows.chunks_exact(dim.max(1)) {
            mean.iter_mut()
                .zip(row)
                .for_each(|(m, &x)| *m += f64::from(x) / n);
        }
        let mut var = vec![0.0f64; dim];
        for row in rows.chunks_exact(dim.max(1)) {
            var.iter_mut()
                .zip(row.iter().zip(&mean))
                .for_each(|(v, (&x, m))| *v += (f64::from(x) - m).powi(2) / n);
        }
        Self {
            mean: mean.iter().map(|&m| m as f32).collect(),
            scale: var
                .iter()
                .map(|&v| {
                    if v > 1e-12 {
                        1.0 / v.sqrt() as f32
                    } else {
                        1.0
                    }
                })
                .collect(),
        }
    }

    /// `rows` standardised in place.
    pub fn apply(&self, rows: &mut [f32]) {
        for row in rows.chunks_exact_mut(self.mean.len().max(1)) {
            for ((x, m), s) in row.iter_mut().zip(&self.mean).zip(&self.scale) {
                *x = (*x - m) * s;
            }
        }
    }
}

/// The head: `[n, input_dim]` standardised embeddings -> `[n, bits]` hash-layer values.
pub struct HashHead {
    pub standardiser: Standardiser,
    hidden: Linear,
    hash: Linear,
}

impl HashHead {
    pub fn load(cfg: &HashHeadConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let standardiser = Standardiser {
            mean: vb.get(cfg.input_dim, "standardise.mean")?.to_vec1()?,
            scale: vb.get(cfg.input_dim, "standardise.scale")?.to_vec1()?,
        };
        Self::with_standardiser(cfg, standardiser, vb)
    }

    /// The layers from `vb` (a training run's `VarMap`, or a model's weights) and given
    /// statistics.
    pub fn with_standardiser(
        cfg: &HashHeadConfig,
        standardiser: Standardiser,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        Ok(Self {
            standardiser,
            hidden: candle_nn::linear(cfg.input_dim, cfg.hidden, vb.pp("hidden"))?,
            hash: candle_nn::linear(cfg.hidden, cfg.bits, vb.pp("hash"))?,
        })
    }

    /// Hash-layer values of standardised embeddings (`[n, input_dim]` -> `[n, bits]`); in
    /// training, `hidden_mask` (`[n, hidden]`, already scaled) drops hidden units.
    pub fn forward_t(
        &self,
        x: &Tensor,
        hidden_mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let h = self.hidden.forward(x)?.relu()?;
        let h = match hidden_mask {
            Some(mask) => (h * mask)?,
            None => h,
        };
        self.hash.forward(&h)
    }

    /// The weights as `save` writes them.
    pub fn tensors(&self) -> candle_core::Result<HashMap<String, Tensor>> {
        let dim = self.standardiser.mean.len();
        Ok(HashMap::from([
            (
                "standardise.mean".to_string(),
                Tensor::from_slice(&self.standardiser.mean, dim, &Device::Cpu)?,
            ),
            (
                "standardise.scale".to_string(),
                Tensor::from_slice(&self.standardiser.scale, dim, &Device::Cpu)?,
            ),
            ("hidden.weight".to_string(), self.hidden.weight().clone()),
            ("hash.weight".to_string(), self.hash.weight().clone()),
            ("hidden.bias".to_string(), bias(&self.hidden)?),
            ("hash.bias".to_string(), bias(&self.hash)?),
        ]))
    }

    /// Codes (balanced sign of each row) and margins of raw backbone embeddings, which are
    /// standardised in place: `embeddings` is `n * input_dim` values.
    pub fn encode(&self, embeddings: &mut [f32], out: &mut Encoded) -> candle_core::Result<()> {
        let dim = self.standardiser.mean.len();
        self.standardiser.apply(embeddings);
        let n = embeddings.len() / dim.max(1);
        if n == 0 {
            return Ok(());
        }
        let x = Tensor::from_slice(embeddings, (n, dim), &Device::Cpu)?;
        let values = self.forward_t(&x, None)?.to_vec2::<f32>()?;
        for row in &values {
            pack_bits(balanced_bits(row), row.len().div_ceil(64), &mut out.codes);
            out.margins.extend(balanced_margins(row));
        }
        Ok(())
    }
}

/// A layer's bias (`candle_nn::linear` always makes one; zeros otherwise).
fn bias(layer: &Linear) -> candle_core::Result<Tensor> {
    match layer.bias() {
        Some(b) => Ok(b.clone()),
        None => Tensor::zeros(
            layer.weight().dim(0)?,
            candle_core::DType::F32,
            &Device::Cpu,
        ),
    }
}

/// A head with its backbone behind the engine's [`Encoder`] trait.
pub struct HeadEncoder {
    backbone: Box<dyn Encoder>,
    head: HashHead,
    info: EncoderInfo,
}

impl HeadEncoder {
    /// The head in `files` on `backbone` (the installed model its config names, loaded by the
    /// caller). A backbone of another embedding size is refused.
    pub fn from_files(
        files: ModelFiles<HashHeadConfig>,
        backbone: Box<dyn Encoder>,
    ) -> Result<Self, ModelError> {
        let cfg = &files.config;
        if backbone.info().embedding_dim != cfg.input_dim || backbone.info().bits != 0 {
            return Err(ModelError::Config {
                path: files.dir.join(super::config::CONFIG_FILE),
                reason: format!(
                    "the head reads {}-d embeddings of {}, but that model gives {}-d embeddings{}",
                    cfg.input_dim,
                    cfg.backbone,
                    backbone.info().embedding_dim,
                    if backbone.info().bits == 0 {
                        ""
                    } else {
                        " and codes of its own"
                    }
                ),
            });
        }
        let head = files.build(HashHead::load)?;
        let name = files.dir.file_name().map_or_else(
            || format!("{}-head-{}", cfg.backbone, cfg.bits),
            |n| n.to_string_lossy().into_owned(),
        );
        let info = EncoderInfo {
            name,
            weights_hash: format!("{}+{}", files.weights_hash(), backbone.info().weights_hash),
            bits: cfg.bits,
            embedding_dim: cfg.input_dim,
        };
        Ok(Self {
            backbone,
            head,
            info,
        })
    }

    pub fn head(&self) -> &HashHead {
        &self.head
    }

    pub fn backbone(&self) -> &dyn Encoder {
        self.backbone.as_ref()
    }
}

impl Encoder for HeadEncoder {
    fn info(&self) -> &EncoderInfo {
        &self.info
    }

    fn input(&self) -> EncoderInput {
        self.backbone.input()
    }

    fn encode(&self, segments: &[&[f32]], out: &mut Encoded) -> Result<(), EncodeError> {
        let mut backbone = Encoded::default();
        self.backbone.encode(segments, &mut backbone)?;
        self.head.encode(&mut backbone.embeddings, out)?;
        out.embeddings.extend(backbone.embeddings);
        Ok(())
    }

    fn codes_from_labels_on_backbone(&self) -> bool {
        true
    }

    fn attention(&self, frames: &[f32]) -> Result<Option<AttentionMap>, EncodeError> {
        self.backbone.attention(frames)
    }
}
