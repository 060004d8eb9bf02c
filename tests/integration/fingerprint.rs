//! The fingerprint encoder: its shapes, a tiny training run, and `earshot eval fingerprint` on a
//! small generated data folder.

use std::ops::ControlFlow;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use earshot::model::fingerprint::{
    FingerprintConfig, FingerprintEncoder, FingerprintNet, SEGMENT_FRAMES,
};
use earshot::model::{Encoded, Encoder};
use earshot::train;
use earshot::train::augment::NoiseBank;
use earshot::train::fingerprint::{FingerprintData, FingerprintTrainOptions, train_fingerprint};

use crate::support::{Sample, earshot, write_wav};

const RATE: u32 = 16_000;

/// Seeded noise shaped by a moving pitch, distinct for every seed.
fn track(seconds: f64, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let n = (seconds * f64::from(RATE)) as usize;
    let mut smooth = 0.0f32;
    (0..n)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let white = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            smooth = 0.9 * smooth + 0.1 * white;
            let t = i as f32 / RATE as f32;
            let pitch = 300.0 + 200.0 * (t * (0.5 + seed as f32 * 0.1)).sin();
            0.3 * (std::f32::consts::TAU * pitch * t).sin() * (1.0 + smooth) + smooth
        })
        .collect()
}

fn write_data(root: &Path) {
    let music = root.join("music");
    for dir in ["music", "noise", "rir"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    let mut manifest =
        String::from("file,collection,license,related_group,duration_s,source_repo\n");
    for i in 0..4 {
        let name = format!("track{i}.wav");
        write_wav(
            &music.join(&name),
            RATE,
            1,
            Sample::Int(16),
            &track(8.0, i + 1),
        );
        manifest.push_str(&format!("{name},test,CC0,,8.0,none\n"));
    }
    std::fs::write(music.join("manifest.csv"), manifest).unwrap();
    for i in 0..3 {
        let noise: Vec<f32> = track(3.0, 100 + i).iter().map(|x| x * 0.5).collect();
        write_wav(
            &root.join(format!("noise/n{i}.wav")),
            RATE,
            1,
            Sample::Float,
            &noise,
        );
        let rir: Vec<f32> = (0..800)
            .map(|k| (-(k as f32) / 150.0).exp() * if k % 7 == 0 { 1.0 } else { 0.2 })
            .collect();
        write_wav(
            &root.join(format!("rir/r{i}.wav")),
            RATE,
            1,
            Sample::Float,
            &rir,
        );
    }
}

#[test]
fn eval_fingerprint_scores_every_condition_and_length_and_finds_clean_queries() {
    let dir = tempfile::tempdir().unwrap();
    write_data(dir.path());
    let dump = dir.path().join("dump.jsonl");
    let out = earshot(&[
        "eval".as_ref(),
        "fingerprint".as_ref(),
        "--data".as_ref(),
        dir.path().as_os_str(),
        "--queries-per-length".as_ref(),
        "4".as_ref(),
        "--negatives-per-length".as_ref(),
        "2".as_ref(),
        "--json".as_ref(),
        "--dump".as_ref(),
        dump.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let report = &reports[0];
    assert_eq!(report["tracks"], 4);
    let cells = report["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 9 * 4, "9 conditions x 4 lengths");
    assert!(cells.iter().all(|c| c["queries"] == 4));
    // Clean 3 s and 5 s excerpts of a track in the index are found at the right time.
    for cell in cells
        .iter()
        .filter(|c| c["condition"] == "clean" && c["seconds"].as_f64() >= Some(3.0))
    {
        assert_eq!(cell["segment_hits"], 4, "{cell}");
    }
    assert!(report["index_mb_per_hour"].as_f64().unwrap() > 0.0);
    // Excerpts of a track left out of a second index are negatives: searched, and counted.
    let negatives = report["negatives"].as_array().unwrap();
    assert_eq!(negatives[0]["kind"], "negative track");
    assert_eq!(negatives[0]["queries"], 9 * 4 * 2);
    assert!(
        report["latency_ms_p95"].as_f64().unwrap() >= report["latency_ms_p50"].as_f64().unwrap()
    );
    // The dump tells where each query was cut from and where its first hit places it.
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&dump)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (positives, negatives): (Vec<_>, Vec<_>) =
        records.iter().partition(|r| r["kind"] == "positive");
    assert!(!positives.is_empty() && !negatives.is_empty());
    assert!(
        positives
            .iter()
            .all(|r| r["track"].is_string() && r["start_s"].is_f64())
    );
    // A negative says where it was cut from too: a track that is not in the index.
    assert!(
        negatives
            .iter()
            .all(|r| r["track"].is_string() && r["track"] != r["hit_track"])
    );
    for r in positives.iter().filter(|r| r["right_place"] == true) {
        assert_eq!(r["hit_track"], r["track"], "{r}");
        let error = r["hit_start_s"].as_f64().unwrap() - r["start_s"].as_f64().unwrap();
        assert!((error - r["error_s"].as_f64().unwrap()).abs() < 1e-9, "{r}");
    }
}

/// A two-clip ESC-50 folder beside the generated music (the training command reads both).
fn write_esc50(root: &Path) {
    let esc50 = root.join("esc50");
    std::fs::create_dir_all(esc50.join("audio")).unwrap();
    std::fs::create_dir_all(esc50.join("meta")).unwrap();
    let mut meta = String::from("filename,fold,target,category,esc10,src_file,take\n");
    for i in 0..2 {
        let name = format!("1-{i}-A-{i}.wav");
        let audio = track(5.0, 50 + i);
        write_wav(
            &esc50.join("audio").join(&name),
            RATE,
            1,
            Sample::Float,
            &audio,
        );
        meta.push_str(&format!("{name},1,{i},class{i},False,{i},A\n"));
    }
    std::fs::write(esc50.join("meta/esc50.csv"), meta).unwrap();
}

#[test]
fn train_fingerprint_refuses_a_summary_grid_that_does_not_fit_before_reading_data() {
    let dir = tempfile::tempdir().unwrap();
    let out = earshot(&[
        "train".as_ref(),
        "fingerprint".as_ref(),
        "--data".as_ref(),
        dir.path().join("missing").as_os_str(),
        // 64 mel bands do not split into cells of 3.
        "--bands-per-cell".as_ref(),
        "3".as_ref(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bits or grid out of range"), "{stderr}");
    assert!(!dir.path().join("models").exists());
}

#[test]
fn train_fingerprint_learns_a_projection_that_loads_as_the_fingerprint_encoder() {
    let dir = tempfile::tempdir().unwrap();
    write_data(dir.path());
    write_esc50(dir.path());
    let models = dir.path().join("models");
    let out = earshot(&[
        "train".as_ref(),
        "fingerprint".as_ref(),
        "--data".as_ref(),
        dir.path().as_os_str(),
        "--pairs".as_ref(),
        "2000".as_ref(),
        "--eval-queries-per-length".as_ref(),
        "3".as_ref(),
        "--calibration-queries-per-length".as_ref(),
        "2".as_ref(),
        "--calibration-negatives-per-length".as_ref(),
        "2".as_ref(),
        "--models-dir".as_ref(),
        models.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let model = models.join("fingerprint");
    let encoder =
        earshot::model::encoder_for(earshot::model::Mode::Fingerprint, Some(&model)).unwrap();
    assert_eq!(encoder.info().name, "learned-lsh-128");
    assert_eq!(encoder.input().segmentation.hop, 7);
    // The card holds the baseline's table and the model's, and the model's is the one
    // `the_shipped_fingerprint_model_reproduces_its_card` compares.
    let card = std::fs::read_to_string(model.join("MODEL_CARD.md")).unwrap();
    assert!(card.contains("### lsh-fingerprint") && card.contains("### learned-lsh-128"));
    let cells = card_cells(&card, "learned-lsh-128");
    assert_eq!(cells.len(), 9);
    // Clean 5 s excerpts of an indexed track are found at their place.
    assert_eq!(cells[0].0, "clean");
    assert_eq!(cells[0].1[3], "100.0% (100.0%)", "{card}");
    // The model was calibrated after training: its found thresholds are in its config, and
    // the card says what set them.
    let found = encoder.found_thresholds().expect("calibrated thresholds");
    let tables = [found.codes, found.confirmed, found.room, found.agreed];
    assert!(tables.iter().flatten().all(|t| (0.0..=1.0).contains(t)));
    assert!(card.contains("## Found thresholds") && card.contains("--write-thresholds"));
    // A query says when the model has no thresholds of its own, and only then.
    let db = dir.path().join("db");
    let track = dir.path().join("music/track0.wav");
    let run = |command: &str| {
        let out = earshot(&[
            command.as_ref(),
            "--db".as_ref(),
            db.as_os_str(),
            "--mode".as_ref(),
            "fingerprint".as_ref(),
            "--model".as_ref(),
            model.as_os_str(),
            track.as_os_str(),
        ]);
        assert!(out.status.success(), "{command}: {out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    run("index");
    let note = "has no found thresholds of its own";
    assert!(!run("query").contains(note));
    let config = model.join("config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    json.as_object_mut().unwrap().remove("found");
    std::fs::write(&config, json.to_string()).unwrap();
    assert!(run("query").contains(note));
}

#[test]
fn eval_fingerprint_writes_thresholds_only_from_a_calibration_run_into_a_model_folder() {
    for (args, refused) in [
        (&["--write-thresholds", "--model", "m"][..], "--calibrate"),
        (&["--write-thresholds", "--calibrate"][..], "--model"),
        (
            &[
                "--write-thresholds",
                "--calibrate",
                "--model",
                "m",
                "--codes-only",
            ][..],
            "--codes-only",
        ),
    ] {
        let all = [&["eval", "fingerprint", "--data", "missing"][..], args].concat();
        let out = earshot(&all.iter().map(std::ffi::OsStr::new).collect::<Vec<_>>());
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(refused), "{args:?}: {stderr}");
    }
}

fn bank() -> NoiseBank {
    let rir: Vec<f32> = (0..800)
        .map(|k| (-(k as f32) / 150.0).exp() * if k % 7 == 0 { 1.0 } else { 0.2 })
        .collect();
    NoiseBank {
        noises: vec![track(3.0, 100), track(3.0, 101)],
        rirs: vec![rir],
    }
}

#[test]
fn a_fingerprint_is_a_unit_embedding_a_balanced_code_and_a_mask() {
    let config = FingerprintConfig::default();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let net = FingerprintNet::load(&config, vb).unwrap();
    train::seeded_init(&varmap, 3).unwrap();
    let x = Tensor::randn(-40f32, 10.0, (3, SEGMENT_FRAMES, 64), &Device::Cpu).unwrap();
    let out = net.forward_t(&x, false).unwrap();
    assert_eq!(out.embedding.dims(), &[3, 128]);
    let norms: Vec<f32> = out
        .embedding
        .sqr()
        .unwrap()
        .sum(1)
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-4), "{norms:?}");
    let codes: Vec<Vec<f32>> = out.code.to_vec2().unwrap();
    for code in &codes {
        assert_eq!(code.len(), 64);
        assert!(code.iter().all(|&b| b == 1.0 || b == -1.0));
        let ones = code.iter().filter(|&&b| b > 0.0).count();
        // Each bit is set against the mean of its own vector, so about half are.
        assert!((16..=48).contains(&ones), "{ones} of 64 bits set");
    }
    assert_eq!(out.mask.dims(), &[3, 16, SEGMENT_FRAMES / 2]);

    // The attention of a clip of any length covers all of it, window after window.
    for frames in [40, SEGMENT_FRAMES, 250] {
        let log_mel = vec![-30.0f32; frames * 64];
        let map = earshot::model::fingerprint::attention_map(&net, &log_mel)
            .unwrap()
            .unwrap();
        assert_eq!(map.rows, 16);
        assert_eq!(map.columns, frames.div_ceil(2));
        assert_eq!(map.values.len(), map.rows * map.columns);
        assert!(
            map.frames.start == 0 && map.frames.end >= frames,
            "{:?}",
            map.frames
        );
        assert!(map.values.iter().all(|v| v.is_finite() && *v > 0.0));
    }
}

#[test]
fn a_tiny_fingerprint_training_run_lowers_its_loss_saves_and_encodes() {
    let recordings: Vec<Vec<f32>> = (0..6).map(|i| track(4.0, 10 + i)).collect();
    let data = FingerprintData::new(recordings, bank());
    let options = FingerprintTrainOptions {
        bits: 64,
        epochs: 4,
        batch_size: 8,
        steps_per_epoch: 6,
        learning_rate: 3e-3,
        weight_decay: 1e-2,
        seed: 9,
    };
    let dir = tempfile::tempdir().unwrap();
    let trained = train_fingerprint(
        &data,
        &options,
        &dir.path().join("ckpt"),
        false,
        &mut |_| ControlFlow::Continue(()),
    )
    .unwrap();
    let losses: Vec<f64> = trained.history.iter().map(|r| r.loss).collect();
    assert_eq!(losses.len(), 4);
    assert!(losses[3] < losses[0], "loss did not fall: {losses:?}");
    let model = dir.path().join("fingerprint");
    trained.save(&model).unwrap();
    let encoder = FingerprintEncoder::load(&model).unwrap();
    let segment = vec![-30f32; 96 * 64];
    let mut out = Encoded::default();
    encoder
        .encode(&[&segment, &segment[..64 * 10]], &mut out)
        .unwrap();
    assert_eq!(out.codes.len(), 2);
    assert_eq!(out.embeddings.len(), 2 * 128);
}

/// The hit-rate cells of one encoder's table in a fingerprint model card (the table after its
/// `### name` heading): `(condition, ["12.3% (45.6%)", ...])`.
fn card_cells(card: &str, encoder: &str) -> Vec<(String, Vec<String>)> {
    let heading = format!("### {encoder}");
    card.lines()
        .skip_while(|l| *l != heading)
        .skip_while(|l| !l.starts_with("| condition |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let mut cells = l.split('|').map(str::trim).filter(|c| !c.is_empty());
            let condition = cells.next().unwrap_or_default().to_owned();
            (condition, cells.map(str::to_owned).collect())
        })
        .collect()
}

/// The exact-match protocol on the shared music (5,400 queries, each checked against the
/// tracks' audio) for the shipped model alone takes about 7 minutes on 2 cores.
#[test]
fn the_shipped_fingerprint_model_reproduces_its_card() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (data, model) = (root.join("../shared/data"), root.join("models/fingerprint"));
    if !data.join("music/manifest.csv").is_file() || !model.join("config.json").is_file() {
        eprintln!(
            "skipping: no music data under {} or no model at {}",
            data.display(),
            model.display()
        );
        return;
    }
    let out = crate::support::earshot(&[
        "eval".as_ref(),
        "fingerprint".as_ref(),
        "--json".as_ref(),
        "--no-baseline".as_ref(),
        // The card's cells are the positives'; negatives are measured on their own.
        "--negatives-per-length".as_ref(),
        "0".as_ref(),
        "--data".as_ref(),
        data.as_os_str(),
        "--model".as_ref(),
        model.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let trained = reports
        .as_array()
        .and_then(|r| r.iter().find(|r| r["encoder"] != "lsh-fingerprint"))
        .expect("a report for the trained model");
    let name = trained["encoder"].as_str().unwrap();
    let card = std::fs::read_to_string(model.join("MODEL_CARD.md")).unwrap();
    let expected = card_cells(&card, name);
    assert_eq!(
        expected.len(),
        9,
        "nine conditions in the card's {name} table"
    );
    let cells = trained["cells"].as_array().unwrap();
    for (condition, want) in expected {
        let got: Vec<String> = cells
            .iter()
            .filter(|c| c["condition"] == condition.as_str())
            .map(|c| {
                let rate =
                    |key: &str| 100.0 * c[key].as_f64().unwrap() / c["queries"].as_f64().unwrap();
                format!("{:.1}% ({:.1}%)", rate("segment_hits"), rate("file_hits"))
            })
            .collect();
        assert_eq!(got, want, "{condition}");
    }
}
