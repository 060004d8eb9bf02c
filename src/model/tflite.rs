//! A reader of TensorFlow Lite model files (FlatBuffers, schema v3, file identifier "TFL3").
//!
//! Only the tables an importer needs are read: the model, its first subgraph, tensors, buffers,
//! operators, operator codes and the builtin options of the ops BirdNET uses. Every offset and
//! length is bounds-checked, so a truncated, altered or random file gives a [`TfliteError`]
//! naming what was wrong, never a panic.
//!
//! FlatBuffers layout in brief: a table starts with an `i32` offset back to its vtable; the
//! vtable holds `u16` sizes then one `u16` offset per field (0 = field absent, use the default).
//! References (vectors, strings, sub-tables) are `u32` offsets relative to where they are stored;
//! a vector is a `u32` length followed by its elements.

use std::ops::Range;

/// Bytes 4..8 of every TFLite file.
pub const FILE_IDENTIFIER: &[u8; 4] = b"TFL3";
/// The schema version this reader knows.
pub const SCHEMA_VERSION: u32 = 3;
/// Root offset and file identifier.
const HEADER_BYTES: usize = 8;
/// A vtable's own header: its size and the table's size, two `u16`.
const VTABLE_HEADER_BYTES: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum TfliteError {
    #[error("{len} bytes is too short for a TFLite model")]
    TooShort { len: usize },
    #[error("not a TFLite model: file identifier {found:?}, expected \"TFL3\"")]
    Magic { found: [u8; 4] },
    #[error("corrupt model: {what} at byte {at} lies outside the {len}-byte file")]
    OutOfBounds {
        what: &'static str,
        at: usize,
        len: usize,
    },
    #[error("corrupt model: {0}")]
    Invalid(String),
    #[error("unsupported TFLite schema version {0} (this reader knows version 3)")]
    Version(u32),
    #[error("tensor {index} (`{name}`): {reason}")]
    Tensor {
        index: usize,
        name: String,
        reason: String,
    },
}

type Result<T> = std::result::Result<T, TfliteError>;

// ---------------------------------------------------------------------------------------------
// Raw FlatBuffers access
// ---------------------------------------------------------------------------------------------

/// Bounds-checked little-endian reads from the file.
#[derive(Clone, Copy)]
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn range(&self, what: &'static str, at: usize, len: usize) -> Result<&'a [u8]> {
        at.checked_add(len)
            .and_then(|end| self.0.get(at..end))
            .ok_or(TfliteError::OutOfBounds {
                what,
                at,
                len: self.0.len(),
            })
    }

    fn array<const N: usize>(&self, what: &'static str, at: usize) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.range(what, at, N)?);
        Ok(out)
    }

    fn u8(&self, what: &'static str, at: usize) -> Result<u8> {
        Ok(self.array::<1>(what, at)?[0])
    }
    fn u16(&self, what: &'static str, at: usize) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(what, at)?))
    }
    fn u32(&self, what: &'static str, at: usize) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what, at)?))
    }
    fn i32(&self, what: &'static str, at: usize) -> Result<i32> {
        Ok(i32::from_le_bytes(self.array(what, at)?))
    }
    fn u64(&self, what: &'static str, at: usize) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what, at)?))
    }

    /// Follows the `u32` forward reference stored at `at`.
    fn deref(&self, what: &'static str, at: usize) -> Result<usize> {
        let rel = self.u32(what, at)? as usize;
        let target = at.checked_add(rel).ok_or(TfliteError::OutOfBounds {
            what,
            at,
            len: self.0.len(),
        })?;
        if target >= self.0.len() {
            return Err(TfliteError::OutOfBounds {
                what,
                at: target,
                len: self.0.len(),
            });
        }
        Ok(target)
    }

    /// A vector at `at` (its length word): the start of its elements and their count, checked to
    /// fit in the file with `elem_size` bytes each.
    fn vector(&self, what: &'static str, at: usize, elem_size: usize) -> Result<(usize, usize)> {
        let count = self.u32(what, at)? as usize;
        let start = at + 4;
        let bytes = count
            .checked_mul(elem_size)
            .ok_or(TfliteError::OutOfBounds {
                what,
                at,
                len: self.0.len(),
            })?;
        self.range(what, start, bytes)?;
        Ok((start, count))
    }
}

