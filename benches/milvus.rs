//! The local index against the same segments on a Milvus server, side by side in one run.
//!
//!     cargo bench --bench milvus -- [SEGMENTS...]          (default: 1000000 10000000)
//!
//! The server: `EARSHOT_MILVUS_DB=milvus://HOST:PORT` for one that runs, with
//! `?nlist=N&nprobe=P` for `BIN_IVF_FLAT` on a standalone Milvus (the run waits until the
//! server has indexed every segment before it queries), else a milvus-lite server
//! (`EARSHOT_MILVUS_LITE`, its `milvus` program, as `.ci/setup` installs it, `BIN_FLAT`)
//! started here on a free loopback port.
//!
//! For each size: that many segments of random 128-bit codes (the shipped exact-match encoder's
//! size) in files of 1,000 segments, added through each store's [`Store`] (the same calls
//! `earshot index` makes) and checkpointed: the insert rate. Then 200 queries, each a stored
//! code with 8 of its 128 bits flipped (a fingerprint under noise), one at a time: the nearest
//! 10 codes by the local scan (exact, all cores), by the local buckets (multi-index hashing,
//! what exact match uses) and by the server; p50 and p95 latency of each, and how often the
//! server's first code is the local scan's (and the one the query was made from).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use earshot::index::buckets::BucketIndex;
use earshot::index::hamming::top_k;
use earshot::index::milvus::{Address, Milvus};
use earshot::index::store::Store;
use earshot::index::{EncodedFile, Index, ModeIndex, SegmentEncodings};
use earshot::library::FileRecord;
use earshot::model::{Encoded, Mode, SeededRng, encoder_for};

const SEGMENTS_PER_FILE: usize = 1_000;
const QUERIES: usize = 200;
const FLIPPED_BITS: usize = 8;
const BITS: usize = 128;
const WORDS: usize = BITS / 64;

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000_000, 10_000_000]
    } else {
        sizes
    };
    let (db, _server) = match std::env::var_os("EARSHOT_MILVUS_DB") {
        Some(db) => (PathBuf::from(db), None),
        None => {
            let server = LiteServer::start();
            (server.db(), Some(server))
        }
    };
    println!("server: {}", db.display());
    for n in sizes {
        run(n, &db);
    }
}

fn run(n: usize, db: &Path) {
    let mut rng = SeededRng::new(n as u64);
    let codes: Vec<u64> = (0..n * WORDS).map(|_| rng.next_u64()).collect();
    let section = fingerprint_section();

    let folder = tempfile::TempDir::new().expect("temporary folder");
    let local_rate = insert(
        &mut *earshot::index::open_store(folder.path()).expect("folder"),
        &codes,
        &section,
    );
    let local = earshot::index::open_store(folder.path())
        .expect("folder")
        .load()
        .expect("local index");
    let server = Address {
        prefix: format!("earshot_bench_{n}"),
        ..Address::parse(db)
            .expect("address")
            .expect("a milvus address")
    };
    let remote_db = PathBuf::from(server.to_string());
    let mut remote = earshot::index::open_store(&remote_db).expect("server");
    remote.clear(&mut Index::new()).expect("clear");
    let remote_rate = insert(&mut *remote, &codes, &section);
    println!(
        "{n} segments: insert {local_rate:.0} segments/s local, {remote_rate:.0} on the server ({:.2}x)",
        remote_rate / local_rate
    );
    let milvus = server.connect().expect("connect");
    let collection = format!("{}_fingerprint", server.prefix);
    if server.clusters.is_some() {
        wait_until_indexed(&milvus, &collection, n);
    }

    let data = &local.modes[&Mode::Fingerprint];
    let buckets = BucketIndex::build(&data.codes, WORDS);
    let (mut scan_ms, mut bucket_ms, mut server_ms) = (Vec::new(), Vec::new(), Vec::new());
    let (mut agree, mut right) = (0, 0);
    let mut batch = Vec::new();
    for _ in 0..QUERIES {
        let source = (rng.uniform() * n as f64) as usize % n;
        let query = noisy(data.code(source), &mut rng);
        let t = Instant::now();
        let scanned = top_k(&data.codes, WORDS, &query, 10);
        scan_ms.push(ms(t));
        let t = Instant::now();
        let _ = buckets.probe(&data.codes, &query, 1);
        bucket_ms.push(ms(t));
        let bytes: Vec<u8> = query.iter().flat_map(|w| w.to_le_bytes()).collect();
        let t = Instant::now();
        let found = milvus
            .search_binary(
                &collection,
                "code",
                std::slice::from_ref(&bytes),
                10,
                None,
                &[],
            )
            .expect("search");
        server_ms.push(ms(t));
        batch.push(bytes);
        let server_first = found[0].hits.first().map(|&(id, _)| id);
        let local_first = scanned.first().map(|&(_, i)| segment_id(data, i));
        agree += usize::from(server_first.is_some() && server_first == local_first);
        right += usize::from(server_first == Some(segment_id(data, source)));
    }
    // The server answers a batch faster than its queries one by one (similar-sounds queries
    // send every segment of a clip in one call).
    let t = Instant::now();
    milvus
        .search_binary(&collection, "code", &batch, 10, None, &[])
        .expect("search");
    let batched_ms = ms(t) / QUERIES as f64;
    println!(
        "{n} segments, {QUERIES} queries of 1 code: local scan {}, local buckets {}, server {} ({batched_ms:.2} ms a query in one call of {QUERIES}); server's first = local scan's {agree}/{QUERIES}, = the source {right}/{QUERIES}",
        percentiles(scan_ms),
        percentiles(bucket_ms),
        percentiles(server_ms)
    );
    remote.clear(&mut Index::new()).expect("clear");
}

