//! The `events` encoder (similar sounds): a small CNN over log-mel with spectral-temporal
//! attention, attention pooling over time (any clip length), a float embedding, a dense hash
//! layer to K bits and AudioNet's balanced sign.
//!
//! Shapes (B clips of T log-mel frames, 64 bands, 10 ms):
//! 1. input batch norm per band, then mean-pooling of frame pairs (20 ms frames, T/2);
//! 2. two 3x3 convolutions over (frequency, time), stride 2 in frequency: `2 C1 x 16 x T/2`
//!    (written as shifted band views and a 1-D convolution: matmul-shaped on the CPU);
//! 3. the spectral-temporal attention mask on that map ([`super::attention`]);
//! 4. two more such convolutions, stride 2 in frequency and time: `8 C1 x 4 x T/8`;
//! 5. maximum over the 4 remaining bands, one temporal convolution (k = 3) to `pooled_channels`;
//! 6. attention pooling and max pooling over time, concatenated, then a linear embedding;
//! 7. heads on the embedding: the hash layer (K) and a classifier (training only; the app can
//!    show its guess).

use candle_core::{D, Device, Module, ModuleT, Result, Tensor};
use candle_nn::ops::softmax;
use candle_nn::{BatchNorm, Conv1d, Conv1dConfig, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use super::attention::SpectralTemporalAttention;
use super::config::{ModelError, ModelFiles, Versioned};
use super::hashing::{balanced_bits, balanced_sign, pack_bits};
use super::{AttentionMap, EncodeError, Encoded, Encoder, EncoderInfo, EncoderInput, Segmentation};
use crate::features::LOG_MEL_BANDS;
use crate::features::segment::SILENCE_DB;
use crate::features::{FrontEnd, LogMelConfig};

/// Frames shorter than this are repeated up to it (0.16 s), so every layer has a time step.
pub const MIN_FRAMES: usize = 16;
/// Log-mel frames averaged into one model frame.
pub const TIME_POOL: usize = 2;
/// Frequency rows of the attention map (64 bands, two layers of stride 2: 4 bands a row).
pub const MASK_BANDS: usize = LOG_MEL_BANDS / 4;
/// Clips encoded at once.
const ENCODE_BATCH: usize = 32;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventsConfig {
    pub format_version: u32,
    pub bits: usize,
    pub embedding_dim: usize,
    /// Channels of the 2-D front end.
    pub front_channels: usize,
    /// Whether the spectral-temporal attention mask reweights the front end's map (an ablation).
    #[serde(default = "enabled")]
    pub attention: bool,
    /// The hash layer reads the classifier's posterior (class probabilities) instead of the
    /// embedding: the best bit for a clip is then a mixture of its likely classes' bits.
    #[serde(default)]
    pub hash_from_posterior: bool,
    pub pooled_channels: usize,
    /// Class names of the classification head, in target order.
    pub labels: Vec<String>,
    /// How library files are cut for this model, in log-mel frames.
    pub segmentation: Segmentation,
}

pub(crate) fn enabled() -> bool {
    true
}

impl Versioned for EventsConfig {
    fn format_version(&self) -> u32 {
        self.format_version
    }

    fn check(&self) -> std::result::Result<(), String> {
        self.check_sizes()
    }
}

impl EventsConfig {
    pub const DEFAULT_FRONT_CHANNELS: usize = 16;

    pub fn new(bits: usize, labels: Vec<String>) -> Self {
        Self {
            format_version: super::config::MODEL_FORMAT_VERSION,
            bits,
            embedding_dim: 128,
            front_channels: Self::DEFAULT_FRONT_CHANNELS,
            attention: true,
            hash_from_posterior: true,
            pooled_channels: 256,
            labels,
            // 5 s windows (an ESC-50 clip is one segment) every 2.5 s.
            segmentation: Segmentation {
                window: 500,
                hop: 250,
                query_hop: 250,
            },
        }
    }

    fn check_sizes(&self) -> std::result::Result<(), String> {
        let s = &self.segmentation;
        let ok = [16, 32, 64, 128].contains(&self.bits)
            && (1..=4096).contains(&self.embedding_dim)
            && (1..=256).contains(&self.front_channels)
            && (1..=4096).contains(&self.pooled_channels)
            && !self.labels.is_empty()
            && s.window >= MIN_FRAMES
            && s.hop > 0
            && s.query_hop > 0;
        if ok {
            Ok(())
        } else {
            Err("sizes out of range (bits must be 16, 32, 64 or 128)".into())
        }
    }
}

/// Everything the network computes for a batch.
pub struct EventsOutput {
    /// `B x embedding_dim`.
    pub embedding: Tensor,
    /// One per hash head; a loaded model has one.
    pub heads: Vec<HeadOutput>,
    /// `B x classes`.
    pub logits: Tensor,
    /// `B x MASK_BANDS x T/2`: the attention mask averaged over channels.
    pub mask: Tensor,
}

/// 1-D convolution, batch norm, ReLU.
pub(crate) struct ConvBlock {
    conv: Conv1d,
    bn: BatchNorm,
}

impl ConvBlock {
    pub(crate) fn load(cin: usize, cout: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        let cfg = Conv1dConfig {
            padding: 1,
            stride,
            ..Default::default()
        };
        Ok(Self {
            conv: candle_nn::conv1d_no_bias(cin, cout, 3, cfg, vb.pp("conv"))?,
            bn: candle_nn::batch_norm(cout, 1e-5, vb.pp("bn"))?,
        })
    }

    pub(crate) fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.bn.forward_t(&self.conv.forward(x)?, train)?.relu()
    }
}