/// A table: its position and its vtable's field offsets.
#[derive(Clone, Copy)]
struct Table<'a> {
    buf: Bytes<'a>,
    pos: usize,
    vtable: usize,
    vtable_len: usize,
}

impl<'a> Table<'a> {
    fn at(buf: Bytes<'a>, what: &'static str, pos: usize) -> Result<Self> {
        let soffset = buf.i32(what, pos)? as i64;
        let vtable = pos as i64 - soffset;
        let out_of_bounds = TfliteError::OutOfBounds {
            what,
            at: pos,
            len: buf.0.len(),
        };
        let vtable = usize::try_from(vtable).map_err(|_| out_of_bounds)?;
        let vtable_len = buf.u16(what, vtable)? as usize;
        if vtable_len < VTABLE_HEADER_BYTES || !vtable_len.is_multiple_of(2) {
            return Err(TfliteError::Invalid(format!(
                "{what}: vtable of {vtable_len} bytes"
            )));
        }
        buf.range(what, vtable, vtable_len)?;
        Ok(Self {
            buf,
            pos,
            vtable,
            vtable_len,
        })
    }

    /// The absolute position of field `slot`, or `None` when the field is absent.
    fn field(&self, slot: usize) -> Result<Option<usize>> {
        let entry = VTABLE_HEADER_BYTES + 2 * slot;
        if entry + 2 > self.vtable_len {
            return Ok(None);
        }
        let offset = self.buf.u16("vtable entry", self.vtable + entry)? as usize;
        Ok((offset != 0).then_some(self.pos + offset))
    }

    fn u8_or(&self, slot: usize, default: u8) -> Result<u8> {
        self.field(slot)?
            .map_or(Ok(default), |at| self.buf.u8("u8 field", at))
    }
    fn i32_or(&self, slot: usize, default: i32) -> Result<i32> {
        self.field(slot)?
            .map_or(Ok(default), |at| self.buf.i32("i32 field", at))
    }
    fn u32_or(&self, slot: usize, default: u32) -> Result<u32> {
        self.field(slot)?
            .map_or(Ok(default), |at| self.buf.u32("u32 field", at))
    }
    fn u64_or(&self, slot: usize, default: u64) -> Result<u64> {
        self.field(slot)?
            .map_or(Ok(default), |at| self.buf.u64("u64 field", at))
    }

