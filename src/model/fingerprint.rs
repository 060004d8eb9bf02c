//! The `fingerprint` encoder (exact match), after the attention-fingerprint paper: 0.96 s of
//! log-mel (96 frames x 64 bands) to a 128-d L2-normalised embedding and a K-bit code for the
//! bucket index.
//!
//! Shapes (B segments):
//! 1. each band's mean over the segment removed (cancels loudness and fixed equalisation, as
//!    the LSH baseline does), input batch norm per band, frame pairs averaged (48 of 20 ms);
//! 2. two frequency-strided 3x3 convolutions (the events encoder's band-view layers):
//!    `2 C x 16 x 48`, then the spectral-temporal attention mask with its scaling factor S;
//! 3. two more, strided in time too: `8 C x 4 x 12`; the 4 bands become channels;
//! 4. a residual pair of temporal convolutions (the ResNet-like part), averaged over
//!    `TIME_BLOCKS` blocks of time and flattened: the order of events within the segment is
//!    what tells two overlapping segments apart, so it is kept rather than pooled away;
//! 5. the split projection head of the paper: the flattened vector in `HEAD_SPLITS` parts,
//!    each projected by its own two-layer MLP, concatenated and L2-normalised;
//! 6. a dense hash layer on the embedding, balanced sign (each code half ones, so codes spread
//!    over buckets) with the straight-through gradient.

use candle_core::{D, Device, Module, ModuleT, Result, Tensor};
use candle_nn::{Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use super::attention::SpectralTemporalAttention;
use super::config::{ModelError, ModelFiles, Versioned};
use super::events::{ConvBlock, FreqConv, normalised, pool_time};
use super::hashing::{balanced_bits, balanced_margins, balanced_sign, pack_bits};
use super::{EncodeError, Encoded, Encoder, EncoderInfo, EncoderInput, Mode};
use crate::features::LOG_MEL_BANDS;

/// Frames of one fingerprint (0.96 s).
pub const SEGMENT_FRAMES: usize = 96;
/// Parts of the split projection head.
pub const HEAD_SPLITS: usize = 8;
/// Blocks of time the last feature map is averaged over before the head.
pub const TIME_BLOCKS: usize = 4;
/// Segments encoded at once.
const ENCODE_BATCH: usize = 64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FingerprintConfig {
    pub format_version: u32,
    pub bits: usize,
    pub embedding_dim: usize,
    pub front_channels: usize,
    pub pooled_channels: usize,
}

impl Versioned for FingerprintConfig {
    fn format_version(&self) -> u32 {
        self.format_version
    }

    fn check(&self) -> std::result::Result<(), String> {
        self.check_sizes()
    }
}

impl Default for FingerprintConfig {
    fn default() -> Self {
        Self {
            format_version: super::config::MODEL_FORMAT_VERSION,
            bits: 64,
            embedding_dim: 128,
            front_channels: 16,
            pooled_channels: 256,
        }
    }
}

impl FingerprintConfig {
    fn check_sizes(&self) -> std::result::Result<(), String> {
        let ok = [32, 64, 128].contains(&self.bits)
            && self.embedding_dim.is_multiple_of(HEAD_SPLITS)
            && (HEAD_SPLITS..=1024).contains(&self.embedding_dim)
            && (1..=128).contains(&self.front_channels)
            && self.pooled_channels.is_multiple_of(HEAD_SPLITS)
            && (HEAD_SPLITS..=2048).contains(&self.pooled_channels);
        if ok {
            Ok(())
        } else {
            Err(format!(
                "sizes out of range (bits 32, 64 or 128; embedding and pooled sizes multiples of {HEAD_SPLITS})"
            ))
        }
    }
}

/// What the network computes for a batch of segments.
pub struct FingerprintOutput {
    /// `B x embedding_dim`, unit length.
    pub embedding: Tensor,
    /// `B x bits`: the hash layer before the sign.
    pub hash: Tensor,
    /// `B x bits` of +-1 (straight-through gradient).
    pub code: Tensor,
    /// `B x 16 x 48`: the attention mask averaged over channels.
    pub mask: Tensor,
}

/// One part of the split projection head: a two-layer MLP.
struct HeadPart {
    hidden: Linear,
    out: Linear,
}

pub struct FingerprintNet {
    bn_input: candle_nn::BatchNorm,
    front: [FreqConv; 2],
    attention: SpectralTemporalAttention,
    back: [FreqConv; 2],
    temporal: [ConvBlock; 2],
    head: Vec<HeadPart>,
    hash: Linear,
}

impl FingerprintNet {
    pub fn load(cfg: &FingerprintConfig, vb: VarBuilder) -> Result<Self> {
        let c = cfg.front_channels;
        let vf = vb.pp("front");
        let part_in = TIME_BLOCKS * cfg.pooled_channels / HEAD_SPLITS;
        let part_out = cfg.embedding_dim / HEAD_SPLITS;
        let head = (0..HEAD_SPLITS)
            .map(|i| {
                let vp = vb.pp("head").pp(i);
                Ok(HeadPart {
                    hidden: candle_nn::linear(part_in, part_in, vp.pp("hidden"))?,
                    out: candle_nn::linear(part_in, part_out, vp.pp("out"))?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            bn_input: candle_nn::batch_norm(LOG_MEL_BANDS, 1e-5, vb.pp("bn_input"))?,
            front: [
                FreqConv::load(1, c, 1, vf.pp("0"))?,
                FreqConv::load(c, 2 * c, 1, vf.pp("1"))?,
            ],
            attention: SpectralTemporalAttention::load(
                2 * c,
                LOG_MEL_BANDS / 4,
                vb.pp("attention"),
            )?,
            back: [
                FreqConv::load(2 * c, 4 * c, 2, vf.pp("2"))?,
                FreqConv::load(4 * c, 8 * c, 2, vf.pp("3"))?,
            ],
            temporal: [
                ConvBlock::load(32 * c, cfg.pooled_channels, 1, vb.pp("temporal").pp(0))?,
                ConvBlock::load(
                    cfg.pooled_channels,
                    cfg.pooled_channels,
                    1,
                    vb.pp("temporal").pp(1),
                )?,
            ],
            head,
            hash: candle_nn::linear(cfg.embedding_dim, cfg.bits, vb.pp("hash"))?,
        })
    }

    /// `x`: `B x T x 64` log-mel frames (dB); `T` is normally [`SEGMENT_FRAMES`], at least 4.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<FingerprintOutput> {
        let x = x.transpose(1, 2)?.contiguous()?; // B x 64 x T
        let x = x.broadcast_sub(&x.mean_keepdim(2)?)?;
        let mut map = pool_time(&self.bn_input.forward_t(&x, train)?)?.unsqueeze(1)?;
        for layer in &self.front {
            map = layer.forward_t(&map, train)?;
        }
        let (mut map, mask) = self.attention.forward(&map)?;
        for layer in &self.back {
            map = layer.forward_t(&map, train)?;
        }
        let (b, c, f, t) = map.dims4()?;
        let h = self.temporal[0].forward_t(&map.reshape((b, c * f, t))?, train)?;
        let h = (self.temporal[1].forward_t(&h, train)? + h)?; // residual
        let pooled = time_blocks(&h)?;
        let embedding = l2_normalise(&self.project(&pooled)?)?;
        let hash = self.hash.forward(&embedding)?;
        Ok(FingerprintOutput {
            code: balanced_sign(&hash)?,
            hash,
            mask: mask.mean(1)?,
            embedding,
        })
    }

    /// The split projection head: each part of the pooled vector through its own MLP.
    fn project(&self, pooled: &Tensor) -> Result<Tensor> {
        let part = pooled.dim(1)? / HEAD_SPLITS;
        let parts = self
            .head
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let x = pooled.narrow(1, i * part, part)?;
                p.out.forward(&p.hidden.forward(&x)?.elu(1.0)?)
            })
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&parts, 1)
    }
}

