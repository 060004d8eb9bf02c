//! A blocking Milvus client: what [`super::MilvusStore`] asks of the server.
//!
//! A thin synchronous layer over the `milvus-sdk-rust` (crate name `milvus`) `v2::ClientV2`
//! API. [`Milvus`] owns a single-threaded Tokio runtime and `block_on`s every call, so it can
//! be used from ordinary (non-async) code. It must **not** be used from inside another Tokio
//! runtime (block_on would panic); use it from plain threads.
//!
//! What it offers:
//! * [`Milvus::connect`] with a bounded connect time (fails fast when nothing listens).
//! * Collections described by an explicit field list ([`Field`] / [`FieldKind`]), created with
//!   one index per vector field ([`VectorIndex`]) and loaded; [`Milvus::describe`] +
//!   [`schema_mismatch`] to detect a collection with the wrong
//!   schema.
//! * Column-oriented insert / upsert / delete / flush ([`Column`], [`Columns`]); `flush` also
//!   waits until the writes are visible to queries (see below).
//! * [`Milvus::query`] returning *all* matching rows (pages through Milvus' 16384-row
//!   window with a primary-key cursor `pk > last`, pages sized to fit the 4 MiB reply limit).
//! * [`Milvus::search_binary`] / [`Milvus::search_float`] returning, per query vector, the hits
//!   best first, reading ids / scores / output columns directly from the reply (the SDK's
//!   `rows()` helper fails on milvus-lite 2.5 search replies).
//!
//! Score convention (as returned by Milvus, not converted): `HAMMING`, `L2`, `JACCARD` give a
//! distance (smaller is better, hits ascending); `COSINE` and `IP` give a similarity (larger is
//! better, hits descending; an exact self-match scores ~1.0 for COSINE).
//!
//! Consistency / read-your-writes: searches use `Bounded`, queries and counts `Session`.
//! milvus-lite 2.5 applies writes asynchronously, so right after an insert/upsert/delete returns, a query or search can miss
//! it for ~1-12 ms at *any* consistency level (Strong included). [`Milvus::flush`] (or
//! [`Milvus::wait_visible`]) therefore waits until this connection's latest writes read back;
//! after `insert` + `flush`, every later query sees the rows. On a real Milvus server `Session`
//! alone gives read-your-writes for this process and the wait returns at the first poll.
//!
//! Size limits: the SDK cannot receive replies over 4 MiB (tonic default, not configurable in
//! milvus-sdk-rust 3.0.3), so query pages and search batches are sized to stay under it;
//! inserts are split into ~16 MiB messages (server limit 64 MiB).

use std::collections::HashMap;
use std::fmt;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use milvus::v2::error::Error as SdkError;
use milvus::v2::prelude::{
    ClientV2, CollectionSchema, ConnectConfig, CreateCollectionRequest, DataType, DeleteRequest,
    DescribeCollectionRequest, DescribeIndexRequest, DropCollectionRequest, FieldData, FieldSchema,
    FlushRequest, HasCollectionRequest, Ids, IndexParam, InsertRequest, LoadCollectionRequest,
    QueryRequest, RetryConfig, SearchRequest, SearchVectors, TelemetryConfig, UpsertRequest,
};
use milvus::v2::request::utility::GetServerVersionRequest;
pub use milvus::v2::{ConsistencyLevel, IndexType, MetricType};

/// The credentials sent: `EARSHOT_MILVUS_TOKEN` (`user:password`, or an API key), else Milvus's
/// default user.
fn token() -> String {
    std::env::var("EARSHOT_MILVUS_TOKEN").unwrap_or_else(|_| "root:Milvus".into())
}

/// Queries and counts read this process's own writes (with [`Milvus::flush`]'s wait on lite);
/// searches may miss the last moments' writes, for speed (Strong cost 310 ms a query on a
/// standalone server, see issue 25).
const QUERY_CONSISTENCY: ConsistencyLevel = ConsistencyLevel::Session;
const SEARCH_CONSISTENCY: ConsistencyLevel = ConsistencyLevel::Bounded;

/// How long [`Milvus::connect`] may take before giving up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Per-attempt RPC deadline (large inserts / flushes on a slow disk can take a while).
const RPC_TIMEOUT: Duration = Duration::from_secs(120);
/// Upper bound on transparent SDK retries of one RPC (e.g. while the server restarts).
const RETRY_BUDGET: Duration = Duration::from_secs(15);
/// Rows per query page. Milvus rejects `offset + limit > 16384` (queryNode.maxQueryResultWindow).
pub const QUERY_PAGE: usize = 16_384;
/// Largest `k` Milvus accepts for a search (topk limit).
pub const MAX_SEARCH_K: usize = 16_384;
/// The SDK (tonic default) refuses replies larger than 4 MiB and cannot be configured
/// otherwise; query pages and search batches are sized to stay below this many bytes.
const MAX_REPLY_BYTES: usize = 3 << 20;
/// Target size of one insert message; bigger inserts are split (server limit is 64 MiB).
const INSERT_CHUNK_BYTES: usize = 16 << 20;
/// How long `flush` waits for the flushed segments to be persisted.
const FLUSH_WAIT_MS: i64 = 60_000;
/// How long [`Milvus::flush`] waits for its writes to become visible to queries.
const VISIBLE_WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors from [`Milvus`]. Every message names the server or collection involved and the fix.
#[derive(Debug, thiserror::Error)]
pub enum MilvusError {
    /// Nothing answered at `uri` within [`CONNECT_TIMEOUT`].
    #[error(
        "cannot reach the Milvus server at {uri}: {source}. Start Milvus (or milvus-lite) there, \
         or give the address of one that runs (--db milvus://HOST:PORT)"
    )]
    Unreachable {
        /// `http://host:port` that was tried.
        uri: String,
        /// Underlying socket / gRPC error.
        #[source]
        source: BoxError,
    },
    /// The server rejected an operation (or the connection broke during it).
    #[error(
        "Milvus {what} failed: {source}. Check that the Milvus server is running and the collection exists with the expected schema"
    )]
    Server {
        /// The operation, e.g. `"insert into earshot_fingerprint"`.
        what: String,
        /// The SDK error, including the server's reason.
        #[source]
        source: Box<SdkError>,
    },
    /// A collection exists but does not have the schema the caller expects.
    #[error("Milvus collection {collection} has an unexpected schema: {detail}")]
    Schema {
        /// Collection name.
        collection: String,
        /// What differs.
        detail: String,
    },
    /// The server's version cannot do what was asked.
    #[error("the Milvus server at {uri} runs version {version}, which cannot {what}; {fix}")]
    Unsupported {
        uri: String,
        version: String,
        what: String,
        fix: String,
    },
    /// The server replied with something this module does not understand (or the caller asked
    /// for a column that is absent / of another type).
    #[error("unexpected Milvus reply to {what}: {detail}")]
    Reply {
        /// The operation or column being read.
        what: String,
        /// What was wrong with it.
        detail: String,
    },
}