    fn table(&self, slot: usize, what: &'static str) -> Result<Option<Table<'a>>> {
        match self.field(slot)? {
            None => Ok(None),
            Some(at) => Table::at(self.buf, what, self.buf.deref(what, at)?).map(Some),
        }
    }

    fn string(&self, slot: usize, what: &'static str) -> Result<Option<String>> {
        let Some(at) = self.field(slot)? else {
            return Ok(None);
        };
        let (start, len) = self.buf.vector(what, self.buf.deref(what, at)?, 1)?;
        let bytes = self.buf.range(what, start, len)?;
        Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
    }

    /// A vector of `i32` (absent = empty).
    fn i32s(&self, slot: usize, what: &'static str) -> Result<Vec<i32>> {
        let Some(at) = self.field(slot)? else {
            return Ok(Vec::new());
        };
        let (start, count) = self.buf.vector(what, self.buf.deref(what, at)?, 4)?;
        (0..count)
            .map(|i| self.buf.i32(what, start + 4 * i))
            .collect()
    }

    /// A vector of bytes as a range of the file (absent = empty).
    fn byte_range(&self, slot: usize, what: &'static str) -> Result<Range<usize>> {
        let Some(at) = self.field(slot)? else {
            return Ok(0..0);
        };
        let (start, count) = self.buf.vector(what, self.buf.deref(what, at)?, 1)?;
        Ok(start..start + count)
    }

    /// The element count of a vector of `elem_size`-byte elements (absent = 0).
    fn vector_len(&self, slot: usize, what: &'static str, elem_size: usize) -> Result<usize> {
        let Some(at) = self.field(slot)? else {
            return Ok(0);
        };
        Ok(self
            .buf
            .vector(what, self.buf.deref(what, at)?, elem_size)?
            .1)
    }

    /// A vector of tables (absent = empty).
    fn tables(&self, slot: usize, what: &'static str) -> Result<Vec<Table<'a>>> {
        let Some(at) = self.field(slot)? else {
            return Ok(Vec::new());
        };
        let (start, count) = self.buf.vector(what, self.buf.deref(what, at)?, 4)?;
        (0..count)
            .map(|i| {
                let slot_at = start + 4 * i;
                Table::at(self.buf, what, self.buf.deref(what, slot_at)?)
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Schema types
// ---------------------------------------------------------------------------------------------

/// Element types (`TensorType` in the schema) that matter here; others keep their code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorType {
    Float32,
    Float16,
    Int32,
    UInt8,
    Int64,
    Bool,
    Int16,
    Complex64,
    Int8,
    Float64,
    Other(u8),
}

impl TensorType {
    fn from_code(code: u8) -> Self {
        match code {
            0 => Self::Float32,
            1 => Self::Float16,
            2 => Self::Int32,
            3 => Self::UInt8,
            4 => Self::Int64,
            6 => Self::Bool,
            7 => Self::Int16,
            8 => Self::Complex64,
            9 => Self::Int8,
            10 => Self::Float64,
            other => Self::Other(other),
        }
    }

    /// Bytes per element, when fixed.
    pub fn size(self) -> Option<usize> {
        match self {
            Self::Bool | Self::UInt8 | Self::Int8 => Some(1),
            Self::Float16 | Self::Int16 => Some(2),
            Self::Float32 | Self::Int32 => Some(4),
            Self::Int64 | Self::Float64 | Self::Complex64 => Some(8),
            Self::Other(_) => None,
        }
    }
}

/// Builtin operators (`BuiltinOperator` in the schema) that BirdNET's graph uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opcode {
    Add,
    AveragePool2d,
    Concatenation,
    Conv2d,
    DepthwiseConv2d,
    FullyConnected,
    Logistic,
    MaxPool2d,
    Mul,
    Reshape,
    Pad,
    Gather,
    Transpose,
    Mean,
    Sub,
    Div,
    Squeeze,
    StridedSlice,
    Cast,
    Maximum,
    ExpandDims,
    Shape,
    Pow,
    ReduceProd,
    ReduceMax,
    Pack,
    ReduceMin,
    FloorDiv,
    Range,
    SplitV,
    ReverseV2,
    Rfft2d,
    Dequantize,
    /// A custom operator, by its name.
    Custom(String),
    /// Any other builtin, by its code.
    Other(i32),
}

impl Opcode {
    fn from_builtin(code: i32) -> Self {
        match code {
            0 => Self::Add,
            1 => Self::AveragePool2d,
            2 => Self::Concatenation,
            3 => Self::Conv2d,
            4 => Self::DepthwiseConv2d,
            6 => Self::Dequantize,
            9 => Self::FullyConnected,
            14 => Self::Logistic,
            17 => Self::MaxPool2d,
            18 => Self::Mul,
            22 => Self::Reshape,
            34 => Self::Pad,
            36 => Self::Gather,
            39 => Self::Transpose,
            40 => Self::Mean,
            41 => Self::Sub,
            42 => Self::Div,
            43 => Self::Squeeze,
            45 => Self::StridedSlice,
            53 => Self::Cast,
            55 => Self::Maximum,
            70 => Self::ExpandDims,
            77 => Self::Shape,
            78 => Self::Pow,
            81 => Self::ReduceProd,
            82 => Self::ReduceMax,
            83 => Self::Pack,
            89 => Self::ReduceMin,
            90 => Self::FloorDiv,
            96 => Self::Range,
            102 => Self::SplitV,
            105 => Self::ReverseV2,
            131 => Self::Rfft2d,
            other => Self::Other(other),
        }
    }
}

/// Code of `BuiltinOperator.CUSTOM`.
const CUSTOM_OPCODE: i32 = 32;
/// Codes above this are stored only in the 32-bit `builtin_code` field.
const PLACEHOLDER_FOR_GREATER_OP_CODES: i32 = 127;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    Same,
    Valid,
}

impl Padding {
    fn from_code(code: u8) -> Result<Self> {
        match code {
            0 => Ok(Self::Same),
            1 => Ok(Self::Valid),
            other => Err(TfliteError::Invalid(format!("padding code {other}"))),
        }
    }
}

/// A fused activation (`ActivationFunctionType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    None,
    Relu,
    ReluN1To1,
    Relu6,
    Tanh,
    SignBit,
}

impl Activation {
    fn from_code(code: u8) -> Result<Self> {
        Ok(match code {
            0 => Self::None,
            1 => Self::Relu,
            2 => Self::ReluN1To1,
            3 => Self::Relu6,
            4 => Self::Tanh,
            5 => Self::SignBit,
            other => return Err(TfliteError::Invalid(format!("activation code {other}"))),
        })
    }
}

/// Builtin options of the ops read here (`BuiltinOptions` union); others are [`Options::Other`].
#[derive(Debug, Clone, PartialEq)]
pub enum Options {
    None,
    Conv2d {
        padding: Padding,
        stride_h: i32,
        stride_w: i32,
        activation: Activation,
        dilation_h: i32,
        dilation_w: i32,
    },
    DepthwiseConv2d {
        padding: Padding,
        stride_h: i32,
        stride_w: i32,
        depth_multiplier: i32,
        activation: Activation,
        dilation_h: i32,
        dilation_w: i32,
    },
    Pool2d {
        padding: Padding,
        stride_h: i32,
        stride_w: i32,
        filter_h: i32,
        filter_w: i32,
        activation: Activation,
    },
    FullyConnected {
        activation: Activation,
        weights_format: u8,
        keep_num_dims: bool,
    },
    Concatenation {
        axis: i32,
        activation: Activation,
    },
    /// Add, Sub, Mul, Div: only a fused activation.
    Elementwise {
        activation: Activation,
    },
    Reducer {
        keep_dims: bool,
    },
    /// Another union member, by its type code.
    Other(u8),
}

/// `BuiltinOptions` union type codes.
mod options_type {
    pub const NONE: u8 = 0;
    pub const CONV_2D: u8 = 1;
    pub const DEPTHWISE_CONV_2D: u8 = 2;
    pub const POOL_2D: u8 = 5;
    pub const FULLY_CONNECTED: u8 = 8;
    pub const CONCATENATION: u8 = 10;
    pub const ADD: u8 = 11;
    pub const MUL: u8 = 21;
    pub const REDUCER: u8 = 27;
    pub const SUB: u8 = 28;
    pub const DIV: u8 = 29;
}

impl Options {
    fn parse(kind: u8, table: Option<Table<'_>>) -> Result<Self> {
        use options_type as t;
        let Some(o) = table else {
            return Ok(if kind == t::NONE {
                Self::None
            } else {
                Self::Other(kind)
            });
        };
        let act = |slot| o.u8_or(slot, 0).and_then(Activation::from_code);
        let pad = || o.u8_or(0, 0).and_then(Padding::from_code);
        Ok(match kind {
            t::CONV_2D => Self::Conv2d {
                padding: pad()?,
                stride_w: o.i32_or(1, 0)?,
                stride_h: o.i32_or(2, 0)?,
                activation: act(3)?,
                dilation_w: o.i32_or(4, 1)?,
                dilation_h: o.i32_or(5, 1)?,
            },
            t::DEPTHWISE_CONV_2D => Self::DepthwiseConv2d {
                padding: pad()?,
                stride_w: o.i32_or(1, 0)?,
                stride_h: o.i32_or(2, 0)?,
                depth_multiplier: o.i32_or(3, 0)?,
                activation: act(4)?,
                dilation_w: o.i32_or(5, 1)?,
                dilation_h: o.i32_or(6, 1)?,
            },
            t::POOL_2D => Self::Pool2d {
                padding: pad()?,
                stride_w: o.i32_or(1, 0)?,
                stride_h: o.i32_or(2, 0)?,
                filter_w: o.i32_or(3, 0)?,
                filter_h: o.i32_or(4, 0)?,
                activation: act(5)?,
            },
            t::FULLY_CONNECTED => Self::FullyConnected {
                activation: act(0)?,
                weights_format: o.u8_or(1, 0)?,
                keep_num_dims: o.u8_or(2, 0)? != 0,
            },
            t::CONCATENATION => Self::Concatenation {
                axis: o.i32_or(0, 0)?,
                activation: act(1)?,
            },
            t::ADD | t::MUL | t::SUB | t::DIV => Self::Elementwise {
                activation: act(0)?,
            },
            t::REDUCER => Self::Reducer {
                keep_dims: o.u8_or(0, 0)? != 0,
            },
            other => Self::Other(other),
        })
    }

    /// The fused activation, for ops that have one.
    pub fn activation(&self) -> Option<Activation> {
        match self {
            Self::Conv2d { activation, .. }
            | Self::DepthwiseConv2d { activation, .. }
            | Self::Pool2d { activation, .. }
            | Self::FullyConnected { activation, .. }
            | Self::Concatenation { activation, .. }
            | Self::Elementwise { activation } => Some(*activation),
            _ => None,
        }
    }
}

/// One tensor of the subgraph.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// Static shape (dynamic dimensions as stored, usually 1).
    pub shape: Vec<i32>,
    /// Shape with -1 for dynamic dimensions, when the file has it.
    pub shape_signature: Option<Vec<i32>>,
    pub dtype: TensorType,
    /// Index into the model's buffers (0 = the empty buffer).
    pub buffer: usize,
    /// Whether quantization parameters (scales) are attached.
    pub quantized: bool,
}

/// One operator of the subgraph.
#[derive(Debug, Clone)]
pub struct Operator {
    pub opcode: Opcode,
    /// Tensor indices; -1 marks an omitted optional input.
    pub inputs: Vec<i32>,
    pub outputs: Vec<i32>,
    pub options: Options,
}

/// A parsed model: the first subgraph's tensors and operators, and views of the constant data.
pub struct Model<'a> {
    bytes: &'a [u8],
    pub version: u32,
    pub description: Option<String>,
    pub subgraph_count: usize,
    pub tensors: Vec<TensorInfo>,
    pub operators: Vec<Operator>,
    pub inputs: Vec<usize>,
    pub outputs: Vec<usize>,
    /// Byte range of each buffer's data within the file.
    buffers: Vec<Range<usize>>,
}

