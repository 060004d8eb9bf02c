//! Conversion of `BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite` into a [`BirdNetConfig`] and named
//! candle tensors (see the module docs of [`super`] for the names and layouts).
//!
//! The importer walks the graph's data flow from the input and recognises each part of BirdNET
//! v2.4 (normalisation, the two STFT/mel branches, stem, inverted-residual blocks, head,
//! classifier), reading sizes and constants from the ops it meets. Anything else (another
//! network, a float16 or quantized file, another input size) is refused with the reason.

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use super::{
    BirdNetConfig, BlockConfig, FORMAT_VERSION, HeadConfig, MelBranchConfig, SAMPLE_RATE,
    StemConfig, WINDOW_SAMPLES,
};
use crate::model::tflite::{
    Activation, Model, Opcode, Operator, Options, Padding, TensorType, TfliteError,
};

/// The file this importer knows.
pub const SOURCE_FILE: &str = "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite";
/// Weight prefixes of the mel branches, in channel order.
const BRANCH_NAMES: [&str; 2] = ["mel_a", "mel_b"];
/// The normalisation maps [0, 1) to [-1, 1): subtract this, then multiply by the next.
const NORMALIZE_OFFSET: f32 = 0.5;
const NORMALIZE_SCALE: f32 = 2.0;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read the TFLite file: {0}")]
    Tflite(#[from] TfliteError),
    #[error("a {0} model: only the FP32 BirdNET v2.4 file ({SOURCE_FILE}) can be converted")]
    Precision(&'static str),
    #[error("input is {dtype:?} {shape:?}; BirdNET v2.4 takes float32 [N, 144000] (3 s at 48 kHz)")]
    Input { dtype: TensorType, shape: Vec<i32> },
    #[error("not BirdNET v2.4: {0}")]
    NotBirdNet(String),
    #[error("the converted config is invalid: {0}")]
    Config(String),
    #[error("building the weight tensors: {0}")]
    Candle(#[from] candle_core::Error),
}

type Result<T> = std::result::Result<T, ImportError>;

fn not_birdnet(reason: impl Into<String>) -> ImportError {
    ImportError::NotBirdNet(reason.into())
}

/// Converts the TFLite file's bytes: the config and the weights by name.
pub fn convert(bytes: &[u8]) -> Result<(BirdNetConfig, HashMap<String, Tensor>)> {
    let model = Model::parse(bytes)?;
    check_precision(&model)?;
    let input = check_input(&model)?;
    let mut g = Graph::new(&model);
    let mut w = Weights::default();
    let (normalize_epsilon, normalized) = walk_normalize(&mut g, input)?;
    let (branches, image) = walk_front_end(&mut g, normalized, &mut w)?;
    let x = walk_affine(&mut g, image, "spec_norm", Activation::None, &mut w)?;
    let (stem, x) = walk_stem(&mut g, x, &branches, &mut w)?;
    let (blocks, x) = walk_blocks(&mut g, x, stem.channels, &mut w)?;
    let (head, embedding) = walk_head(&mut g, x, &mut w)?;
    walk_classifier(&mut g, embedding)?;
    g.check_all_visited()?;
    let cfg = BirdNetConfig {
        format_version: FORMAT_VERSION,
        source: SOURCE_FILE.into(),
        sample_rate: SAMPLE_RATE,
        window_samples: WINDOW_SAMPLES,
        normalize_epsilon,
        branches,
        stem,
        blocks,
        head,
    };
    cfg.check().map_err(ImportError::Config)?;
    Ok((cfg, w.0))
}

fn check_precision(model: &Model<'_>) -> Result<()> {
    let has = |f: &dyn Fn(&crate::model::tflite::TensorInfo) -> bool| model.tensors.iter().any(f);
    if has(&|t| t.dtype == TensorType::Float16)
        || model
            .operators
            .iter()
            .any(|op| op.opcode == Opcode::Dequantize)
    {
        return Err(ImportError::Precision("float16"));
    }
    if has(&|t| {
        t.quantized
            || matches!(
                t.dtype,
                TensorType::Int8 | TensorType::UInt8 | TensorType::Int16
            )
    }) {
        return Err(ImportError::Precision("quantized (integer)"));
    }
    Ok(())
}

fn check_input(model: &Model<'_>) -> Result<usize> {
    let [input] = model.inputs[..] else {
        return Err(not_birdnet(format!(
            "{} inputs, expected 1",
            model.inputs.len()
        )));
    };
    let t = model.tensor(input)?;
    let batch_ok = |d: i32| d == 1 || d == -1;
    let shape_ok = matches!(t.shape[..], [n, len] if batch_ok(n) && len as usize == WINDOW_SAMPLES);
    let signature_ok = t
        .shape_signature
        .as_ref()
        .is_none_or(|s| matches!(s[..], [n, len] if batch_ok(n) && len as usize == WINDOW_SAMPLES));
    if t.dtype != TensorType::Float32 || !shape_ok || !signature_ok {
        return Err(ImportError::Input {
            dtype: t.dtype,
            shape: t.shape_signature.clone().unwrap_or_else(|| t.shape.clone()),
        });
    }
    Ok(input)
}

// ---------------------------------------------------------------------------------------------
// Graph navigation
// ---------------------------------------------------------------------------------------------

/// The model's data flow: who makes and who reads each tensor, and which ops were recognised.
struct Graph<'m> {
    model: &'m Model<'m>,
    producer: Vec<Option<usize>>,
    consumers: Vec<Vec<usize>>,
    visited: Vec<bool>,
}

impl<'m> Graph<'m> {
    fn new(model: &'m Model<'m>) -> Self {
        let mut producer = vec![None; model.tensors.len()];
        let mut consumers = vec![Vec::new(); model.tensors.len()];
        for (i, op) in model.operators.iter().enumerate() {
            for &t in &op.outputs {
                if let Some(p) = usize::try_from(t).ok().and_then(|t| producer.get_mut(t)) {
                    *p = Some(i);
                }
            }
            for &t in &op.inputs {
                if let Some(c) = usize::try_from(t).ok().and_then(|t| consumers.get_mut(t)) {
                    // An op reading a tensor twice (x * x) is one reader.
                    if c.last() != Some(&i) {
                        c.push(i);
                    }
                }
            }
        }
        Self {
            model,
            producer,
            consumers,
            visited: vec![false; model.operators.len()],
        }
    }

    fn op(&self, i: usize) -> &'m Operator {
        &self.model.operators[i]
    }

    fn name(&self, t: usize) -> &str {
        self.model.tensors.get(t).map_or("?", |t| t.name.as_str())
    }

    /// Tensor index of an op's input `slot` (`None` when absent or omitted).
    fn input(&self, op: usize, slot: usize) -> Option<usize> {
        self.op(op)
            .inputs
            .get(slot)
            .and_then(|&t| usize::try_from(t).ok())
    }

    fn output(&self, op: usize) -> Result<usize> {
        match self.op(op).outputs[..] {
            [t] => usize::try_from(t).map_err(|_| not_birdnet("an op without an output")),
            _ => Err(not_birdnet(format!(
                "op {op} ({:?}) has {} outputs, expected 1",
                self.op(op).opcode,
                self.op(op).outputs.len()
            ))),
        }
    }

    /// Ops reading `t`'s values (SHAPE ops read only its shape and are skipped).
    fn readers(&self, t: usize) -> impl Iterator<Item = usize> + '_ {
        self.consumers[t]
            .iter()
            .copied()
            .filter(|&i| self.op(i).opcode != Opcode::Shape)
    }

    /// The op of kind `opcode` reading `t` (exactly one), marked as recognised.
    fn reader(&mut self, t: usize, opcode: Opcode, what: &str) -> Result<usize> {
        let found: Vec<usize> = self
            .readers(t)
            .filter(|&i| self.op(i).opcode == opcode)
            .collect();
        match found[..] {
            [i] => {
                self.visited[i] = true;
                Ok(i)
            }
            _ => Err(not_birdnet(format!(
                "expected one {what} ({opcode:?}) reading `{}`, found {}",
                self.name(t),
                found.len()
            ))),
        }
    }

    /// Whether some op of kind `opcode` reads `t`.
    fn has_reader(&self, t: usize, opcode: Opcode) -> bool {
        self.readers(t).any(|i| self.op(i).opcode == opcode)
    }

    /// Follows `t` through reshaping ops (RESHAPE, SQUEEZE, EXPAND_DIMS) while each is its only
    /// reader; returns the last tensor.
    fn through_layout(&mut self, mut t: usize) -> Result<usize> {
        loop {
            let readers: Vec<usize> = self.readers(t).collect();
            match readers[..] {
                [i] if is_layout(&self.op(i).opcode) && self.input(i, 0) == Some(t) => {
                    self.visited[i] = true;
                    t = self.output(i)?;
                }
                _ => return Ok(t),
            }
        }
    }

    /// The op making `t`, which must be `opcode`.
    fn producer(&mut self, t: usize, opcode: Opcode, what: &str) -> Result<usize> {
        match self.producer[t] {
            Some(i) if self.op(i).opcode == opcode => {
                self.visited[i] = true;
                Ok(i)
            }
            _ => Err(not_birdnet(format!(
                "expected `{}` to come from {what} ({opcode:?})",
                self.name(t)
            ))),
        }
    }

    /// Follows `t` back through reshaping ops to where its values were made.
    fn back_through_layout(&mut self, mut t: usize) -> usize {
        while let Some(i) = self.producer[t].filter(|&i| is_layout(&self.op(i).opcode)) {
            self.visited[i] = true;
            match self.input(i, 0) {
                Some(src) => t = src,
                None => break,
            }
        }
        t
    }

    /// The input of `op` other than `t`, which must be a constant.
    fn constant_operand(&self, op: usize, t: usize) -> Result<usize> {
        let other = self
            .op(op)
            .inputs
            .iter()
            .filter_map(|&i| usize::try_from(i).ok())
            .find(|&i| i != t)
            .ok_or_else(|| not_birdnet(format!("op {op} has no constant operand")))?;
        if self.model.tensor_bytes(other)?.is_empty() {
            return Err(not_birdnet(format!(
                "`{}` (input of op {op}) should be a constant",
                self.name(other)
            )));
        }
        Ok(other)
    }

    fn f32s(&self, t: usize) -> Result<Vec<f32>> {
        Ok(self.model.tensor_f32(t)?)
    }

    fn i32s(&self, t: usize) -> Result<Vec<i32>> {
        Ok(self.model.tensor_i32(t)?)
    }

    fn shape(&self, t: usize) -> Vec<usize> {
        self.model.tensors.get(t).map_or_else(Vec::new, |t| {
            t.shape.iter().map(|&d| d.max(0) as usize).collect()
        })
    }

    /// A scalar f32 constant operand of `op`.
    fn scalar_operand(&self, op: usize, t: usize) -> Result<f32> {
        match self.f32s(self.constant_operand(op, t)?)?[..] {
            [v] => Ok(v),
            _ => Err(not_birdnet(format!("op {op} should have a scalar operand"))),
        }
    }

    /// Every op carrying weights (and every FFT) belongs to a recognised part.
    fn check_all_visited(&self) -> Result<()> {
        let weighty = |op: &Opcode| {
            matches!(
                op,
                Opcode::Conv2d
                    | Opcode::DepthwiseConv2d
                    | Opcode::FullyConnected
                    | Opcode::Rfft2d
                    | Opcode::Pow
            )
        };
        for (i, op) in self.model.operators.iter().enumerate() {
            if weighty(&op.opcode) && !self.visited[i] {
                return Err(not_birdnet(format!(
                    "op {i} ({:?}) is outside the recognised structure",
                    op.opcode
                )));
            }
        }
        Ok(())
    }
}