/// Waits until the server has built its index on every segment, and says how long it took.
fn wait_until_indexed(milvus: &Milvus, collection: &str, segments: usize) {
    let started = Instant::now();
    loop {
        let indexed = milvus.indexed_rows(collection).expect("describe index");
        if indexed >= segments as i64 {
            println!(
                "  the server indexed {segments} segments {:.1} s after the checkpoint",
                started.elapsed().as_secs_f64()
            );
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3600),
            "{indexed} of {segments} indexed after an hour"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Adds `codes` as files of [`SEGMENTS_PER_FILE`] segments, checkpoints, and returns the
/// segments added per second.
fn insert(store: &mut dyn Store, codes: &[u64], section: &ModeIndex) -> f64 {
    let mut index = Index::new();
    index.modes.insert(Mode::Fingerprint, section.clone());
    let started = Instant::now();
    let per_file = SEGMENTS_PER_FILE * WORDS;
    for (f, chunk) in codes.chunks(per_file).enumerate() {
        let segments: Vec<(u32, u32)> = (0..chunk.len() / WORDS)
            .map(|k| (k as u32 * 7, 96))
            .collect();
        let file = EncodedFile {
            record: FileRecord {
                path: PathBuf::from(format!("/bench/{f:06}.wav")),
                size: 0,
                modified: None,
                duration_s: segments.len() as f64 * 0.07,
                label: "bench".into(),
                damage: None,
            },
            modes: vec![SegmentEncodings {
                mode: Mode::Fingerprint,
                segments,
                encoded: Encoded {
                    codes: chunk.to_vec(),
                    ..Encoded::default()
                },
            }],
        };
        store.add(&mut index, file).expect("add");
    }
    store.checkpoint(&index).expect("checkpoint");
    (codes.len() / WORDS) as f64 / started.elapsed().as_secs_f64()
}

/// The shipped exact-match encoder's section, with codes of [`BITS`].
fn fingerprint_section() -> ModeIndex {
    let encoder = encoder_for(Mode::Fingerprint, None).expect("the fingerprint encoder");
    let mut info = encoder.info().clone();
    info.bits = BITS;
    ModeIndex::new(Mode::Fingerprint, info, encoder.input())
}

/// The server's id of local segment `i` (file id << 32 | its number in the file: files enter
/// in order, numbered from 0, in both stores).
fn segment_id(data: &ModeIndex, i: usize) -> i64 {
    let s = data.segments[i];
    i64::from(s.file) << 32 | (i % SEGMENTS_PER_FILE) as i64
}

fn noisy(code: &[u64], rng: &mut SeededRng) -> Vec<u64> {
    let mut out = code.to_vec();
    let mut flipped = BTreeMap::new();
    while flipped.len() < FLIPPED_BITS {
        flipped.insert((rng.uniform() * BITS as f64) as usize % BITS, ());
    }
    for bit in flipped.keys() {
        out[bit / 64] ^= 1 << (bit % 64);
    }
    out
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn percentiles(mut ms: Vec<f64>) -> String {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    format!("p50 {:.2} ms / p95 {:.2} ms", at(0.5), at(0.95))
}

/// A milvus-lite server on a free loopback port, for this run.
struct LiteServer {
    child: Child,
    port: u16,
    _data: tempfile::TempDir,
}

impl LiteServer {
    fn start() -> Self {
        let program = PathBuf::from(
            std::env::var_os("EARSHOT_MILVUS_LITE")
                .expect("set EARSHOT_MILVUS_DB or EARSHOT_MILVUS_LITE (see .ci/setup)"),
        );
        let data = tempfile::TempDir::new().expect("temporary folder");
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(&program)
            .arg(data.path().join("milvus.db"))
            .arg(format!("127.0.0.1:{port}"))
            .arg("ERROR")
            .env("LD_LIBRARY_PATH", program.parent().expect("its folder"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start milvus-lite");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "milvus-lite did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self {
            child,
            port,
            _data: data,
        }
    }

    fn db(&self) -> PathBuf {
        PathBuf::from(format!("milvus://127.0.0.1:{}/bench", self.port))
    }
}

impl Drop for LiteServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