/// A 3x3 convolution over (frequency, time) with stride 2 in frequency, batch norm and ReLU:
/// `B x Cin x F x T` to `B x Cout x F/2 x T`. Output band `f` sees input bands `2f-1, 2f, 2f+1`;
/// the three bands' channels become the input channels of a 1-D convolution over time, which
/// candle runs as a matrix product (its direct 2-D convolution is several times slower).
pub(crate) struct FreqConv {
    block: ConvBlock,
    cout: usize,
}

impl FreqConv {
    pub(crate) fn load(
        cin: usize,
        cout: usize,
        time_stride: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            block: ConvBlock::load(3 * cin, cout, time_stride, vb)?,
            cout,
        })
    }

    pub(crate) fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (b, c, f, t) = x.dims4()?;
        let half = f / 2;
        // B x F x C x T, one zero band either side: band i is row i + 1.
        let padded = x.permute((0, 2, 1, 3))?.pad_with_zeros(1, 1, 1)?;
        let lower_pair = padded.narrow(1, 0, 2 * half)?.reshape((b, half, 2, c, t))?;
        let upper = padded
            .narrow(1, 2, 2 * half)?
            .reshape((b, half, 2, c, t))?
            .narrow(2, 0, 1)?;
        let patches = Tensor::cat(&[lower_pair, upper], 2)?.reshape((b * half, 3 * c, t))?;
        let y = self.block.forward_t(&patches, train)?; // (B * F/2) x Cout x T'
        let t_out = y.dim(2)?;
        y.reshape((b, half, self.cout, t_out))?
            .permute((0, 2, 1, 3))?
            .contiguous()
    }
}

/// The dense hash layer of one code length.
struct HashHead {
    bits: usize,
    linear: Linear,
}

/// One code length's hash-layer output and codes.
pub struct HeadOutput {
    pub bits: usize,
    /// `B x bits`: the hash layer before the sign.
    pub hash: Tensor,
    /// `B x bits` of +-1, straight-through gradient.
    pub code: Tensor,
}

pub struct EventsNet {
    bn_input: BatchNorm,
    /// Before the attention mask (full time resolution).
    front: [FreqConv; 2],
    attention: Option<SpectralTemporalAttention>,
    /// After it (stride 2 in time too).
    back: [FreqConv; 2],
    temporal: ConvBlock,
    pool_score: Linear,
    embed: Linear,
    /// Keeps the embedding at unit scale per dimension, so the heads learn at one pace.
    bn_embed: BatchNorm,
    heads: Vec<HashHead>,
    classify: Linear,
    hash_from_posterior: bool,
}