/// `B x C x T` averaged over [`TIME_BLOCKS`] nearly equal blocks of time, block-major:
/// `B x (TIME_BLOCKS * C)`. A map shorter than that repeats its last steps.
fn time_blocks(h: &Tensor) -> Result<Tensor> {
    let t = h.dim(D::Minus1)?;
    let blocks = (0..TIME_BLOCKS)
        .map(|i| {
            let start = (i * t / TIME_BLOCKS).min(t - 1);
            let end = ((i + 1) * t / TIME_BLOCKS).max(start + 1);
            h.narrow(D::Minus1, start, end - start)?.mean(D::Minus1)
        })
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&blocks, 1)
}

/// Rows scaled to unit length.
pub fn l2_normalise(x: &Tensor) -> Result<Tensor> {
    let norm = (x.sqr()?.sum_keepdim(1)? + 1e-12)?.sqrt()?;
    x.broadcast_div(&norm)
}

/// A trained `fingerprint` model behind the engine's [`Encoder`] trait.
pub struct FingerprintEncoder {
    net: FingerprintNet,
    info: EncoderInfo,
}

impl FingerprintEncoder {
    pub fn load(dir: &std::path::Path) -> std::result::Result<Self, ModelError> {
        Self::from_files(ModelFiles::<FingerprintConfig>::read(dir)?)
    }

    /// Builds the encoder from a model's files already read (see [`ModelFiles::from_bytes`]).
    pub fn from_files(
        files: ModelFiles<FingerprintConfig>,
    ) -> std::result::Result<Self, ModelError> {
        let net = files.build(FingerprintNet::load)?;
        let info = EncoderInfo {
            name: format!("fingerprint-{}", files.config.bits),
            weights_hash: files.weights_hash(),
            bits: files.config.bits,
            embedding_dim: files.config.embedding_dim,
        };
        Ok(Self { net, info })
    }