fn is_layout(op: &Opcode) -> bool {
    matches!(op, Opcode::Reshape | Opcode::Squeeze | Opcode::ExpandDims)
}

fn expect_activation(g: &Graph<'_>, op: usize, want: Activation) -> Result<()> {
    let found = g.op(op).options.activation().unwrap_or(Activation::None);
    if found != want {
        return Err(not_birdnet(format!(
            "op {op} ({:?}) has fused activation {found:?}, expected {want:?}",
            g.op(op).opcode
        )));
    }
    Ok(())
}

/// Named tensors in candle's layouts.
#[derive(Default)]
struct Weights(HashMap<String, Tensor>);

impl Weights {
    fn add(&mut self, name: impl Into<String>, data: Vec<f32>, shape: &[usize]) -> Result<()> {
        let t = Tensor::from_vec(data, shape, &Device::Cpu)?;
        self.0.insert(name.into(), t);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The walk
// ---------------------------------------------------------------------------------------------

/// `((x - min) / (max(x - min) + eps) - 0.5) * 2`: returns eps and the normalised tensor.
fn walk_normalize(g: &mut Graph<'_>, input: usize) -> Result<(f32, usize)> {
    let min_op = g.reader(input, Opcode::ReduceMin, "the window minimum")?;
    let min = g.output(min_op)?;
    let sub_op = g.reader(min, Opcode::Sub, "x - min")?;
    let shifted = g.output(sub_op)?;
    let max_op = g.reader(shifted, Opcode::ReduceMax, "the window range")?;
    let range = g.output(max_op)?;
    let eps_op = g.reader(range, Opcode::Add, "range + eps")?;
    let epsilon = g.scalar_operand(eps_op, range)?;
    let denominator = g.output(eps_op)?;
    let div_op = g.reader(denominator, Opcode::Div, "the normalising division")?;
    if g.input(div_op, 0) != Some(shifted) {
        return Err(not_birdnet(
            "the normalisation divides something else than x - min",
        ));
    }
    let unit = g.output(div_op)?;
    let offset_op = g.reader(unit, Opcode::Sub, "the normalisation offset")?;
    let offset = g.scalar_operand(offset_op, unit)?;
    let centred = g.output(offset_op)?;
    let scale_op = g.reader(centred, Opcode::Mul, "the normalisation scale")?;
    let scale = g.scalar_operand(scale_op, centred)?;
    if offset != NORMALIZE_OFFSET || scale != NORMALIZE_SCALE {
        return Err(not_birdnet(format!(
            "normalisation ({offset}, {scale}), expected (0.5, 2)"
        )));
    }
    Ok((epsilon, g.output(scale_op)?))
}

/// Both STFT/mel branches: their configs (channel order) and the concatenated image tensor.
fn walk_front_end(
    g: &mut Graph<'_>,
    normalized: usize,
    w: &mut Weights,
) -> Result<(Vec<MelBranchConfig>, usize)> {
    let ffts: Vec<usize> = (0..g.model.operators.len())
        .filter(|&i| g.op(i).opcode == Opcode::Rfft2d)
        .collect();
    if ffts.len() != BRANCH_NAMES.len() {
        return Err(not_birdnet(format!(
            "{} RFFT2D ops, expected 2",
            ffts.len()
        )));
    }
    let mut found = Vec::new();
    for &fft in &ffts {
        g.visited[fft] = true;
        found.push(walk_branch(g, fft, normalized)?);
    }
    let concat_op = g.reader(
        found[0].output,
        Opcode::Concatenation,
        "the branch concatenation",
    )?;
    let order: Vec<usize> = g
        .op(concat_op)
        .inputs
        .iter()
        .filter_map(|&t| found.iter().position(|b| b.output as i32 == t))
        .collect();
    let last_axis = matches!(
        g.op(concat_op).options,
        Options::Concatenation { axis: 3 | -1, .. }
    );
    if order.len() != BRANCH_NAMES.len()
        || g.op(concat_op).inputs.len() != order.len()
        || !last_axis
    {
        return Err(not_birdnet("the two branches are not stacked as channels"));
    }
    let mut configs = Vec::new();
    for (name, &index) in BRANCH_NAMES.iter().zip(&order) {
        let b = &found[index];
        let mut cfg = b.cfg.clone();
        cfg.name = (*name).into();
        w.add(
            format!("{name}.window"),
            b.window.clone(),
            &[cfg.frame_length],
        )?;
        w.add(
            format!("{name}.filterbank"),
            b.filterbank.clone(),
            &[cfg.bands, cfg.bins()],
        )?;
        configs.push(cfg);
    }
    Ok((configs, g.output(concat_op)?))
}

struct FoundBranch {
    cfg: MelBranchConfig,
    window: Vec<f32>,
    filterbank: Vec<f32>,
    /// The branch's `[N, bands, frames, 1]` tensor.
    output: usize,
}

fn walk_branch(g: &mut Graph<'_>, fft: usize, normalized: usize) -> Result<FoundBranch> {
    let length_t = g
        .input(fft, 1)
        .ok_or_else(|| not_birdnet("RFFT2D without fft_length"))?;
    let frame_length = match g.i32s(length_t)?[..] {
        [1, n] if n >= 2 => n as usize,
        ref other => {
            return Err(not_birdnet(format!(
                "RFFT2D fft_length {other:?}, expected [1, n]"
            )));
        }
    };
    let (window, hop) = walk_framing(g, fft, frame_length, normalized)?;
    // Forward: complex spectrum -> real part -> mel -> square -> power -> flip -> transpose.
    let spectrum = g.through_layout(g.output(fft)?)?;
    let cast = g.reader(
        spectrum,
        Opcode::Cast,
        "the real part (complex64 -> float32 CAST)",
    )?;
    let real = g.through_layout(g.output(cast)?)?;
    let fc = g.reader(real, Opcode::FullyConnected, "the mel filterbank")?;
    expect_activation(g, fc, Activation::None)?;
    let fb_t = g
        .input(fc, 1)
        .ok_or_else(|| not_birdnet("filterbank without weights"))?;
    if g.input(fc, 2).is_some() {
        return Err(not_birdnet("the mel filterbank has a bias"));
    }
    let filterbank = g.f32s(fb_t)?;
    let bins = frame_length / 2 + 1;
    let bands = match g.shape(fb_t)[..] {
        [b, k] if k == bins && b > 0 => b,
        ref s => {
            return Err(not_birdnet(format!(
                "filterbank shape {s:?} for {bins} bins"
            )));
        }
    };
    let mel = g.through_layout(g.output(fc)?)?;
    let square = g.reader(mel, Opcode::Mul, "the squared mel value")?;
    if g.input(square, 0) != Some(mel) || g.input(square, 1) != Some(mel) {
        return Err(not_birdnet("the mel value is not squared"));
    }
    let squared = g.output(square)?;
    let pow = g.reader(squared, Opcode::Pow, "the compression power")?;
    let exponent = g.scalar_operand(pow, squared)?;
    let powered = g.output(pow)?;
    let flip = g.reader(powered, Opcode::ReverseV2, "the band flip")?;
    let axis_t = g
        .input(flip, 1)
        .ok_or_else(|| not_birdnet("REVERSE_V2 without axis"))?;
    if !matches!(g.i32s(axis_t)?[..], [2] | [-1]) {
        return Err(not_birdnet("the flip is not over the band axis"));
    }
    let transpose = g.reader(
        g.output(flip)?,
        Opcode::Transpose,
        "the (band, frame) transpose",
    )?;
    let perm_t = g
        .input(transpose, 1)
        .ok_or_else(|| not_birdnet("TRANSPOSE without perm"))?;
    if g.i32s(perm_t)? != [0, 2, 1] {
        return Err(not_birdnet("unexpected transpose of the mel image"));
    }
    let output = g.through_layout(g.output(transpose)?)?;
    let frames = (WINDOW_SAMPLES - frame_length.min(WINDOW_SAMPLES)) / hop + 1;
    let (low_hz, high_hz) = band_edges_hz(&filterbank, bins, frame_length);
    Ok(FoundBranch {
        cfg: MelBranchConfig {
            name: String::new(),
            frame_length,
            hop,
            frames,
            bands,
            exponent,
            low_hz,
            high_hz,
        },
        window,
        filterbank,
        output,
    })
}

/// Back from the FFT: `frames * window`, the frames a GATHER of the signal viewed as
/// `[N, len / g, g]` at indices `range(frames) * step + [0, frame_length / g)`; hop = step * g.
fn walk_framing(
    g: &mut Graph<'_>,
    fft: usize,
    frame_length: usize,
    normalized: usize,
) -> Result<(Vec<f32>, usize)> {
    let fft_in = g
        .input(fft, 0)
        .ok_or_else(|| not_birdnet("RFFT2D without input"))?;
    let windowed = g.back_through_layout(fft_in);
    let mul = g.producer(windowed, Opcode::Mul, "the Hann window product")?;
    let window_t = (0..2)
        .filter_map(|s| g.input(mul, s))
        .find(|&t| {
            g.shape(t) == [frame_length] && g.model.tensor_bytes(t).is_ok_and(|b| !b.is_empty())
        })
        .ok_or_else(|| not_birdnet("no constant window of the frame length"))?;
    let window = g.f32s(window_t)?;
    let frames_t = (0..2)
        .filter_map(|s| g.input(mul, s))
        .find(|&t| t != window_t)
        .ok_or_else(|| not_birdnet("the window multiplies no frames"))?;
    let gathered = g.back_through_layout(frames_t);
    let gather = g.producer(gathered, Opcode::Gather, "the framing GATHER")?;
    let signal = g
        .input(gather, 0)
        .ok_or_else(|| not_birdnet("GATHER without params"))?;
    let indices = g
        .input(gather, 1)
        .ok_or_else(|| not_birdnet("GATHER without indices"))?;
    // The gathered signal is a reshaped slice of the normalised window.
    let sliced = g.back_through_layout(signal);
    let slice = g.producer(sliced, Opcode::StridedSlice, "the framed signal slice")?;
    if g.input(slice, 0) != Some(normalized) {
        return Err(not_birdnet(
            "the frames are not cut from the normalised window",
        ));
    }
    let add = g.producer(indices, Opcode::Add, "the frame index sum")?;
    let (starts_t, offsets_t) = match (g.input(add, 0), g.input(add, 1)) {
        (Some(a), Some(b)) if g.model.tensor_bytes(b).is_ok_and(|d| !d.is_empty()) => (a, b),
        _ => return Err(not_birdnet("frame offsets are not a constant")),
    };
    let offsets = g.i32s(offsets_t)?;
    if offsets.is_empty()
        || !frame_length.is_multiple_of(offsets.len())
        || offsets.iter().enumerate().any(|(i, &o)| o != i as i32)
    {
        return Err(not_birdnet("frame offsets are not 0, 1, 2, ..."));
    }
    let group = frame_length / offsets.len();
    let starts = g.back_through_layout(starts_t);
    let step_mul = g.producer(starts, Opcode::Mul, "the frame start product")?;
    let range = g
        .input(step_mul, 0)
        .ok_or_else(|| not_birdnet("frame starts without a range"))?;
    g.producer(range, Opcode::Range, "the frame range")?;
    let step = match g.i32s(g.constant_operand(step_mul, range)?)?[..] {
        [s] if s > 0 => s as usize,
        _ => return Err(not_birdnet("the frame step is not a positive scalar")),
    };
    if window.len() != frame_length {
        return Err(not_birdnet("window and FFT lengths differ"));
    }
    Ok((window, step * group))
}

/// Frequencies of the lowest and highest bins with a nonzero filterbank weight.
fn band_edges_hz(filterbank: &[f32], bins: usize, frame_length: usize) -> (f32, f32) {
    let hz_per_bin = SAMPLE_RATE as f32 / frame_length as f32;
    let used = |k: &usize| filterbank.chunks_exact(bins).any(|row| row[*k] != 0.0);
    let low = (0..bins).find(used).unwrap_or(0);
    let high = (0..bins).rev().find(used).unwrap_or(0);
    (low as f32 * hz_per_bin, high as f32 * hz_per_bin)
}

/// A folded batch norm: `MUL(x, scale[C])` then `ADD(., shift[C])` with activation `act`.
fn walk_affine(
    g: &mut Graph<'_>,
    x: usize,
    name: &str,
    act: Activation,
    w: &mut Weights,
) -> Result<usize> {
    let mul = g.reader(x, Opcode::Mul, "a batch-norm scale")?;
    expect_activation(g, mul, Activation::None)?;
    let scale = g.f32s(g.constant_operand(mul, x)?)?;
    let scaled = g.output(mul)?;
    let add = g.reader(scaled, Opcode::Add, "a batch-norm shift")?;
    expect_activation(g, add, act)?;
    let shift = g.f32s(g.constant_operand(add, scaled)?)?;
    if scale.len() != shift.len() || scale.is_empty() {
        return Err(not_birdnet(format!("{name}: scale and shift sizes differ")));
    }
    let c = scale.len();
    w.add(format!("{name}.scale"), scale, &[c])?;
    w.add(format!("{name}.shift"), shift, &[c])?;
    g.output(add)
}

/// A CONV_2D's weights `[O, kh, kw, I]` converted to OIHW and stored with its bias.
fn add_conv(g: &Graph<'_>, op: usize, name: &str, w: &mut Weights) -> Result<[usize; 4]> {
    let wt = g
        .input(op, 1)
        .ok_or_else(|| not_birdnet(format!("{name}: no weights")))?;
    let [o, kh, kw, i] = match g.shape(wt)[..] {
        [o, kh, kw, i] => [o, kh, kw, i],
        ref s => return Err(not_birdnet(format!("{name}: weight shape {s:?}"))),
    };
    let ohwi = g.f32s(wt)?;
    let mut oihw = vec![0.0f32; ohwi.len()];
    for (index, &v) in ohwi.iter().enumerate() {
        let (c, rest) = (index % i, index / i);
        let (x, rest) = (rest % kw, rest / kw);
        let (y, out) = (rest % kh, rest / kh);
        oihw[((out * i + c) * kh + y) * kw + x] = v;
    }
    w.add(format!("{name}.weight"), oihw, &[o, i, kh, kw])?;
    add_bias(g, op, name, o, w)?;
    Ok([o, i, kh, kw])
}

fn add_bias(g: &Graph<'_>, op: usize, name: &str, channels: usize, w: &mut Weights) -> Result<()> {
    let bias = match g.input(op, 2) {
        Some(t) => g.f32s(t)?,
        None => vec![0.0; channels],
    };
    if bias.len() != channels {
        return Err(not_birdnet(format!(
            "{name}: {} biases for {channels} channels",
            bias.len()
        )));
    }
    w.add(format!("{name}.bias"), bias, &[channels])
}

/// The conv reading `x` with the expected kernel, stride, padding and activation.
struct ConvSpec {
    kernel: Option<[usize; 2]>,
    stride: usize,
    /// `None`: either (the same for a 1x1 kernel).
    padding: Option<Padding>,
    act: Activation,
}

fn walk_conv(
    g: &mut Graph<'_>,
    x: usize,
    spec: &ConvSpec,
    name: &str,
    w: &mut Weights,
) -> Result<(usize, [usize; 4])> {
    let op = g.reader(x, Opcode::Conv2d, name)?;
    let ok = matches!(g.op(op).options, Options::Conv2d { padding, stride_h, stride_w, activation, dilation_h: 1, dilation_w: 1 }
        if spec.padding.is_none_or(|p| p == padding) && stride_h as usize == spec.stride && stride_w as usize == spec.stride && activation == spec.act);
    if !ok {
        return Err(not_birdnet(format!(
            "{name}: unexpected options {:?}",
            g.op(op).options
        )));
    }
    let shape = add_conv(g, op, name, w)?;
    if spec.kernel.is_some_and(|k| k != [shape[2], shape[3]]) {
        return Err(not_birdnet(format!(
            "{name}: kernel {}x{}",
            shape[2], shape[3]
        )));
    }
    Ok((g.output(op)?, shape))
}

fn pointwise(act: Activation) -> ConvSpec {
    ConvSpec {
        kernel: Some([1, 1]),
        stride: 1,
        padding: None,
        act,
    }
}

/// `x * sigmoid(x)` as LOGISTIC + MUL: returns the product.
fn walk_swish(g: &mut Graph<'_>, x: usize) -> Result<usize> {
    let sig_op = g.reader(x, Opcode::Logistic, "a swish sigmoid")?;
    let sig = g.output(sig_op)?;
    let mul = g.reader(sig, Opcode::Mul, "a swish product")?;
    let inputs = [g.input(mul, 0), g.input(mul, 1)];
    if !(inputs == [Some(x), Some(sig)] || inputs == [Some(sig), Some(x)]) {
        return Err(not_birdnet(
            "a sigmoid gates something other than its input",
        ));
    }
    g.output(mul)
}

fn walk_stem(
    g: &mut Graph<'_>,
    x: usize,
    branches: &[MelBranchConfig],
    w: &mut Weights,
) -> Result<(StemConfig, usize)> {
    let spec = ConvSpec {
        kernel: None,
        stride: 2,
        padding: Some(Padding::Same),
        act: Activation::Relu,
    };
    let (conv, [channels, _, kh, kw]) = walk_conv(g, x, &spec, "stem.conv", w)?;
    let avg = g.reader(conv, Opcode::AveragePool2d, "the stem average pool")?;
    let max = g.reader(conv, Opcode::MaxPool2d, "the stem max pool")?;
    let pool_time = stem_pool(g, avg)?;
    if stem_pool(g, max)? != pool_time {
        return Err(not_birdnet("the stem pools differ"));
    }
    let (avg_t, max_t) = (g.output(avg)?, g.output(max)?);
    let concat = g.reader(max_t, Opcode::Concatenation, "the stem pool concatenation")?;
    let last_axis = matches!(
        g.op(concat).options,
        Options::Concatenation { axis: 3 | -1, .. }
    );
    if g.op(concat).inputs != [max_t as i32, avg_t as i32] || !last_axis {
        return Err(not_birdnet(
            "the stem pools are not concatenated as [max, avg]",
        ));
    }
    let (out, _) = walk_conv(
        g,
        g.output(concat)?,
        &pointwise(Activation::None),
        "stem.pool_conv",
        w,
    )?;
    let b = &branches[0];
    let (h, wd) = (b.bands.div_ceil(2), b.frames.div_ceil(2));
    let same_pad = |size: usize, out: usize, k: usize| ((out - 1) * 2 + k).saturating_sub(size) / 2;
    let stem = StemConfig {
        channels,
        kernel: [kh, kw],
        stride: 2,
        pad: [same_pad(b.bands, h, kh), same_pad(b.frames, wd, kw)],
        pool_time,
    };
    Ok((stem, out))
}

/// A `(1, k)` VALID pool with stride `(1, k)`: returns `k`.
fn stem_pool(g: &Graph<'_>, op: usize) -> Result<usize> {
    match g.op(op).options {
        Options::Pool2d {
            padding: Padding::Valid,
            stride_h: 1,
            stride_w,
            filter_h: 1,
            filter_w,
            activation: Activation::None,
        } if stride_w == filter_w && filter_w > 0 => Ok(filter_w as usize),
        ref o => Err(not_birdnet(format!("unexpected stem pool {o:?}"))),
    }
}

fn walk_blocks(
    g: &mut Graph<'_>,
    mut x: usize,
    mut channels: usize,
    w: &mut Weights,
) -> Result<(Vec<BlockConfig>, usize)> {
    let mut blocks = Vec::new();
    while g.has_reader(x, Opcode::Conv2d) {
        let name = format!("blocks.{}", blocks.len());
        let (cfg, out) = walk_block(g, x, channels, &name, w)?;
        channels = cfg.out_channels;
        blocks.push(cfg);
        x = out;
    }
    if blocks.is_empty() {
        return Err(not_birdnet("no inverted-residual block after the stem"));
    }
    Ok((blocks, x))
}

fn walk_block(
    g: &mut Graph<'_>,
    x: usize,
    in_channels: usize,
    name: &str,
    w: &mut Weights,
) -> Result<(BlockConfig, usize)> {
    let (expanded, [expand_channels, i, _, _]) = walk_conv(
        g,
        x,
        &pointwise(Activation::None),
        &format!("{name}.expand"),
        w,
    )?;
    if i != in_channels {
        return Err(not_birdnet(format!(
            "{name}: expands {i} channels, gets {in_channels}"
        )));
    }
    let act = walk_swish(g, expanded)?;
    let (depthwise, kernel, stride) = walk_depthwise(g, act, expand_channels, name, w)?;
    let mapped = walk_swish(g, depthwise)?;
    let (gated, se_channels) = if g.has_reader(mapped, Opcode::Mean) {
        walk_squeeze_excite(g, mapped, name, w)?
    } else {
        (mapped, 0)
    };
    let (projected, [out_channels, ..]) = walk_conv(
        g,
        gated,
        &pointwise(Activation::None),
        &format!("{name}.project"),
        w,
    )?;
    let residual_add = g
        .readers(projected)
        .find(|&i| g.op(i).opcode == Opcode::Add && g.op(i).inputs.contains(&(x as i32)));
    let out = match residual_add {
        Some(add) => {
            g.visited[add] = true;
            expect_activation(g, add, Activation::None)?;
            g.output(add)?
        }
        None => projected,
    };
    let cfg = BlockConfig {
        in_channels,
        expand_channels,
        out_channels,
        kernel,
        stride,
        se_channels,
        residual: residual_add.is_some(),
    };
    Ok((cfg, out))
}

/// `[PAD] DEPTHWISE_CONV_2D`: stride 1 with SAME padding, or stride 2 after an explicit PAD of
/// `(k - 1) / 2` on each side of height and width. Returns (output, kernel, stride).
fn walk_depthwise(
    g: &mut Graph<'_>,
    x: usize,
    channels: usize,
    name: &str,
    w: &mut Weights,
) -> Result<(usize, usize, usize)> {
    let (input, explicit_pad) = if g.has_reader(x, Opcode::Pad) {
        let pad = g.reader(x, Opcode::Pad, "the depthwise padding")?;
        let pads_t = g
            .input(pad, 1)
            .ok_or_else(|| not_birdnet("PAD without paddings"))?;
        (g.output(pad)?, Some(g.i32s(pads_t)?))
    } else {
        (x, None)
    };
    let op = g.reader(input, Opcode::DepthwiseConv2d, "a depthwise convolution")?;
    let (padding, stride) = match g.op(op).options {
        Options::DepthwiseConv2d {
            padding,
            stride_h,
            stride_w,
            depth_multiplier: 1,
            activation: Activation::None,
            dilation_h: 1,
            dilation_w: 1,
        } if stride_h == stride_w && stride_h > 0 => (padding, stride_h as usize),
        ref o => {
            return Err(not_birdnet(format!(
                "{name}: unexpected depthwise options {o:?}"
            )));
        }
    };
    let wt = g
        .input(op, 1)
        .ok_or_else(|| not_birdnet("depthwise without weights"))?;
    let k = match g.shape(wt)[..] {
        [1, kh, kw, c] if kh == kw && c == channels && kh % 2 == 1 => kh,
        ref s => return Err(not_birdnet(format!("{name}: depthwise weight shape {s:?}"))),
    };
    let p = ((k - 1) / 2) as i32;
    let pad_ok = match (&explicit_pad, padding) {
        (None, Padding::Same) => stride == 1,
        (Some(pads), Padding::Valid) => pads[..] == [0, 0, p, p, p, p, 0, 0],
        _ => false,
    };
    if !pad_ok {
        return Err(not_birdnet(format!(
            "{name}: unsupported depthwise padding"
        )));
    }
    // [1, k, k, C] -> [C, 1, k, k].
    let hwc = g.f32s(wt)?;
    let mut chw = vec![0.0f32; hwc.len()];
    for (index, &v) in hwc.iter().enumerate() {
        let (c, tap) = (index % channels, index / channels);
        chw[c * k * k + tap] = v;
    }
    let prefix = format!("{name}.depthwise");
    w.add(format!("{prefix}.weight"), chw, &[channels, 1, k, k])?;
    add_bias(g, op, &prefix, channels, w)?;
    Ok((g.output(op)?, k, stride))
}

/// `x * sigmoid(W2 swish(W1 mean(x)))`: returns the gated map and the squeeze width.
fn walk_squeeze_excite(
    g: &mut Graph<'_>,
    x: usize,
    name: &str,
    w: &mut Weights,
) -> Result<(usize, usize)> {
    let mean = g.reader(x, Opcode::Mean, "the squeeze-excitation mean")?;
    check_spatial_mean(g, mean)?;
    let pooled = g.through_layout(g.output(mean)?)?;
    let (reduced, [se_channels, ..]) = walk_conv(
        g,
        pooled,
        &pointwise(Activation::None),
        &format!("{name}.se.reduce"),
        w,
    )?;
    let act = walk_swish(g, reduced)?;
    let (expanded, _) = walk_conv(
        g,
        act,
        &pointwise(Activation::None),
        &format!("{name}.se.expand"),
        w,
    )?;
    let sig = g.reader(expanded, Opcode::Logistic, "the squeeze-excitation gate")?;
    let gate = g.output(sig)?;
    let mul = g.reader(gate, Opcode::Mul, "the squeeze-excitation product")?;
    if !g.op(mul).inputs.contains(&(x as i32)) {
        return Err(not_birdnet(format!(
            "{name}: the gate multiplies another map"
        )));
    }
    Ok((g.output(mul)?, se_channels))
}

/// A MEAN over axes (1, 2): the spatial mean of an NHWC map.
fn check_spatial_mean(g: &Graph<'_>, op: usize) -> Result<()> {
    let axes_t = g
        .input(op, 1)
        .ok_or_else(|| not_birdnet("MEAN without axes"))?;
    if g.i32s(axes_t)? != [1, 2] {
        return Err(not_birdnet("a MEAN is not over height and width"));
    }
    Ok(())
}

fn walk_head(g: &mut Graph<'_>, x: usize, w: &mut Weights) -> Result<(HeadConfig, usize)> {
    let normed = walk_affine(g, x, "head.norm", Activation::Relu, w)?;
    let spec = ConvSpec {
        kernel: None,
        stride: 1,
        padding: Some(Padding::Valid),
        act: Activation::Relu,
    };
    let (conv, [channels, in_channels, kh, kw]) = walk_conv(g, normed, &spec, "head.conv", w)?;
    if kh != kw {
        return Err(not_birdnet("the head's kernel is not square"));
    }
    let mean = g.reader(conv, Opcode::Mean, "the global average pool")?;
    check_spatial_mean(g, mean)?;
    let cfg = HeadConfig {
        in_channels,
        channels,
        kernel: kh,
    };
    Ok((cfg, g.output(mean)?))
}

/// The embedding feeds the classifier, whose output is the model's output.
fn walk_classifier(g: &mut Graph<'_>, embedding: usize) -> Result<()> {
    let fc = g.reader(embedding, Opcode::FullyConnected, "the classifier")?;
    let out = g.output(fc)?;
    if g.model.outputs != [out] {
        return Err(not_birdnet(
            "the classifier's logits are not the model's output",
        ));
    }
    Ok(())
}