impl EventsNet {
    /// The network of a model folder: one hash head, `cfg.bits`.
    pub fn load(cfg: &EventsConfig, vb: VarBuilder) -> Result<Self> {
        Self::load_heads(cfg, &[cfg.bits], vb)
    }

    /// The network with a hash head per code length (training several lengths at once). Head
    /// weights are named `hash.<bits>`.
    pub fn load_heads(cfg: &EventsConfig, bits: &[usize], vb: VarBuilder) -> Result<Self> {
        let c = cfg.front_channels;
        let vf = vb.pp("front");
        let hash_input = if cfg.hash_from_posterior {
            cfg.labels.len()
        } else {
            cfg.embedding_dim
        };
        let heads = bits
            .iter()
            .map(|&k| {
                Ok(HashHead {
                    bits: k,
                    linear: candle_nn::linear(hash_input, k, vb.pp("hash").pp(k))?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            bn_input: candle_nn::batch_norm(LOG_MEL_BANDS, 1e-5, vb.pp("bn_input"))?,
            front: [
                FreqConv::load(1, c, 1, vf.pp("0"))?,
                FreqConv::load(c, 2 * c, 1, vf.pp("1"))?,
            ],
            attention: cfg
                .attention
                .then(|| SpectralTemporalAttention::load(2 * c, MASK_BANDS, vb.pp("attention")))
                .transpose()?,
            back: [
                FreqConv::load(2 * c, 4 * c, 2, vf.pp("2"))?,
                FreqConv::load(4 * c, 8 * c, 2, vf.pp("3"))?,
            ],
            temporal: ConvBlock::load(8 * c, cfg.pooled_channels, 1, vb.pp("temporal"))?,
            pool_score: candle_nn::linear(cfg.pooled_channels, 1, vb.pp("pool_score"))?,
            embed: candle_nn::linear(2 * cfg.pooled_channels, cfg.embedding_dim, vb.pp("embed"))?,
            bn_embed: candle_nn::batch_norm(cfg.embedding_dim, 1e-5, vb.pp("bn_embed"))?,
            heads,
            classify: candle_nn::linear(cfg.embedding_dim, cfg.labels.len(), vb.pp("classify"))?,
            hash_from_posterior: cfg.hash_from_posterior,
        })
    }

    /// `x`: `B x T x 64` log-mel frames (dB), any `T >= 1`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<EventsOutput> {
        let x = repeat_to_min_frames(x)?.transpose(1, 2)?.contiguous()?; // B x 64 x T
        let x = pool_time(&self.bn_input.forward_t(&x, train)?)?.unsqueeze(1)?; // B x 1 x 64 x T2
        let mut map = x;
        for layer in &self.front {
            map = layer.forward_t(&map, train)?;
        }
        let (mut map, mask) = match &self.attention {
            Some(attention) => attention.forward(&map)?,
            None => (map.clone(), map.ones_like()?),
        };
        for layer in &self.back {
            map = layer.forward_t(&map, train)?;
        }
        let h = self.temporal.forward_t(&map.max(2)?, train)?;
        let embedding = self
            .bn_embed
            .forward_t(&self.embed.forward(&self.pool(&h)?)?, train)?;
        let logits = self.classify.forward(&embedding)?;
        let hash_input = if self.hash_from_posterior {
            softmax(&logits, D::Minus1)?
        } else {
            embedding.clone()
        };
        let heads = self
            .heads
            .iter()
            .map(|head| {
                let hash = head.linear.forward(&hash_input)?;
                Ok(HeadOutput {
                    bits: head.bits,
                    code: balanced_sign(&hash)?,
                    hash,
                })
            })
            .collect::<Result<_>>()?;
        Ok(EventsOutput {
            heads,
            logits,
            mask: mask.mean(1)?,
            embedding,
        })
    }

    /// Attention pooling and max pooling over time: `B x C x T` to `B x 2C`.
    fn pool(&self, h: &Tensor) -> Result<Tensor> {
        let frames = h.transpose(1, 2)?.contiguous()?; // B x T x C
        let weights = softmax(&self.pool_score.forward(&frames)?, 1)?; // B x T x 1
        let attended = frames.broadcast_mul(&weights)?.sum(1)?;
        Tensor::cat(&[attended, h.max(D::Minus1)?], 1)
    }
}

/// Repeats a clip shorter than [`MIN_FRAMES`] along time until it is that long.
fn repeat_to_min_frames(x: &Tensor) -> Result<Tensor> {
    let t = x.dim(1)?;
    if t >= MIN_FRAMES {
        return Ok(x.clone());
    }
    x.repeat((1, MIN_FRAMES.div_ceil(t), 1))?
        .narrow(1, 0, MIN_FRAMES)
}

/// Means of frame pairs along the last axis (an odd last frame is dropped).
pub(crate) fn pool_time(x: &Tensor) -> Result<Tensor> {
    let (b, c, t) = x.dims3()?;
    let t2 = t / TIME_POOL;
    x.narrow(2, 0, t2 * TIME_POOL)?
        .reshape((b, c, t2, TIME_POOL))?
        .mean(3)
}

/// Leading and trailing frames of (near) digital silence removed; a clip that is all silence is
/// kept whole. ESC-50 pads short events with zeros, which would otherwise dominate the pooling.
pub fn trim_silence(frames: &[f32]) -> &[f32] {
    let kept = loud_frames(frames);
    &frames[kept.start * LOG_MEL_BANDS..kept.end * LOG_MEL_BANDS]
}

/// The frames [`trim_silence`] keeps.
fn loud_frames(frames: &[f32]) -> std::ops::Range<usize> {
    let loud = |f: &[f32]| f.iter().any(|&x| x >= SILENCE_DB);
    let rows: Vec<&[f32]> = frames.chunks_exact(LOG_MEL_BANDS).collect();
    match (
        rows.iter().position(|f| loud(f)),
        rows.iter().rposition(|f| loud(f)),
    ) {
        (Some(first), Some(last)) => first..last + 1,
        _ => 0..rows.len(),
    }
}

/// A trained `events` model behind the engine's [`Encoder`] trait.
pub struct EventsEncoder {
    net: EventsNet,
    config: EventsConfig,
    info: EncoderInfo,
}

impl EventsEncoder {
    /// Loads `config.json` and `model.safetensors` from a model folder.
    pub fn load(dir: &std::path::Path) -> std::result::Result<Self, ModelError> {
        Self::from_files(ModelFiles::<EventsConfig>::read(dir)?)
    }

