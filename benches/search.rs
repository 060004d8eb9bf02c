//! Search speed.
//!
//!     cargo bench --bench search
//!
//! - `hamming_top10/N`: exact top-10 over N random 64-bit codes (all cores), beside
//!   `bandwidth_sum/N`, a plain parallel sum of the same bytes: the memory-bandwidth limit of
//!   this machine, measured in the same run. Both report bytes/s.
//! - `near_duplicates/N`: find the library code a query was made from by flipping 4 of its bits
//!   (what fingerprint lookups are), by full scan (top-1) and by buckets (all codes within 7 bits,
//!   which the pigeonhole principle guarantees to include it). The recall of both is printed
//!   (equal at 1.0), with the share of the database the buckets compare and their occupancy.
//! - `query_100h/mode`: a 3 s clip against 100 hours of audio (synthetic segments plus one real
//!   file), end to end after decoding: log-mel, segments, the mode's shipped model, search,
//!   ranking. p50 and p95
//!   over 40 queries are printed too, with the memory per indexed segment.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use earshot::index::buckets::BucketIndex;
use earshot::index::hamming::top_k;
use earshot::index::{EncodedFile, Index, ModeIndex, SegmentEncodings};
use earshot::library::FileRecord;
use earshot::model::{Encoder, Mode, SeededRng, encoder_for};
use earshot::search::{Engine, SearchTables, Searcher};
use earshot::session::ingest::encode_file;
use rayon::prelude::*;

const SIZES: [usize; 2] = [1_000_000, 10_000_000];

fn random_codes(n: usize, seed: u64) -> Vec<u64> {
    let mut rng = SeededRng::new(seed);
    (0..n).map(|_| rng.next_u64()).collect()
}

fn hamming_vs_bandwidth(c: &mut Criterion) {
    let mut group = c.benchmark_group("hamming_top10");
    group.sample_size(10);
    for n in SIZES {
        let codes = random_codes(n, 1);
        let query = [0x0123_4567_89AB_CDEFu64];
        group.throughput(Throughput::Bytes(8 * n as u64));
        group.bench_with_input(BenchmarkId::new("top10", n), &codes, |b, codes| {
            b.iter(|| top_k(black_box(codes), 1, &query, 10))
        });
        group.bench_with_input(BenchmarkId::new("bandwidth_sum", n), &codes, |b, codes| {
            b.iter(|| {
                black_box(codes)
                    .par_iter()
                    .fold(|| 0u64, |a, &x| a.wrapping_add(x))
                    .reduce(|| 0, u64::wrapping_add)
            })
        });
    }
    group.finish();
}

/// Bits flipped in a near-duplicate query, and the bucket radius that surely covers them.
const FLIPS: u64 = 4;
const RADIUS: u32 = 7;

fn buckets_vs_scan(c: &mut Criterion) {
    let mut group = c.benchmark_group("near_duplicates");
    group.sample_size(10);
    for n in SIZES {
        let codes = random_codes(n, 2);
        let buckets = BucketIndex::build(&codes, 1);
        let mut rng = SeededRng::new(3);
        let queries: Vec<(usize, u64)> = (0..100)
            .map(|_| {
                let source = (rng.next_u64() % n as u64) as usize;
                (
                    source,
                    (0..FLIPS).fold(codes[source], |q, f| {
                        q ^ (1 << ((rng.next_u64() % 16) + 16 * (f % 4)))
                    }),
                )
            })
            .collect();
        report_recall(n, &codes, &buckets, &queries);
        group.throughput(Throughput::Elements(queries.len() as u64));
        group.bench_function(BenchmarkId::new("scan_top1", n), |b| {
            b.iter(|| {
                queries
                    .iter()
                    .map(|(_, q)| top_k(&codes, 1, &[*q], 1).len())
                    .sum::<usize>()
            })
        });
        group.bench_function(BenchmarkId::new("buckets_within_7", n), |b| {
            b.iter(|| {
                queries
                    .iter()
                    .map(|(_, q)| buckets.within(&codes, &[*q], RADIUS).hits.len())
                    .sum::<usize>()
            })
        });
    }
    group.finish();
}

fn report_recall(n: usize, codes: &[u64], buckets: &BucketIndex, queries: &[(usize, u64)]) {
    let (mut scan_found, mut bucket_found, mut scanned) = (0, 0, 0);
    for &(source, q) in queries {
        scan_found += usize::from(
            top_k(codes, 1, &[q], 1)
                .first()
                .is_some_and(|h| codes[h.1] == codes[source]),
        );
        let found = buckets.within(codes, &[q], RADIUS);
        bucket_found += usize::from(
            found
                .hits
                .first()
                .is_some_and(|h| codes[h.1] == codes[source]),
        );
        scanned += found.scanned;
    }
    let stats = buckets.stats();
    eprintln!(
        "near_duplicates/{n}: recall scan {scan_found}/{q}, buckets {bucket_found}/{q}; buckets compare {:.4}% of the codes per query; occupancy max {} mean {:.1} per non-empty bucket ({} tables of {}); tables take {:.1} B per code",
        100.0 * scanned as f64 / (queries.len() * n) as f64,
        stats.max_bucket,
        stats.mean_non_empty_bucket,
        stats.tables,
        stats.buckets_per_table,
        buckets.memory_bytes() as f64 / n as f64,
        q = queries.len(),
    );
}