fn server_err(what: impl Into<String>) -> impl FnOnce(SdkError) -> MilvusError {
    let what = what.into();
    move |source| MilvusError::Server {
        what,
        source: Box::new(source),
    }
}

/// The rows of `columns`, written to collection `name`: every column must have as many.
fn rows_of(name: &str, columns: &Columns) -> Result<usize, MilvusError> {
    let rows = columns.len();
    match columns.cols.iter().find(|(_, c)| c.len() != rows) {
        Some((n, c)) => Err(MilvusError::Schema {
            collection: name.into(),
            detail: format!("column {n} has {} rows, expected {rows}", c.len()),
        }),
        None => Ok(rows),
    }
}

fn reply_err(what: impl Into<String>, detail: impl Into<String>) -> MilvusError {
    MilvusError::Reply {
        what: what.into(),
        detail: detail.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Schema description
// ---------------------------------------------------------------------------------------------

/// Type of a collection field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldKind {
    /// 64-bit integer; `primary` marks the (single, user-supplied, not auto-id) primary key.
    Int64 { primary: bool },
    /// 32-bit integer.
    Int32,
    /// 64-bit float.
    Double,
    /// Boolean.
    Bool,
    /// UTF-8 string of at most `max_len` bytes (Milvus limit 65535).
    VarChar { max_len: u32 },
    /// Packed binary vector of `bits` bits (multiple of 8).
    BinaryVector { bits: u32 },
    /// Dense float vector of dimension `dim`.
    FloatVector { dim: u32 },
    /// Any other type found by [`Milvus::describe`] (never accepted by `create_collection`).
    Other(String),
}

impl FieldKind {
    pub fn is_vector(&self) -> bool {
        matches!(
            self,
            FieldKind::BinaryVector { .. } | FieldKind::FloatVector { .. }
        )
    }
}

impl fmt::Display for FieldKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldKind::Int64 { primary: true } => write!(f, "Int64 primary key"),
            FieldKind::Int64 { primary: false } => write!(f, "Int64"),
            FieldKind::Int32 => write!(f, "Int32"),
            FieldKind::Double => write!(f, "Double"),
            FieldKind::Bool => write!(f, "Bool"),
            FieldKind::VarChar { max_len } => write!(f, "VarChar({max_len})"),
            FieldKind::BinaryVector { bits } => write!(f, "BinaryVector({bits} bits)"),
            FieldKind::FloatVector { dim } => write!(f, "FloatVector(dim {dim})"),
            FieldKind::Other(name) => write!(f, "{name}"),
        }
    }
}

/// One field of a collection schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Field name.
    pub name: String,
    /// Field type.
    pub kind: FieldKind,
}

impl Field {
    /// A field named `name` of type `kind`.
    pub fn new(name: impl Into<String>, kind: FieldKind) -> Self {
        Field {
            name: name.into(),
            kind,
        }
    }
    /// Int64 primary key (values supplied by the caller).
    pub fn primary(name: impl Into<String>) -> Self {
        Self::new(name, FieldKind::Int64 { primary: true })
    }
    /// Plain Int64 field.
    pub fn int64(name: impl Into<String>) -> Self {
        Self::new(name, FieldKind::Int64 { primary: false })
    }
    /// Int32 field.
    pub fn int32(name: impl Into<String>) -> Self {
        Self::new(name, FieldKind::Int32)
    }
    /// Double field.
    pub fn double(name: impl Into<String>) -> Self {
        Self::new(name, FieldKind::Double)
    }
    /// Bool field.
    pub fn bool(name: impl Into<String>) -> Self {
        Self::new(name, FieldKind::Bool)
    }
    /// VarChar field of at most `max_len` bytes.
    pub fn varchar(name: impl Into<String>, max_len: u32) -> Self {
        Self::new(name, FieldKind::VarChar { max_len })
    }
    /// Binary vector field of `bits` bits.
    pub fn binary_vector(name: impl Into<String>, bits: u32) -> Self {
        Self::new(name, FieldKind::BinaryVector { bits })
    }
    /// Float vector field of dimension `dim`.
    pub fn float_vector(name: impl Into<String>, dim: u32) -> Self {
        Self::new(name, FieldKind::FloatVector { dim })
    }

    fn to_sdk(&self, collection: &str) -> Result<FieldSchema, MilvusError> {
        let f = FieldSchema::new().name(self.name.as_str());
        Ok(match &self.kind {
            FieldKind::Int64 { primary } => f
                .data_type(DataType::Int64)
                .primary_key(*primary)
                .auto_id(false),
            FieldKind::Int32 => f.data_type(DataType::Int32),
            FieldKind::Double => f.data_type(DataType::Double),
            FieldKind::Bool => f.data_type(DataType::Bool),
            FieldKind::VarChar { max_len } => f.data_type(DataType::VarChar).max_length(*max_len),
            FieldKind::BinaryVector { bits } => {
                f.data_type(DataType::BinaryVector).dimension(*bits)
            }
            FieldKind::FloatVector { dim } => f.data_type(DataType::FloatVector).dimension(*dim),
            FieldKind::Other(t) => {
                return Err(MilvusError::Schema {
                    collection: collection.into(),
                    detail: format!("field {} has unsupported type {t}", self.name),
                });
            }
        })
    }

    fn from_sdk(f: &FieldSchema) -> Field {
        let kind = match f.get_data_type() {
            DataType::Int64 => FieldKind::Int64 {
                primary: f.is_primary_key(),
            },
            DataType::Int32 => FieldKind::Int32,
            DataType::Double => FieldKind::Double,
            DataType::Bool => FieldKind::Bool,
            DataType::VarChar => FieldKind::VarChar {
                max_len: f.get_max_length(),
            },
            DataType::BinaryVector => FieldKind::BinaryVector {
                bits: f.get_dimension(),
            },
            DataType::FloatVector => FieldKind::FloatVector {
                dim: f.get_dimension(),
            },
            other => FieldKind::Other(format!("{other:?}")),
        };
        Field {
            name: f.get_name().to_string(),
            kind,
        }
    }
}