    /// Builds the encoder from a model's files already read (see [`ModelFiles::from_bytes`]).
    pub fn from_files(files: ModelFiles<EventsConfig>) -> std::result::Result<Self, ModelError> {
        let net = files.build(EventsNet::load)?;
        let info = EncoderInfo {
            name: format!("events-{}", files.config.bits),
            weights_hash: files.weights_hash(),
            bits: files.config.bits,
            embedding_dim: files.config.embedding_dim,
        };
        Ok(Self {
            net,
            config: files.config,
            info,
        })
    }

    pub fn config(&self) -> &EventsConfig {
        &self.config
    }

    pub fn net(&self) -> &EventsNet {
        &self.net
    }

    /// The attention mask of one clip, averaged over channels: `MASK_BANDS` rows by the time
    /// steps of the last feature map, which span the clip without its leading and trailing
    /// silence.
    pub fn attention_map(&self, log_mel: &[f32]) -> Result<AttentionMap> {
        let kept = loud_frames(log_mel);
        let clip = &log_mel[kept.start * LOG_MEL_BANDS..kept.end * LOG_MEL_BANDS];
        let x = Tensor::from_slice(clip, (1, kept.len(), LOG_MEL_BANDS), &Device::Cpu)?;
        let mask = self.net.forward_t(&x, false)?.mask.squeeze(0)?;
        let (rows, columns) = mask.dims2()?;
        Ok(AttentionMap {
            rows,
            columns,
            values: mask.flatten_all()?.to_vec1()?,
            frames: kept,
            row_edges_hz: None,
        })
    }
}

impl Encoder for EventsEncoder {
    fn info(&self) -> &EncoderInfo {
        &self.info
    }