/// 100 hours of 5 s files in one mode: random codes (and embeddings where the mode keeps them),
/// plus one real file whose excerpts are the queries.
fn index_of_100_hours(mode: Mode, encoder: &dyn Encoder, real: &EncodedFile) -> Index {
    const FILE_S: f64 = 5.0;
    let files = (100.0 * 3600.0 / FILE_S) as usize;
    let mut data = ModeIndex::new(mode, encoder.info().clone(), encoder.input());
    let seg = encoder.input().segmentation;
    let per_file = (FILE_S * 100.0) as usize / seg.hop;
    let mut rng = SeededRng::new(5);
    let mut index = Index::new();
    for f in 0..files {
        index.files.push(FileRecord {
            path: PathBuf::from(format!("/synthetic/{f:06}.wav")),
            size: 0,
            modified: None,
            duration_s: FILE_S,
            label: "synthetic".into(),
            damage: None,
        });
        for s in 0..per_file {
            data.segments.push(earshot::index::SegmentRef {
                file: f as u32,
                start_frame: (s * seg.hop) as u32,
                n_frames: seg.window as u32,
            });
            data.codes.extend((0..data.words()).map(|_| rng.next_u64()));
        }
    }
    data.embeddings = (0..data.segments.len() * data.embedding_dim)
        .map(|_| rng.normal() as f32)
        .collect();
    index.modes.insert(mode, data);
    index.add(real.clone());
    index
}

fn melody_file() -> (tempfile::TempDir, PathBuf, Vec<f32>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("melody.wav");
    let mut rng = SeededRng::new(9);
    let mut samples = Vec::new();
    let mut phase = 0.0f64;
    while samples.len() < 60 * 16_000 {
        let freq = 200.0 * 20f64.powf(rng.uniform());
        for _ in 0..2400 {
            phase += std::f64::consts::TAU * freq / 16_000.0;
            samples.push((0.3 * phase.sin()) as f32);
        }
    }
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&path, spec).expect("wav");
    samples
        .iter()
        .for_each(|&x| w.write_sample((x * 32767.0) as i16).expect("sample"));
    w.finalize().expect("finalize");
    (dir, path, samples)
}

fn query_100_hours(c: &mut Criterion) {
    let (_dir, path, samples) = melody_file();
    let mut group = c.benchmark_group("query_100h");
    group.sample_size(20);
    for mode in Mode::ALL {
        // The encoder a user gets by default: the shipped model of the mode.
        let default_encoder = || encoder_for(mode, None).expect("the default encoder");
        let encoders = [(mode, default_encoder())].into_iter().collect();
        let record = FileRecord {
            path: path.clone(),
            size: 0,
            modified: None,
            duration_s: 60.0,
            label: "real".into(),
            damage: None,
        };
        let real = encode_file(record, &encoders).expect("encode the real file");
        let encoder = default_encoder();
        let index = index_of_100_hours(mode, encoder.as_ref(), &real);
        let data = &index.modes[&mode];
        let tables =
            SearchTables::build(&index, mode, data, Engine::default_for(mode)).expect("tables");
        let searcher = Searcher::new(&index, mode, data, encoder.as_ref(), &tables);
        let mut rng = SeededRng::new(8);
        let clips: Vec<&[f32]> = (0..40)
            .map(|_| {
                let start = (rng.uniform() * 55.0 * 16_000.0) as usize;
                &samples[start..start + 3 * 16_000]
            })
            .collect();
        report_latency(mode, &searcher, &clips, &path, data, &real);
        group.bench_function(mode.name(), |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % clips.len();
                searcher.search(clips[i], 10).map(|h| h.len()).unwrap_or(0)
            })
        });
    }
    group.finish();
}

fn report_latency(
    mode: Mode,
    searcher: &Searcher<'_>,
    clips: &[&[f32]],
    path: &PathBuf,
    data: &ModeIndex,
    real: &EncodedFile,
) {
    let mut times = Vec::new();
    let mut right = 0;
    for clip in clips {
        let started = Instant::now();
        let hits = searcher.search(clip, 10).unwrap_or_default();
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        right += usize::from(hits.first().is_some_and(|h| &h.path == path));
    }
    times.sort_by(f64::total_cmp);
    let per_segment = 12 + 8 * data.words() + 4 * data.embedding_dim;
    // Bucket tables: 4 bytes per code per 16-bit substring.
    let buckets = if mode == Mode::Fingerprint {
        4 * data.encoder.bits / 16
    } else {
        0
    };
    let real_segments: usize = real
        .modes
        .iter()
        .map(|m: &SegmentEncodings| m.segments.len())
        .sum();
    eprintln!(
        "query_100h/{}: {} segments; 3 s query p50 {:.1} ms, p95 {:.1} ms; right file first {right}/{}; memory per segment {} B (+{buckets} B bucket tables); real file {real_segments} segments",
        mode.name(),
        data.segments.len(),
        times[times.len() / 2],
        times[times.len() * 95 / 100],
        clips.len(),
        per_segment,
    );
}

criterion_group!(
    benches,
    hamming_vs_bandwidth,
    buckets_vs_scan,
    query_100_hours
);
criterion_main!(benches);