/// Compares a collection's actual fields (from [`Milvus::describe`]) with the expected ones.
/// Returns `None` when they match (same names, types, dims, max lengths and primary key; order
/// ignored), otherwise a human-readable description of every difference.
pub fn schema_mismatch(expected: &[Field], found: &[Field]) -> Option<String> {
    let mut problems = Vec::new();
    for e in expected {
        match found.iter().find(|f| f.name == e.name) {
            None => problems.push(format!("field {} ({}) is missing", e.name, e.kind)),
            Some(f) if f.kind != e.kind => problems.push(format!(
                "field {} is {} but {} is expected",
                e.name, f.kind, e.kind
            )),
            Some(_) => {}
        }
    }
    for f in found {
        if !expected.iter().any(|e| e.name == f.name) {
            problems.push(format!("unexpected extra field {} ({})", f.name, f.kind));
        }
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// Worst-case encoded bytes of one row of `output` fields (+ the primary key) in a reply.
fn reply_row_bytes(fields: &[Field], output: &[&str]) -> usize {
    let all = output.contains(&"*");
    fields
        .iter()
        .filter(|f| {
            all || f.kind == FieldKind::Int64 { primary: true } || output.contains(&f.name.as_str())
        })
        .map(|f| match &f.kind {
            FieldKind::Int64 { .. } | FieldKind::Int32 => 10, // packed varint, negatives take 10
            FieldKind::Double => 8,
            FieldKind::Bool => 1,
            FieldKind::VarChar { max_len } => *max_len as usize + 3,
            FieldKind::BinaryVector { bits } => bits.div_ceil(8) as usize,
            FieldKind::FloatVector { dim } => 4 * *dim as usize,
            FieldKind::Other(_) => 1024,
        })
        .sum::<usize>()
        + 16
}

/// Index to build on one vector field.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorIndex {
    /// Vector field name.
    pub field: String,
    /// Index type, e.g. `BinFlat`, `BinIvfFlat`, `Flat`, `IvfFlat`, `Hnsw`.
    pub index_type: IndexType,
    /// Metric, e.g. `Hamming` (binary) or `Cosine` (float).
    pub metric: MetricType,
    /// Extra build parameters, e.g. `("nlist", "1024")` for IVF indexes.
    pub params: Vec<(String, String)>,
}

impl VectorIndex {
    /// `BIN_FLAT` + `HAMMING` (exact; the only binary index milvus-lite supports).
    pub fn bin_flat(field: impl Into<String>) -> Self {
        Self::new(field, IndexType::BinFlat, MetricType::Hamming, &[])
    }
    /// `BIN_IVF_FLAT` + `HAMMING` with `nlist` clusters (standalone/distributed Milvus only;
    /// search with `nprobe`, see [`Milvus::set_search_params`]).
    pub fn bin_ivf_flat(field: impl Into<String>, nlist: u32) -> Self {
        Self::new(
            field,
            IndexType::BinIvfFlat,
            MetricType::Hamming,
            &[("nlist", &nlist.to_string())],
        )
    }
    /// `IVF_FLAT` + `COSINE` with `nlist` clusters (search with `nprobe`).
    pub fn ivf_flat_cosine(field: impl Into<String>, nlist: u32) -> Self {
        Self::new(
            field,
            IndexType::IvfFlat,
            MetricType::Cosine,
            &[("nlist", &nlist.to_string())],
        )
    }
    /// `FLAT` + `COSINE` (exact).
    pub fn flat_cosine(field: impl Into<String>) -> Self {
        Self::new(field, IndexType::Flat, MetricType::Cosine, &[])
    }
    /// Any index type / metric / build parameters.
    pub fn new(
        field: impl Into<String>,
        index_type: IndexType,
        metric: MetricType,
        params: &[(&str, &str)],
    ) -> Self {
        VectorIndex {
            field: field.into(),
            index_type,
            metric,
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn to_sdk(&self) -> IndexParam {
        IndexParam::new()
            .field_name(self.field.as_str())
            .index_type(self.index_type)
            .metric_type(self.metric)
            .extra_params(self.params.iter().cloned().collect::<HashMap<_, _>>())
    }
}

// ---------------------------------------------------------------------------------------------
// Column data
// ---------------------------------------------------------------------------------------------

/// Values of one field, in row order.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// Int64 values.
    Int64(Vec<i64>),
    /// Int32 values.
    Int32(Vec<i32>),
    /// Double values.
    Double(Vec<f64>),
    /// Bool values.
    Bool(Vec<bool>),
    /// VarChar values.
    VarChar(Vec<String>),
    /// Packed binary vectors, `bytes_per_row` bytes each (bits / 8), concatenated.
    BinaryVector { bytes_per_row: usize, data: Vec<u8> },
    /// Float vectors of dimension `dim`, concatenated.
    FloatVector { dim: usize, data: Vec<f32> },
}

impl Column {
    /// A column of no rows for a field of `kind` (`None` for a type this module does not read).
    fn empty(kind: &FieldKind) -> Option<Column> {
        Some(match *kind {
            FieldKind::Int64 { .. } => Column::Int64(Vec::new()),
            FieldKind::Int32 => Column::Int32(Vec::new()),
            FieldKind::Double => Column::Double(Vec::new()),
            FieldKind::Bool => Column::Bool(Vec::new()),
            FieldKind::VarChar { .. } => Column::VarChar(Vec::new()),
            FieldKind::BinaryVector { bits } => Column::BinaryVector {
                bytes_per_row: bits.div_ceil(8) as usize,
                data: Vec::new(),
            },
            FieldKind::FloatVector { dim } => Column::FloatVector {
                dim: dim as usize,
                data: Vec::new(),
            },
            FieldKind::Other(_) => return None,
        })
    }

    /// Binary vectors given one `Vec<u8>` per row (all the same length).
    pub fn binary_rows(rows: Vec<Vec<u8>>) -> Column {
        let bytes_per_row = rows.first().map_or(0, Vec::len);
        Column::BinaryVector {
            bytes_per_row,
            data: rows.concat(),
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            Column::Int64(v) => v.len(),
            Column::Int32(v) => v.len(),
            Column::Double(v) => v.len(),
            Column::Bool(v) => v.len(),
            Column::VarChar(v) => v.len(),
            Column::BinaryVector {
                bytes_per_row,
                data,
            } => data.len().checked_div(*bytes_per_row).unwrap_or(0),
            Column::FloatVector { dim, data } => data.len().checked_div(*dim).unwrap_or(0),
        }
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn type_name(&self) -> &'static str {
        match self {
            Column::Int64(_) => "Int64",
            Column::Int32(_) => "Int32",
            Column::Double(_) => "Double",
            Column::Bool(_) => "Bool",
            Column::VarChar(_) => "VarChar",
            Column::BinaryVector { .. } => "BinaryVector",
            Column::FloatVector { .. } => "FloatVector",
        }
    }

    /// Approximate payload bytes (used to split big inserts).
    fn approx_bytes(&self) -> usize {
        match self {
            Column::Int64(v) => v.len() * 8,
            Column::Int32(v) => v.len() * 4,
            Column::Double(v) => v.len() * 8,
            Column::Bool(v) => v.len(),
            Column::VarChar(v) => v.iter().map(|s| s.len() + 4).sum(),
            Column::BinaryVector { data, .. } => data.len(),
            Column::FloatVector { data, .. } => data.len() * 4,
        }
    }

    /// Rows `start..end` as SDK field data.
    fn to_sdk(&self, name: &str, start: usize, end: usize) -> FieldData {
        match self {
            Column::Int64(v) => FieldData::int64(name, v[start..end].to_vec()),
            Column::Int32(v) => FieldData::int32(name, v[start..end].to_vec()),
            Column::Double(v) => FieldData::double(name, v[start..end].to_vec()),
            Column::Bool(v) => FieldData::boolean(name, v[start..end].to_vec()),
            Column::VarChar(v) => FieldData::varchar(name, v[start..end].to_vec()),
            Column::BinaryVector {
                bytes_per_row: n,
                data,
            } => FieldData::binary_vector(
                name,
                data[start * n..end * n]
                    .chunks(*n)
                    .map(<[u8]>::to_vec)
                    .collect(),
            ),
            Column::FloatVector { dim, data } => FieldData::float_vector(
                name,
                data[start * dim..end * dim]
                    .chunks(*dim)
                    .map(<[f32]>::to_vec)
                    .collect(),
            ),
        }
    }

    fn from_sdk(data: &FieldData) -> Result<Column, String> {
        Ok(match data {
            FieldData::Int64 { values, .. } => Column::Int64(values.clone()),
            FieldData::Int32 { values, .. } => Column::Int32(values.clone()),
            FieldData::Double { values, .. } => Column::Double(values.clone()),
            FieldData::Bool { values, .. } => Column::Bool(values.clone()),
            FieldData::VarChar { values, .. } => Column::VarChar(values.clone()),
            FieldData::BinaryVector { values, .. } => Column::binary_rows(values.clone()),
            FieldData::FloatVector { values, .. } => Column::FloatVector {
                dim: values.first().map_or(0, Vec::len),
                data: values.concat(),
            },
            FieldData::Nullable { data, .. } => Column::from_sdk(data)?,
            other => return Err(format!("field {} has an unsupported type", other.name())),
        })
    }

    /// Appends `other` (same type) to `self`.
    fn extend(&mut self, other: Column) -> Result<(), String> {
        match (self, other) {
            (Column::Int64(a), Column::Int64(b)) => a.extend(b),
            (Column::Int32(a), Column::Int32(b)) => a.extend(b),
            (Column::Double(a), Column::Double(b)) => a.extend(b),
            (Column::Bool(a), Column::Bool(b)) => a.extend(b),
            (Column::VarChar(a), Column::VarChar(b)) => a.extend(b),
            (
                Column::BinaryVector {
                    bytes_per_row: n,
                    data: a,
                },
                Column::BinaryVector {
                    bytes_per_row: m,
                    data: b,
                },
            ) => {
                if *n == 0 {
                    *n = m;
                }
                a.extend(b)
            }
            (Column::FloatVector { dim: n, data: a }, Column::FloatVector { dim: m, data: b }) => {
                if *n == 0 {
                    *n = m;
                }
                a.extend(b)
            }
            (a, b) => {
                return Err(format!(
                    "page changed type from {} to {}",
                    a.type_name(),
                    b.type_name()
                ));
            }
        }
        Ok(())
    }
}

/// A set of named columns of equal length: insert input and query / search output.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Columns {
    cols: Vec<(String, Column)>,
}

macro_rules! getter {
    ($(#[$doc:meta])* $fn:ident, $variant:ident, $t:ty) => {
        $(#[$doc])*
        pub fn $fn(&self, name: &str) -> Result<&[$t], MilvusError> {
            match self.column(name)? {
                Column::$variant(v) => Ok(v),
                other => Err(self.wrong_type(name, other, stringify!($variant))),
            }
        }
    };
}

impl Columns {
    /// No columns.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a column (builder style).
    pub fn with(mut self, name: impl Into<String>, column: Column) -> Self {
        self.push(name, column);
        self
    }
    /// Adds a column.
    pub fn push(&mut self, name: impl Into<String>, column: Column) {
        self.cols.push((name.into(), column));
    }
    /// Number of rows (length of the first column; 0 without columns).
    pub fn len(&self) -> usize {
        self.cols.first().map_or(0, |(_, c)| c.len())
    }
    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Column names in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.cols.iter().map(|(n, _)| n.as_str())
    }
    /// The column called `name`, if present.
    pub fn get(&self, name: &str) -> Option<&Column> {
        self.cols.iter().find(|(n, _)| n == name).map(|(_, c)| c)
    }
    /// The column called `name`, or a [`MilvusError::Reply`].
    pub fn column(&self, name: &str) -> Result<&Column, MilvusError> {
        self.get(name).ok_or_else(|| {
            reply_err(
                format!("reading column {name}"),
                format!(
                    "no such column (have: {}); add it to output_fields",
                    self.names().collect::<Vec<_>>().join(", ")
                ),
            )
        })
    }

    getter!(
        /// Int64 column values.
        i64, Int64, i64);
    getter!(
        /// Int32 column values.
        i32, Int32, i32);
    getter!(
        /// Double column values.
        f64, Double, f64);
    getter!(
        /// Bool column values.
        bool, Bool, bool);
    getter!(
        /// VarChar column values.
        strings, VarChar, String);

    /// Binary-vector column: `(bytes_per_row, concatenated bytes)`.
    pub fn binary(&self, name: &str) -> Result<(usize, &[u8]), MilvusError> {
        match self.column(name)? {
            Column::BinaryVector {
                bytes_per_row,
                data,
            } => Ok((*bytes_per_row, data)),
            other => Err(self.wrong_type(name, other, "BinaryVector")),
        }
    }
    /// Float-vector column: `(dim, concatenated values)`.
    pub fn float_vectors(&self, name: &str) -> Result<(usize, &[f32]), MilvusError> {
        match self.column(name)? {
            Column::FloatVector { dim, data } => Ok((*dim, data)),
            other => Err(self.wrong_type(name, other, "FloatVector")),
        }
    }

    fn wrong_type(&self, name: &str, found: &Column, wanted: &str) -> MilvusError {
        reply_err(
            format!("reading column {name}"),
            format!("column is {} not {wanted}", found.type_name()),
        )
    }

    fn from_sdk(fields: &[FieldData], what: &str) -> Result<Columns, MilvusError> {
        let mut out = Columns::new();
        for f in fields {
            out.push(
                f.name(),
                Column::from_sdk(f).map_err(|d| reply_err(what, d))?,
            );
        }
        Ok(out)
    }

    /// Appends the rows of `page` (same columns) to `self`.
    fn append(&mut self, page: Columns, what: &str) -> Result<(), MilvusError> {
        if self.cols.is_empty() {
            *self = page;
            return Ok(());
        }
        for (name, col) in page.cols {
            let mine = self
                .cols
                .iter_mut()
                .find(|(n, _)| *n == name)
                .ok_or_else(|| reply_err(what, format!("page has unexpected column {name}")))?;
            mine.1
                .extend(col)
                .map_err(|d| reply_err(what, format!("column {name}: {d}")))?;
        }
        Ok(())
    }
}

/// Hits for one query vector, best first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hits {
    /// `(primary key, score)` pairs. Score is a distance for HAMMING/L2 (ascending) and a
    /// similarity for COSINE/IP (descending).
    pub hits: Vec<(i64, f32)>,
    /// The requested output fields, one row per hit (empty when none were requested).
    pub columns: Columns,
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

/// Blocking Milvus connection.
pub struct Milvus {
    rt: tokio::runtime::Runtime,
    client: ClientV2,
    search_params: HashMap<String, String>,
    /// Per collection: writes not yet confirmed visible (see [`Milvus::wait_visible`]).
    pending: Mutex<HashMap<String, Pending>>,
    /// Each collection's fields as last described: every query and search needs them (its
    /// primary key, its reply's size), and they change only when it is dropped.
    schemas: Mutex<HashMap<String, Vec<Field>>>,
}

/// Kind of write; milvus-lite may apply writes of different kinds out of order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteKind {
    Insert,
    Upsert,
    Delete,
}

/// Unconfirmed writes of one kind to one collection.
#[derive(Debug, Clone)]
struct Pending {
    kind: WriteKind,
    probes: Vec<Probe>,
}

/// A check that a write has become visible to reads.
#[derive(Debug, Clone)]
enum Probe {
    /// The last row written (scalar columns only) must be readable with these values.
    Row(Columns),
    /// No row may match this filter any more.
    Gone(String),
}

impl Milvus {
    /// Connects to `http://host:port` (token `root:Milvus`). Fails with
    /// [`MilvusError::Unreachable`] within [`CONNECT_TIMEOUT`] when nothing answers; a refused
    /// TCP connection fails immediately.
    pub fn connect(host: &str, port: u16) -> Result<Milvus, MilvusError> {
        let uri = format!("http://{host}:{port}");
        let unreachable = |source: BoxError| MilvusError::Unreachable {
            uri: uri.clone(),
            source,
        };

        // Cheap TCP probe first: gives an immediate "connection refused" instead of the SDK
        // retrying for the whole connect timeout, and bounds DNS + SYN time.
        let addrs: Vec<_> = (host, port)
            .to_socket_addrs()
            .map_err(|e| unreachable(e.into()))?
            .collect();
        let mut last: Option<std::io::Error> = None;
        let mut ok = false;
        for addr in &addrs {
            match TcpStream::connect_timeout(addr, CONNECT_TIMEOUT) {
                Ok(_) => {
                    ok = true;
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        if !ok {
            let e =
                last.unwrap_or_else(|| std::io::Error::other("host name resolved to no address"));
            return Err(unreachable(e.into()));
        }

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| unreachable(e.into()))?;
        let config = ConnectConfig::new()
            .uri(uri.as_str())
            .token(token().as_str())
            .connect_timeout(CONNECT_TIMEOUT)
            .rpc_timeout(RPC_TIMEOUT)
            .retry(RetryConfig::new().max_retry_timeout(RETRY_BUDGET))
            .telemetry(TelemetryConfig::new().enabled(false));
        let client = rt
            .block_on(async {
                tokio::time::timeout(
                    CONNECT_TIMEOUT + Duration::from_secs(1),
                    ClientV2::new(&config),
                )
                .await
            })
            .map_err(|e| unreachable(e.into()))?
            .map_err(|e| unreachable(e.into()))?;
        Ok(Milvus {
            rt,
            client,
            search_params: HashMap::new(),
            pending: Mutex::new(HashMap::new()),
            schemas: Mutex::new(HashMap::new()),
        })
    }

    /// Search parameters sent with every search, e.g. `[("nprobe", "16")]` for IVF indexes.
    pub fn set_search_params(&mut self, params: &[(&str, &str)]) {
        self.search_params = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }

    /// The server's version as it reports it, e.g. `v2.3.5`.
    pub fn server_version(&self) -> Result<String, MilvusError> {
        let req = GetServerVersionRequest::builder()
            .build()
            .map_err(server_err("get version"))?;
        let r = (self.rt)
            .block_on(self.client.server_version(req))
            .map_err(server_err("get version"))?;
        Ok(r.version().to_string())
    }

    /// Rows of collection `name` its vector indexes hold, summed over them (a server builds
    /// indexes in the background; rows not yet indexed are searched exhaustively).
    pub fn indexed_rows(&self, name: &str) -> Result<i64, MilvusError> {
        let what = format!("describe the indexes of {name}");
        let req = DescribeIndexRequest::builder()
            .collection_name(name)
            .build()
            .map_err(server_err(&what))?;
        let r = (self.rt)
            .block_on(self.client.describe_index(req))
            .map_err(server_err(what))?;
        Ok(r.indexes().iter().map(|i| i.get_indexed_rows()).sum())
    }

    /// Does collection `name` exist?
    pub fn has_collection(&self, name: &str) -> Result<bool, MilvusError> {
        let what = format!("has_collection {name}");
        let req = HasCollectionRequest::builder()
            .collection_name(name)
            .build()
            .map_err(server_err(&what))?;
        let r = self
            .rt
            .block_on(self.client.has_collection(req))
            .map_err(server_err(what))?;
        Ok(r.exists())
    }

    /// Creates collection `name` with `fields` (exactly one `Int64 { primary: true }`, at least
    /// one vector field), builds an index on every vector field and loads the collection.
    /// Vector fields without an entry in `indexes` get `BIN_FLAT`+`HAMMING` (binary) or
    /// `FLAT`+`COSINE` (float).
    pub fn create_collection(
        &self,
        name: &str,
        fields: &[Field],
        indexes: &[VectorIndex],
    ) -> Result<(), MilvusError> {
        let schema_err = |detail: String| MilvusError::Schema {
            collection: name.into(),
            detail,
        };
        let primaries = fields
            .iter()
            .filter(|f| f.kind == FieldKind::Int64 { primary: true })
            .count();
        if primaries != 1 {
            return Err(schema_err(format!(
                "needs exactly one Int64 primary key, has {primaries}"
            )));
        }
        if !fields.iter().any(|f| f.kind.is_vector()) {
            return Err(schema_err(
                "Milvus requires at least one vector field".into(),
            ));
        }
        let mut schema = CollectionSchema::new().enable_dynamic_field(false);
        for f in fields {
            schema = schema.add_field(f.to_sdk(name)?);
        }
        let mut index_params = Vec::new();
        for f in fields.iter().filter(|f| f.kind.is_vector()) {
            let index = match indexes.iter().find(|i| i.field == f.name) {
                Some(i) => i.clone(),
                None if matches!(f.kind, FieldKind::BinaryVector { .. }) => {
                    VectorIndex::bin_flat(&f.name)
                }
                None => VectorIndex::flat_cosine(&f.name),
            };
            index_params.push(index.to_sdk());
        }
        if let Some(i) = indexes.iter().find(|i| {
            !fields
                .iter()
                .any(|f| f.name == i.field && f.kind.is_vector())
        }) {
            return Err(schema_err(format!(
                "index given for {}, which is not a vector field",
                i.field
            )));
        }
        let what = format!("create collection {name}");
        let req = CreateCollectionRequest::builder()
            .collection_name(name)
            .schema(schema)
            .index_params(index_params)
            .build()
            .map_err(server_err(&what))?;
        // With index params the SDK creates the collection, the indexes, then loads (async).
        self.rt
            .block_on(self.client.create_collection(req))
            .map_err(server_err(&what))?;
        self.load(name)
    }

    /// The fields of collection `name` (user fields only, in schema order).
    pub fn describe(&self, name: &str) -> Result<Vec<Field>, MilvusError> {
        let what = format!("describe collection {name}");
        let req = DescribeCollectionRequest::builder()
            .collection_name(name)
            .build()
            .map_err(server_err(&what))?;
        let r = self
            .rt
            .block_on(self.client.describe_collection(req))
            .map_err(server_err(&what))?;
        Ok(r.description()
            .get_schema()
            .get_fields()
            .iter()
            .filter(|f| !f.is_dynamic())
            .map(Field::from_sdk)
            .collect())
    }

    /// Drops collection `name` (no error if it does not exist).
    pub fn drop_collection(&self, name: &str) -> Result<(), MilvusError> {
        if let Ok(mut p) = self.pending.lock() {
            p.remove(name);
        }
        if let Ok(mut s) = self.schemas.lock() {
            s.remove(name);
        }
        if !self.has_collection(name)? {
            return Ok(());
        }
        let what = format!("drop collection {name}");
        let req = DropCollectionRequest::builder()
            .collection_name(name)
            .build()
            .map_err(server_err(&what))?;
        self.rt
            .block_on(self.client.drop_collection(req))
            .map_err(server_err(what))
    }

    /// Loads collection `name` into memory and waits until it is loaded (needed before
    /// search/query; a no-op when already loaded).
    pub fn load(&self, name: &str) -> Result<(), MilvusError> {
        let what = format!("load collection {name}");
        let req = LoadCollectionRequest::builder()
            .collection_name(name)
            .sync(true)
            .timeout_ms(120_000)
            .build()
            .map_err(server_err(&what))?;
        self.rt
            .block_on(self.client.load_collection(req))
            .map_err(server_err(what))
    }

    /// Inserts rows given column-wise; every column must have the same number of rows and the
    /// set must cover every field of the collection. Large inserts are split into messages of
    /// about 16 MiB. Returns the number of rows inserted.
    pub fn insert(&self, name: &str, columns: &Columns) -> Result<usize, MilvusError> {
        let what = format!("insert into {name}");
        let rows = rows_of(name, columns)?;
        if rows == 0 {
            return Ok(0);
        }
        self.before_write(name, WriteKind::Insert)?;
        let bytes: usize = columns.cols.iter().map(|(_, c)| c.approx_bytes()).sum();
        let chunks = bytes.div_ceil(INSERT_CHUNK_BYTES).max(1);
        let per_chunk = rows.div_ceil(chunks);
        let mut done = 0usize;
        let mut start = 0;
        while start < rows {
            let end = (start + per_chunk).min(rows);
            let fields: Vec<FieldData> = columns
                .cols
                .iter()
                .map(|(n, c)| c.to_sdk(n, start, end))
                .collect();
            let req = InsertRequest::builder()
                .collection_name(name)
                .columns(fields)
                .build()
                .map_err(server_err(&what))?;
            let r = self
                .rt
                .block_on(self.client.insert(req))
                .map_err(server_err(&what))?;
            done += usize::try_from(r.insert_count()).unwrap_or(0);
            self.note_row(name, WriteKind::Insert, columns, end - 1);
            start = end;
        }
        if done != rows {
            return Err(reply_err(
                what,
                format!("server acknowledged {done} of {rows} rows"),
            ));
        }
        Ok(done)
    }

    /// Inserts rows, replacing any existing rows with the same primary keys (Milvus upsert =
    /// delete + insert in one call). Same column rules as [`Self::insert`]. Returns the row count.
    pub fn upsert(&self, name: &str, columns: &Columns) -> Result<usize, MilvusError> {
        let what = format!("upsert into {name}");
        let rows = rows_of(name, columns)?;
        if rows == 0 {
            return Ok(0);
        }
        self.before_write(name, WriteKind::Upsert)?;
        let fields: Vec<FieldData> = columns
            .cols
            .iter()
            .map(|(n, c)| c.to_sdk(n, 0, rows))
            .collect();
        let insert = InsertRequest::builder()
            .collection_name(name)
            .columns(fields)
            .build()
            .map_err(server_err(&what))?;
        let req = UpsertRequest::builder()
            .insert(insert)
            .build()
            .map_err(server_err(&what))?;
        let r = self
            .rt
            .block_on(self.client.upsert(req))
            .map_err(server_err(&what))?;
        self.note_row(name, WriteKind::Upsert, columns, rows - 1);
        Ok(usize::try_from(r.upsert_count()).unwrap_or(0))
    }

    /// Deletes the rows matching `filter` (e.g. `"file == 7"`, `"id in [1, 2]"`). Returns the
    /// count reported by the server (for filter deletes this may be 0 or approximate on some
    /// server versions; don't rely on it).
    pub fn delete(&self, name: &str, filter: &str) -> Result<i64, MilvusError> {
        let what = format!("delete from {name} where {filter}");
        self.before_write(name, WriteKind::Delete)?;
        let req = DeleteRequest::builder()
            .collection_name(name)
            .filter(filter)
            .build()
            .map_err(server_err(&what))?;
        let r = self
            .rt
            .block_on(self.client.delete(req))
            .map_err(server_err(what))?;
        self.note(name, WriteKind::Delete, Probe::Gone(filter.to_string()));
        Ok(r.delete_count())
    }

    /// Makes everything written to `names` through this connection durable **and visible**:
    /// sends a Milvus flush (waits up to 60 s for the segments to be persisted), then waits
    /// (polling every 2 ms, up to 10 s) until this connection's unconfirmed writes to each
    /// collection are visible: the last row of every insert call reads back with the values
    /// written (likewise the last upsert), and no row matches any delete. Costs ~1-12 ms on
    /// milvus-lite. Writes of different kinds (insert / upsert / delete) to one collection are
    /// also serialised this way automatically: a write first waits for unconfirmed writes of
    /// another kind, because milvus-lite can apply e.g. a delete after a later insert.
    ///
    /// Why: milvus-lite 2.5 applies writes asynchronously; a query issued right after an
    /// insert/delete RPC returns can miss it for ~1-12 ms *at every consistency level*
    /// (Strong included), flushed or not. On a real Milvus server `Session` consistency
    /// (the default for [`Self::query`]) already gives read-your-writes and the wait ends at
    /// the first poll.
    pub fn flush(&self, names: &[&str]) -> Result<(), MilvusError> {
        let what = format!("flush {}", names.join(", "));
        let req = FlushRequest::builder()
            .collection_names(names.iter().copied())
            .wait_flushed_ms(FLUSH_WAIT_MS)
            .build()
            .map_err(server_err(&what))?;
        self.rt
            .block_on(self.client.flush(req))
            .map_err(server_err(&what))?;
        for name in names {
            self.wait_visible(name)?;
        }
        Ok(())
    }

    /// Waits until the writes recorded for `name` are visible (see [`Self::flush`]), without
    /// flushing.
    pub fn wait_visible(&self, name: &str) -> Result<(), MilvusError> {
        let pending = self.pending.lock().map(|mut p| p.remove(name));
        let Ok(Some(pending)) = pending else {
            return Ok(());
        };
        let pk = self.primary_key(name)?;
        let what = format!("waiting for writes to {name} to become visible");
        let start = Instant::now();
        for probe in &pending.probes {
            loop {
                let visible = match probe {
                    Probe::Gone(filter) => self.count(name, filter)? == 0,
                    Probe::Row(row) => {
                        let id = row.i64(&pk)?[0];
                        let names: Vec<&str> = row.names().filter(|n| *n != pk).collect();
                        let got =
                            self.query_page(name, &format!("{pk} == {id}"), &names, 2, &what)?;
                        got.len() == 1 && names.iter().all(|n| got.get(n) == row.get(n))
                    }
                };
                if visible {
                    break;
                }
                if start.elapsed() > VISIBLE_WAIT {
                    return Err(reply_err(
                        what,
                        format!("still not visible after {VISIBLE_WAIT:?}"),
                    ));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        Ok(())
    }

    /// Before a write of `kind`: if writes of another kind are unconfirmed, wait for them, so
    /// that e.g. a delete is visible before the re-insert of the same rows is sent (milvus-lite
    /// otherwise may apply them out of order).
    fn before_write(&self, name: &str, kind: WriteKind) -> Result<(), MilvusError> {
        let other = self
            .pending
            .lock()
            .map(|p| p.get(name).is_some_and(|q| q.kind != kind))
            .unwrap_or(false);
        if other {
            self.wait_visible(name)
        } else {
            Ok(())
        }
    }

    fn note(&self, name: &str, kind: WriteKind, probe: Probe) {
        if let Ok(mut p) = self.pending.lock() {
            let entry = p.entry(name.to_string()).or_insert(Pending {
                kind,
                probes: Vec::new(),
            });
            if entry.kind != kind {
                *entry = Pending {
                    kind,
                    probes: Vec::new(),
                };
            }
            // Successive upserts may rewrite the same row; only the last one is checkable.
            if kind == WriteKind::Upsert {
                entry.probes.clear();
            }
            entry.probes.push(probe);
        }
    }

    /// Records row `row` of `columns` (scalar columns only) as the probe for `name`.
    fn note_row(&self, name: &str, kind: WriteKind, columns: &Columns, row: usize) {
        let mut probe = Columns::new();
        for (n, c) in &columns.cols {
            let one = match c {
                Column::Int64(v) => Column::Int64(vec![v[row]]),
                Column::Int32(v) => Column::Int32(vec![v[row]]),
                Column::Double(v) => Column::Double(vec![v[row]]),
                Column::Bool(v) => Column::Bool(vec![v[row]]),
                Column::VarChar(v) => Column::VarChar(vec![v[row].clone()]),
                Column::BinaryVector { .. } | Column::FloatVector { .. } => continue,
            };
            probe.push(n.as_str(), one);
        }
        self.note(name, kind, Probe::Row(probe));
    }

    /// The fields of collection `name`, described once (see [`Self::describe`]).
    fn fields(&self, name: &str) -> Result<Vec<Field>, MilvusError> {
        if let Some(fields) = self.schemas.lock().ok().and_then(|s| s.get(name).cloned()) {
            return Ok(fields);
        }
        let fields = self.describe(name)?;
        if let Ok(mut s) = self.schemas.lock() {
            s.insert(name.to_owned(), fields.clone());
        }
        Ok(fields)
    }

    fn primary_key(&self, name: &str) -> Result<String, MilvusError> {
        Ok(self
            .fields(name)?
            .into_iter()
            .find(|f| f.kind == FieldKind::Int64 { primary: true })
            .ok_or_else(|| MilvusError::Schema {
                collection: name.into(),
                detail: "no Int64 primary key".into(),
            })?
            .name)
    }

    /// One query RPC with `limit`.
    fn query_page(
        &self,
        name: &str,
        filter: &str,
        output_fields: &[&str],
        limit: usize,
        what: &str,
    ) -> Result<Columns, MilvusError> {
        let req = QueryRequest::builder()
            .collection_name(name)
            .filter(filter)
            .output_fields(output_fields.iter().copied())
            .limit(limit as i64)
            .consistency_level(QUERY_CONSISTENCY)
            .build()
            .map_err(server_err(what))?;
        let r = self
            .rt
            .block_on(self.client.query(req))
            .map_err(server_err(what))?;
        Columns::from_sdk(r.results().get_output_fields(), what)
    }

    /// Number of rows matching `filter` (`""` = all), with the query consistency.
    pub fn count(&self, name: &str, filter: &str) -> Result<u64, MilvusError> {
        let what = format!("count {name} where {filter}");
        let req = QueryRequest::builder()
            .collection_name(name)
            .filter(filter)
            .output_fields(["count(*)"])
            .consistency_level(QUERY_CONSISTENCY)
            .build()
            .map_err(server_err(&what))?;
        let r = self
            .rt
            .block_on(self.client.query(req))
            .map_err(server_err(&what))?;
        let cols = Columns::from_sdk(r.results().get_output_fields(), &what)?;
        let n = cols
            .i64("count(*)")?
            .first()
            .copied()
            .ok_or_else(|| reply_err(&what, "empty count"))?;
        u64::try_from(n).map_err(|_| reply_err(what, format!("negative count {n}")))
    }

    /// All rows matching `filter` (`""` = all rows), with `output_fields` (the primary key is
    /// always included), ordered by primary key.
    ///
    /// Milvus caps one query at `offset + limit <= 16384` rows (and milvus-lite silently
    /// truncates a query without limit to 16383 rows), so this pages with a primary-key cursor:
    /// `(<filter>) and <pk> > <last pk>` with `limit` = [`QUERY_PAGE`] rows, or fewer so that a
    /// page stays under the SDK's 4 MiB reply limit with every VarChar output at its
    /// `max_len` (so ask for long VarChar fields only when needed). Milvus returns a limited
    /// query's rows in ascending primary-key order (checked on every page; a page out of order
    /// is reported as [`MilvusError::Reply`] rather than silently losing rows). Pages are
    /// separate reads, so rows written concurrently by others may or may not be included.
    /// (The SDK's own `query_iterator` does not work on milvus-lite: it needs a collection id,
    /// which lite reports as 0.)
    pub fn query(
        &self,
        name: &str,
        filter: &str,
        output_fields: &[&str],
    ) -> Result<Columns, MilvusError> {
        let what = format!("query {name} where {filter}");
        let fields = self.fields(name)?;
        let pk = fields
            .iter()
            .find(|f| f.kind == FieldKind::Int64 { primary: true })
            .ok_or_else(|| MilvusError::Schema {
                collection: name.into(),
                detail: "no Int64 primary key".into(),
            })?
            .name
            .clone();
        // Rows per page: Milvus window, and the reply must fit the SDK's 4 MiB limit assuming
        // every VarChar is at its max length (e.g. ~45 rows for a 64 KiB + 4 KiB VarChar pair).
        let page_rows =
            (MAX_REPLY_BYTES / reply_row_bytes(&fields, output_fields)).clamp(1, QUERY_PAGE);
        let filter = filter.trim();
        let mut out = Columns::new();
        let mut last: Option<i64> = None;
        loop {
            let expr = match (filter.is_empty(), last) {
                (true, None) => String::new(),
                (true, Some(l)) => format!("{pk} > {l}"),
                (false, None) => filter.to_string(),
                (false, Some(l)) => format!("({filter}) and {pk} > {l}"),
            };
            let page = self.query_page(name, &expr, output_fields, page_rows, &what)?;
            let n = page.len();
            if n == 0 {
                break;
            }
            let ids = page.i64(&pk)?;
            let ascending = ids.windows(2).all(|w| w[0] < w[1]) && last.is_none_or(|l| ids[0] > l);
            if !ascending {
                return Err(reply_err(
                    &what,
                    format!(
                        "page of {n} rows is not in ascending {pk} order; cannot page reliably"
                    ),
                ));
            }
            last = ids.last().copied();
            out.append(page, &what)?;
            if n < page_rows {
                break;
            }
        }
        if out.is_empty() {
            // No row matched, and the server sent no columns: the ones asked for, empty, so
            // that no rows read as no rows.
            for f in fields
                .iter()
                .filter(|f| output_fields.contains(&f.name.as_str()))
            {
                if let Some(empty) = Column::empty(&f.kind) {
                    out.push(f.name.clone(), empty);
                }
            }
        }
        Ok(out)
    }

    /// Nearest neighbours of each packed binary query vector in binary field `field`.
    /// `k` ≤ [`MAX_SEARCH_K`]; `filter` restricts candidates (e.g. `"file != 3"`). Returns one
    /// [`Hits`] per query, in query order, best (smallest Hamming distance) first. Many query
    /// vectors are sent in as few calls as the 4 MiB reply limit allows (batching is ~3x
    /// cheaper per query than one call per vector).
    ///
    /// Pitfall: asking for the binary vector field itself as an output field fails on
    /// milvus-lite 2.5 (the SDK rejects the reply); query it by id instead.
    pub fn search_binary(
        &self,
        name: &str,
        field: &str,
        queries: &[Vec<u8>],
        k: usize,
        filter: Option<&str>,
        output_fields: &[&str],
    ) -> Result<Vec<Hits>, MilvusError> {
        let what = format!("search {name}.{field}");
        let per_call = self.queries_per_call(name, k, output_fields, &what)?;
        let mut out = Vec::with_capacity(queries.len());
        for chunk in queries.chunks(per_call) {
            let v = SearchVectors::Binary(chunk.to_vec());
            out.extend(self.search_once(
                name,
                field,
                v,
                chunk.len(),
                k,
                filter,
                output_fields,
                &what,
            )?);
        }
        Ok(out)
    }

    /// Nearest neighbours of each float query vector (`queries` = concatenated vectors of
    /// dimension `dim`) in float field `field`. Like [`Self::search_binary`]; with COSINE the
    /// score is a similarity (best = largest, ~1.0 for an identical vector).
    #[allow(clippy::too_many_arguments)]
    pub fn search_float(
        &self,
        name: &str,
        field: &str,
        queries: &[f32],
        dim: usize,
        k: usize,
        filter: Option<&str>,
        output_fields: &[&str],
    ) -> Result<Vec<Hits>, MilvusError> {
        let what = format!("search {name}.{field}");
        if dim == 0 || !queries.len().is_multiple_of(dim) {
            return Err(reply_err(
                what,
                format!(
                    "{} query values are not a multiple of dim {dim}",
                    queries.len()
                ),
            ));
        }
        let per_call = self.queries_per_call(name, k, output_fields, &what)?;
        let mut out = Vec::with_capacity(queries.len() / dim);
        for chunk in queries.chunks(per_call * dim) {
            let v: Vec<Vec<f32>> = chunk.chunks(dim).map(<[f32]>::to_vec).collect();
            let n = v.len();
            out.extend(self.search_once(
                name,
                field,
                SearchVectors::Float(v),
                n,
                k,
                filter,
                output_fields,
                &what,
            )?);
        }
        Ok(out)
    }

    /// How many query vectors one search call may carry so the reply stays under 4 MiB.
    fn queries_per_call(
        &self,
        name: &str,
        k: usize,
        output_fields: &[&str],
        what: &str,
    ) -> Result<usize, MilvusError> {
        if k == 0 || k > MAX_SEARCH_K {
            return Err(reply_err(
                what,
                format!("k = {k} is outside 1..={MAX_SEARCH_K} (Milvus topk limit)"),
            ));
        }
        let per_hit = if output_fields.is_empty() {
            16 // id (varint) + score (f32) + slack
        } else {
            4 + reply_row_bytes(&self.fields(name)?, output_fields)
        };
        let per_query = per_hit * k;
        if per_query > MAX_REPLY_BYTES {
            return Err(reply_err(
                what,
                format!(
                    "k = {k} hits of ~{per_hit} bytes exceed the 4 MiB reply limit; lower k or drop output fields"
                ),
            ));
        }
        Ok((MAX_REPLY_BYTES / per_query).max(1))
    }

    #[allow(clippy::too_many_arguments)]
    fn search_once(
        &self,
        name: &str,
        field: &str,
        vectors: SearchVectors,
        n_queries: usize,
        k: usize,
        filter: Option<&str>,
        output_fields: &[&str],
        what: &str,
    ) -> Result<Vec<Hits>, MilvusError> {
        let mut b = SearchRequest::builder()
            .collection_name(name)
            .vector_field(field)
            .vectors(vectors)
            .limit(k as i64)
            .output_fields(output_fields.iter().copied())
            .consistency_level(SEARCH_CONSISTENCY);
        if let Some(f) = filter.filter(|f| !f.trim().is_empty()) {
            b = b.filter(f);
        }
        if !self.search_params.is_empty() {
            b = b.extra_params(self.search_params.clone());
        }
        let req = b.build().map_err(server_err(what))?;
        let r = self
            .rt
            .block_on(self.client.search(req))
            .map_err(server_err(what))?;
        let results = r.results();
        if results.len() != n_queries {
            return Err(reply_err(
                what,
                format!(
                    "{} result sets for {n_queries} query vectors",
                    results.len()
                ),
            ));
        }
        let mut out = Vec::with_capacity(n_queries);
        for one in results.iter() {
            let ids = match one.get_ids() {
                Ids::Int64(v) => v,
                _ => return Err(reply_err(what, "primary keys are not Int64")),
            };
            let scores = one.get_scores();
            if ids.len() != scores.len() {
                return Err(reply_err(
                    what,
                    format!("{} ids but {} scores", ids.len(), scores.len()),
                ));
            }
            let columns = Columns::from_sdk(one.get_output_fields(), what)?;
            if !columns.cols.is_empty() && columns.len() != ids.len() {
                return Err(reply_err(
                    what,
                    format!("{} ids but {} output rows", ids.len(), columns.len()),
                ));
            }
            out.push(Hits {
                hits: ids.iter().copied().zip(scores.iter().copied()).collect(),
                columns,
            });
        }
        Ok(out)
    }
}