    pub fn net(&self) -> &FingerprintNet {
        &self.net
    }
}

impl Encoder for FingerprintEncoder {
    fn info(&self) -> &EncoderInfo {
        &self.info
    }

    fn input(&self) -> EncoderInput {
        EncoderInput::log_mel(Mode::Fingerprint)
    }

    fn encode(
        &self,
        segments: &[&[f32]],
        out: &mut Encoded,
    ) -> std::result::Result<(), EncodeError> {
        super::check_segments(segments, LOG_MEL_BANDS)?;
        Ok(encode_segments(&self.net, segments, out)?)
    }

    fn attention(
        &self,
        log_mel: &[f32],
    ) -> std::result::Result<Option<super::AttentionMap>, EncodeError> {
        Ok(attention_map(&self.net, log_mel)?)
    }
}

/// The attention masks of consecutive [`SEGMENT_FRAMES`] windows of a clip, side by side (the
/// last window ends at the clip's end and gives only the columns past the one before).
pub fn attention_map(net: &FingerprintNet, log_mel: &[f32]) -> Result<Option<super::AttentionMap>> {
    let frames = log_mel.len() / LOG_MEL_BANDS;
    if frames == 0 {
        return Ok(None);
    }
    let starts: Vec<usize> = if frames <= SEGMENT_FRAMES {
        vec![0]
    } else {
        let mut s: Vec<usize> = (0..frames - SEGMENT_FRAMES)
            .step_by(SEGMENT_FRAMES)
            .collect();
        s.push(frames - SEGMENT_FRAMES);
        s
    };
    let windows: Vec<Vec<f32>> = starts
        .iter()
        .map(|&s| {
            fit_to_segment(
                &log_mel[s * LOG_MEL_BANDS..(s + SEGMENT_FRAMES).min(frames) * LOG_MEL_BANDS],
            )
        })
        .collect();
    let mut masks = Vec::new();
    for batch in windows.chunks(ENCODE_BATCH) {
        let flat: Vec<f32> = batch.concat();
        let x = Tensor::from_vec(
            flat,
            (batch.len(), SEGMENT_FRAMES, LOG_MEL_BANDS),
            &Device::Cpu,
        )?;
        masks.extend(net.forward_t(&x, false)?.mask.to_vec3::<f32>()?);
    }
    let rows = masks.first().map_or(0, Vec::len);
    let per_column = SEGMENT_FRAMES
        / masks
            .first()
            .and_then(|m| m.first())
            .map_or(1, Vec::len)
            .max(1);
    // Column c of window w covers frames starts[w] + c * per_column; keep each frame's first.
    let total = frames.div_ceil(per_column);
    let mut values = vec![0.0f32; rows * total];
    let mut next = 0;
    for (w, mask) in masks.iter().enumerate() {
        let first = starts[w] / per_column;
        for (r, row) in mask.iter().enumerate() {
            for (c, &v) in row.iter().enumerate() {
                let col = first + c;
                if col >= next && col < total {
                    values[r * total + col] = v;
                }
            }
        }
        next = (first + mask.first().map_or(0, Vec::len)).min(total);
    }
    Ok(Some(super::AttentionMap {
        rows,
        columns: total,
        values,
        frames: 0..total * per_column,
        row_edges_hz: None,
    }))
}

/// Codes and embeddings of segments, in order. Every segment is cut or looped to
/// [`SEGMENT_FRAMES`] frames (a file's last segment can be shorter).
pub fn encode_segments(net: &FingerprintNet, segments: &[&[f32]], out: &mut Encoded) -> Result<()> {
    for batch in segments.chunks(ENCODE_BATCH) {
        let flat: Vec<f32> = batch.iter().flat_map(|s| fit_to_segment(s)).collect();
        let x = Tensor::from_vec(
            flat,
            (batch.len(), SEGMENT_FRAMES, LOG_MEL_BANDS),
            &Device::Cpu,
        )?;
        let output = net.forward_t(&x, false)?;
        let hash: Vec<Vec<f32>> = output.hash.to_vec2()?;
        let embedding: Vec<Vec<f32>> = output.embedding.to_vec2()?;
        for (h, e) in hash.iter().zip(embedding) {
            pack_bits(balanced_bits(h), h.len().div_ceil(64), &mut out.codes);
            out.margins.extend(balanced_margins(h));
            out.embeddings.extend(normalised(e));
        }
    }
    Ok(())
}

/// Exactly [`SEGMENT_FRAMES`] frames: a longer segment is cut, a shorter one looped.
pub fn fit_to_segment(segment: &[f32]) -> Vec<f32> {
    let frames = (segment.len() / LOG_MEL_BANDS).max(1);
    (0..SEGMENT_FRAMES)
        .flat_map(|t| {
            let f = t % frames;
            segment[f * LOG_MEL_BANDS..(f + 1) * LOG_MEL_BANDS]
                .iter()
                .copied()
        })
        .collect()
}