    fn input(&self) -> EncoderInput {
        EncoderInput {
            front_end: FrontEnd::LogMel(LogMelConfig::default()),
            segmentation: self.config.segmentation,
        }
    }

    fn encode(
        &self,
        segments: &[&[f32]],
        out: &mut Encoded,
    ) -> std::result::Result<(), EncodeError> {
        super::check_segments(segments, LOG_MEL_BANDS)?;
        let trimmed: Vec<&[f32]> = segments.iter().map(|s| trim_silence(s)).collect();
        encode_clips(&self.net, &trimmed, out)?;
        Ok(())
    }

    /// Where hiding a part of the clip moves its embedding most ([`super::occlusion`]), over
    /// the clip without its leading and trailing silence. The network's own attention mask
    /// ([`EventsEncoder::attention_map`]) favours the same bands whatever it hears.
    fn attention(&self, log_mel: &[f32]) -> std::result::Result<Option<AttentionMap>, EncodeError> {
        if log_mel.len() < MIN_FRAMES * LOG_MEL_BANDS {
            return Ok(None);
        }
        super::occlusion::occlusion_map(self, log_mel, LOG_MEL_BANDS, loud_frames(log_mel))
    }
}

/// Codes and unit-length embeddings of clips (frame-major log-mel, already trimmed), in order;
/// returns the classification head's class for each clip (argmax of the logits).
pub fn encode_clips(net: &EventsNet, clips: &[&[f32]], out: &mut Encoded) -> Result<Vec<usize>> {
    let mut codes = vec![Vec::new(); clips.len()];
    let mut embeddings = vec![Vec::new(); clips.len()];
    let mut classes = vec![0; clips.len()];
    for_each_output(net, clips, &mut |i, output, row| {
        let hash: Vec<f32> = output.heads[0].hash.get(row)?.to_vec1()?;
        pack_bits(balanced_bits(&hash), hash.len().div_ceil(64), &mut codes[i]);
        embeddings[i] = normalised(output.embedding.get(row)?.to_vec1()?);
        let logits: Vec<f32> = output.logits.get(row)?.to_vec1()?;
        classes[i] = (0..logits.len())
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
            .unwrap_or(0);
        Ok(())
    })?;
    out.codes.extend(codes.into_iter().flatten());
    out.embeddings.extend(embeddings.into_iter().flatten());
    Ok(classes)
}

/// Runs the network over clips in batches of equal length; `on_clip(clip, output, row)`.
fn for_each_output(
    net: &EventsNet,
    clips: &[&[f32]],
    on_clip: &mut dyn FnMut(usize, &EventsOutput, usize) -> Result<()>,
) -> Result<()> {
    let mut order: Vec<usize> = (0..clips.len()).collect();
    order.sort_by_key(|&i| clips[i].len());
    for group in order.chunk_by(|&a, &b| clips[a].len() == clips[b].len()) {
        for batch in group.chunks(ENCODE_BATCH) {
            let frames = clips[batch[0]].len() / LOG_MEL_BANDS;
            let flat: Vec<f32> = batch
                .iter()
                .flat_map(|&i| clips[i].iter().copied())
                .collect();
            let x = Tensor::from_vec(flat, (batch.len(), frames, LOG_MEL_BANDS), &Device::Cpu)?;
            let output = net.forward_t(&x, false)?;
            for (row, &i) in batch.iter().enumerate() {
                on_clip(i, &output, row)?;
            }
        }
    }
    Ok(())
}

pub(crate) fn normalised(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}