impl<'a> Model<'a> {
    /// Parses and checks `bytes` (the whole .tflite file).
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        if bytes.len() < HEADER_BYTES {
            return Err(TfliteError::TooShort { len: bytes.len() });
        }
        let buf = Bytes(bytes);
        let found: [u8; 4] = buf.array("file identifier", 4)?;
        if &found != FILE_IDENTIFIER {
            return Err(TfliteError::Magic { found });
        }
        let root = Table::at(buf, "model table", buf.deref("root offset", 0)?)?;
        let version = root.u32_or(0, 0)?;
        if version != SCHEMA_VERSION {
            return Err(TfliteError::Version(version));
        }
        let opcodes = read_opcodes(&root)?;
        let buffers = read_buffers(buf, &root)?;
        let subgraphs = root.tables(2, "subgraphs")?;
        let graph = subgraphs
            .first()
            .ok_or_else(|| TfliteError::Invalid("the model has no subgraph".into()))?;
        let tensors = graph
            .tables(0, "tensors")?
            .iter()
            .map(read_tensor)
            .collect::<Result<Vec<_>>>()?;
        let operators = graph
            .tables(3, "operators")?
            .iter()
            .map(|t| read_operator(t, &opcodes))
            .collect::<Result<Vec<_>>>()?;
        let model = Self {
            bytes,
            version,
            description: root.string(3, "description")?,
            subgraph_count: subgraphs.len(),
            inputs: tensor_indices(&graph.i32s(1, "subgraph inputs")?, tensors.len())?,
            outputs: tensor_indices(&graph.i32s(2, "subgraph outputs")?, tensors.len())?,
            tensors,
            operators,
            buffers,
        };
        model.check_references()?;
        Ok(model)
    }

    /// Every operator's tensors and every tensor's buffer exist.
    fn check_references(&self) -> Result<()> {
        for (i, op) in self.operators.iter().enumerate() {
            for &t in op.inputs.iter().chain(&op.outputs) {
                if t < -1 || t >= self.tensors.len() as i32 {
                    return Err(TfliteError::Invalid(format!(
                        "operator {i} refers to tensor {t} of {}",
                        self.tensors.len()
                    )));
                }
            }
        }
        for (i, t) in self.tensors.iter().enumerate() {
            if t.buffer >= self.buffers.len() {
                return Err(self.tensor_error(i, format!("buffer {} does not exist", t.buffer)));
            }
        }
        Ok(())
    }

    fn tensor_error(&self, index: usize, reason: String) -> TfliteError {
        TfliteError::Tensor {
            index,
            name: self
                .tensors
                .get(index)
                .map_or_else(String::new, |t| t.name.clone()),
            reason,
        }
    }

    pub fn tensor(&self, index: usize) -> Result<&TensorInfo> {
        self.tensors
            .get(index)
            .ok_or_else(|| TfliteError::Invalid(format!("no tensor {index}")))
    }

    /// The constant bytes of a tensor (empty for activations).
    pub fn tensor_bytes(&self, index: usize) -> Result<&'a [u8]> {
        let t = self.tensor(index)?;
        let range = self
            .buffers
            .get(t.buffer)
            .ok_or_else(|| self.tensor_error(index, "missing buffer".into()))?;
        self.bytes
            .get(range.clone())
            .ok_or_else(|| self.tensor_error(index, "buffer outside the file".into()))
    }

    /// Number of elements of the static shape.
    pub fn element_count(&self, index: usize) -> Result<usize> {
        let t = self.tensor(index)?;
        t.shape.iter().try_fold(1usize, |acc, &d| {
            usize::try_from(d)
                .ok()
                .and_then(|d| acc.checked_mul(d))
                .ok_or_else(|| self.tensor_error(index, format!("bad shape {:?}", t.shape)))
        })
    }

    /// A constant float32 tensor's values, checked against its shape.
    pub fn tensor_f32(&self, index: usize) -> Result<Vec<f32>> {
        self.constant(index, TensorType::Float32, f32::from_le_bytes)
    }

    /// A constant int32 tensor's values, checked against its shape.
    pub fn tensor_i32(&self, index: usize) -> Result<Vec<i32>> {
        self.constant(index, TensorType::Int32, i32::from_le_bytes)
    }

    fn constant<T>(
        &self,
        index: usize,
        dtype: TensorType,
        read: fn([u8; 4]) -> T,
    ) -> Result<Vec<T>> {
        let t = self.tensor(index)?;
        if t.dtype != dtype {
            return Err(self.tensor_error(index, format!("is {:?}, expected {dtype:?}", t.dtype)));
        }
        let bytes = self.tensor_bytes(index)?;
        let count = self.element_count(index)?;
        if bytes.len() != count * 4 {
            return Err(self.tensor_error(
                index,
                format!(
                    "has {} data bytes for {count} values (not a constant?)",
                    bytes.len()
                ),
            ));
        }
        Ok(bytes
            .chunks_exact(4)
            .map(|c| read([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}

fn tensor_indices(raw: &[i32], count: usize) -> Result<Vec<usize>> {
    raw.iter()
        .map(|&i| {
            usize::try_from(i)
                .ok()
                .filter(|&i| i < count)
                .ok_or_else(|| TfliteError::Invalid(format!("subgraph refers to tensor {i}")))
        })
        .collect()
}

fn read_opcodes(root: &Table<'_>) -> Result<Vec<Opcode>> {
    root.tables(1, "operator codes")?
        .iter()
        .map(|t| {
            let deprecated = i32::from(t.u8_or(0, 0)? as i8);
            let builtin = t.i32_or(3, 0)?;
            // Old files fill only the 8-bit field; new ones both, or the 32-bit one for codes
            // past 127 (the 8-bit field then holds the placeholder 127).
            let code = if deprecated == PLACEHOLDER_FOR_GREATER_OP_CODES {
                builtin
            } else {
                builtin.max(deprecated)
            };
            if code == CUSTOM_OPCODE {
                let name = t.string(1, "custom code")?.unwrap_or_default();
                return Ok(Opcode::Custom(name));
            }
            Ok(Opcode::from_builtin(code))
        })
        .collect()
}

/// Buffers hold their data inline (`data`) or, in files over 2 GB, at (`offset`, `size`) from
/// the start of the file.
fn read_buffers(buf: Bytes<'_>, root: &Table<'_>) -> Result<Vec<Range<usize>>> {
    root.tables(4, "buffers")?
        .iter()
        .map(|t| {
            let inline = t.byte_range(0, "buffer data")?;
            if !inline.is_empty() {
                return Ok(inline);
            }
            let offset = t.u64_or(1, 0)?;
            let size = t.u64_or(2, 0)?;
            if offset <= 1 {
                return Ok(0..0);
            }
            let start = usize::try_from(offset).map_err(|_| too_big("buffer offset"))?;
            let len = usize::try_from(size).map_err(|_| too_big("buffer size"))?;
            buf.range("external buffer", start, len)?;
            Ok(start..start + len)
        })
        .collect()
}

fn too_big(what: &str) -> TfliteError {
    TfliteError::Invalid(format!("{what} does not fit in memory"))
}

fn read_tensor(t: &Table<'_>) -> Result<TensorInfo> {
    let signature = t.i32s(7, "tensor shape signature")?;
    let quantized = match t.table(4, "quantization")? {
        Some(q) => q.vector_len(2, "quantization scales", 4)? > 0,
        None => false,
    };
    Ok(TensorInfo {
        shape: t.i32s(0, "tensor shape")?,
        dtype: TensorType::from_code(t.u8_or(1, 0)?),
        buffer: t.u32_or(2, 0)? as usize,
        name: t.string(3, "tensor name")?.unwrap_or_default(),
        quantized,
        shape_signature: (!signature.is_empty()).then_some(signature),
    })
}

fn read_operator(t: &Table<'_>, opcodes: &[Opcode]) -> Result<Operator> {
    let index = t.u32_or(0, 0)? as usize;
    let opcode = opcodes
        .get(index)
        .cloned()
        .ok_or_else(|| TfliteError::Invalid(format!("operator code {index} does not exist")))?;
    let kind = t.u8_or(3, 0)?;
    let options = Options::parse(kind, t.table(4, "builtin options")?)?;
    Ok(Operator {
        opcode,
        inputs: t.i32s(1, "operator inputs")?,
        outputs: t.i32s(2, "operator outputs")?,
        options,
    })
}
