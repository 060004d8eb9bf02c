//! The events encoder: shapes at every clip length, saved weights giving identical codes, clear
//! errors for missing or damaged model folders, a tiny training run whose loss falls, and the
//! shipped model reproducing its card on ESC-50 (when the data is present).

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use earshot::eval::esc50::{self, Clip, Esc50, Features, Split};
use earshot::features::{FrameFeature, LOG_MEL_BANDS, LogMel, LogMelConfig};
use earshot::model::config::{CONFIG_FILE, WEIGHTS_FILE};
use earshot::model::events::{EventsConfig, EventsEncoder, EventsNet, MASK_BANDS, encode_clips};
use earshot::model::{Encoded, Encoder, SeededRng};
use earshot::train::events::{Progress, Recipe, SplitName, TrainOptions, TrainingSet};
use earshot::train::{self, TrainError};

use crate::support::earshot;

/// An untrained network with seeded weights, and its variables.
fn seeded_net(bits: usize) -> (EventsConfig, VarMap, EventsNet) {
    let config = EventsConfig::new(bits, (0..4).map(|i| format!("class{i}")).collect());
    let varmap = VarMap::new();
    let net = EventsNet::load(
        &config,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
    .unwrap();
    train::seeded_init(&varmap, 7).unwrap();
    (config, varmap, net)
}

/// Log-mel of a generated sound: a tone, a chirp, noise bursts or clicks, by class.
fn sound(class: usize, seconds: f64, seed: u64) -> Vec<f32> {
    let mut rng = SeededRng::new(seed);
    let n = (seconds * 16_000.0) as usize;
    let signal: Vec<f32> = (0..n)
        .map(|i| {
            let t = i as f64 / 16_000.0;
            let x = match class % 4 {
                0 => (std::f64::consts::TAU * (300.0 + 40.0 * (seed % 5) as f64) * t).sin(),
                1 => (std::f64::consts::TAU * (500.0 + 2000.0 * t / seconds) * t).sin(),
                2 => rng.normal() * if (t * 4.0).fract() < 0.5 { 0.5 } else { 0.05 },
                _ => {
                    if i % 1600 < 20 {
                        1.0
                    } else {
                        0.01 * rng.normal()
                    }
                }
            };
            (0.3 * x) as f32
        })
        .collect();
    LogMel::new(&LogMelConfig::default()).compute(&signal).data
}

#[test]
fn every_clip_length_from_a_fifth_of_a_second_to_half_a_minute_gives_one_code() {
    let (config, _, net) = seeded_net(64);
    for seconds in [0.2, 0.5, 1.0, 5.0, 30.0] {
        let clip = sound(1, seconds, 3);
        let frames = clip.len() / LOG_MEL_BANDS;
        let x = Tensor::from_vec(clip, (1, frames, LOG_MEL_BANDS), &Device::Cpu).unwrap();
        let out = net.forward_t(&x, false).unwrap();
        assert_eq!(
            out.embedding.dims(),
            &[1, config.embedding_dim],
            "{seconds} s"
        );
        assert_eq!(out.heads[0].hash.dims(), &[1, 64]);
        assert_eq!(out.logits.dims(), &[1, 4]);
        let code: Vec<f32> = out.heads[0].code.flatten_all().unwrap().to_vec1().unwrap();
        assert!(code.iter().all(|&c| c == 1.0 || c == -1.0));
        let (_, bands, columns) = out.mask.dims3().unwrap();
        assert_eq!(bands, MASK_BANDS);
        assert_eq!(
            columns,
            (frames.max(16)) / 2,
            "{seconds} s: one mask column per two frames"
        );
    }
}

#[test]
fn the_events_attention_map_spans_the_clip_without_its_silent_ends() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/events-64");
    let encoder = EventsEncoder::load(&shipped).unwrap();
    let mut log_mel = sound(0, 3.0, 5);
    let frames = log_mel.len() / LOG_MEL_BANDS;
    // 50 frames of digital silence at each end.
    for f in (0..50).chain(frames - 50..frames) {
        log_mel[f * LOG_MEL_BANDS..(f + 1) * LOG_MEL_BANDS].fill(-100.0);
    }
    let map = encoder.attention(&log_mel).unwrap().unwrap();
    assert_eq!(map.frames, 50..frames - 50);
    assert_eq!(map.rows, MASK_BANDS);
    assert_eq!(map.values.len(), map.rows * map.columns);
    assert!(map.columns > 1);
    // Too short a clip has no map rather than an error.
    assert_eq!(
        encoder.attention(&log_mel[..4 * LOG_MEL_BANDS]).unwrap(),
        None
    );
}

/// The overlay follows the sound: a tone low in the spectrum and one high up are each strongest
/// in the rows of their own bands (the network's attention mask favours the same bands for
/// every sound; the occlusion map does not).
#[test]
fn the_events_attention_is_strongest_where_the_sound_is() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/events-64");
    let encoder = EventsEncoder::load(&shipped).unwrap();
    let strongest_row = |hz: f64| {
        let signal: Vec<f32> = (0..48_000)
            .map(|i| (0.3 * (std::f64::consts::TAU * hz * i as f64 / 16_000.0).sin()) as f32)
            .collect();
        let log_mel = LogMel::new(&LogMelConfig::default()).compute(&signal).data;
        let map = encoder.attention(&log_mel).unwrap().unwrap();
        let row_sum = |r: usize| {
            map.values[r * map.columns..(r + 1) * map.columns]
                .iter()
                .sum::<f32>()
        };
        (0..map.rows)
            .max_by(|&a, &b| row_sum(a).total_cmp(&row_sum(b)))
            .unwrap()
    };
    let (low, high) = (strongest_row(250.0), strongest_row(5_000.0));
    assert!(low <= 3, "a 250 Hz tone is strongest in row {low}");
    assert!(high >= 10, "a 5 kHz tone is strongest in row {high}");
}

#[test]
fn saved_weights_load_back_to_identical_codes_and_embeddings() {
    let (config, varmap, net) = seeded_net(32);
    let dir = tempfile::tempdir().unwrap();
    train::events::save_model(dir.path(), &config, &varmap).unwrap();
    let loaded = EventsEncoder::load(dir.path()).unwrap();
    let clips: Vec<Vec<f32>> = (0..6)
        .map(|i| sound(i, 0.5 + 0.4 * i as f64, i as u64))
        .collect();
    let refs: Vec<&[f32]> = clips.iter().map(Vec::as_slice).collect();
    let (mut direct, mut through_files) = (Encoded::default(), Encoded::default());
    encode_clips(&net, &refs, &mut direct).unwrap();
    loaded.encode(&refs, &mut through_files).unwrap();
    assert_eq!(direct.codes, through_files.codes);
    assert_eq!(direct.embeddings, through_files.embeddings);
    assert_eq!(loaded.info().bits, 32);
    assert_eq!(direct.codes.len(), 6, "one 64-bit word per 32-bit code");
}

fn load_error(dir: &Path) -> String {
    match EventsEncoder::load(dir) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_or_damaged_model_folders_give_errors_naming_the_file_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("events-64");
    let e = load_error(&missing);
    assert!(
        e.contains("events-64") && e.contains("no model folder"),
        "{e}"
    );

    let (config, varmap, _) = seeded_net(64);
    train::events::save_model(dir.path(), &config, &varmap).unwrap();
    let weights = std::fs::read(dir.path().join(WEIGHTS_FILE)).unwrap();
    std::fs::write(dir.path().join(WEIGHTS_FILE), &weights[..weights.len() / 2]).unwrap();
    let e = load_error(dir.path());
    assert!(e.contains(WEIGHTS_FILE) && e.contains("do not fit"), "{e}");

    std::fs::write(dir.path().join(CONFIG_FILE), "{ not json").unwrap();
    let e = load_error(dir.path());
    assert!(
        e.contains(CONFIG_FILE) && e.contains("not a valid model config"),
        "{e}"
    );

    let mut old = serde_json::to_value(&config).unwrap();
    old["format_version"] = 0.into();
    std::fs::write(dir.path().join(CONFIG_FILE), old.to_string()).unwrap();
    let e = load_error(dir.path());
    assert!(e.contains("model format 0"), "{e}");

    std::fs::remove_file(dir.path().join(WEIGHTS_FILE)).unwrap();
    let mut ok = serde_json::to_value(&config).unwrap();
    ok["bits"] = 48.into();
    std::fs::write(dir.path().join(CONFIG_FILE), ok.to_string()).unwrap();
    let e = load_error(dir.path());
    assert!(
        e.contains(WEIGHTS_FILE),
        "the missing weights are named: {e}"
    );

    let out = earshot(&[
        "index".as_ref(),
        "--db".as_ref(),
        dir.path().join("db").as_os_str(),
        "--mode".as_ref(),
        "events".as_ref(),
        "--model".as_ref(),
        missing.as_os_str(),
        dir.path().as_os_str(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("events-64") && stderr.contains("no model folder"),
        "{stderr}"
    );
}

#[test]
fn a_tiny_training_run_on_generated_sounds_lowers_its_loss_and_resumes_exactly() {
    let classes = 4;
    let clips: Vec<Clip> = (0..40)
        .map(|i| Clip {
            path: PathBuf::from(format!("generated-{i}.wav")),
            fold: (i / classes % 5 + 1) as u8,
            target: i % classes,
        })
        .collect();
    let features = Features {
        clips: (0..40)
            .map(|i| Some(sound(i % classes, 1.0 + (i % 3) as f64, i as u64)))
            .collect(),
        failed: Vec::new(),
    };
    let data = Esc50 {
        clips,
        labels: (0..classes).map(|c| format!("class{c}")).collect(),
    };
    let options = TrainOptions {
        bits: vec![16, 32],
        epochs: 8,
        batch_size: 8,
        learning_rate: 3e-3,
        weight_decay: 1e-2,
        seed: 5,
        split: SplitName::Standard,
        recipe: Recipe::FULL,
        eval_every: 4,
        width: EventsConfig::DEFAULT_FRONT_CHANNELS,
    };
    let all_clips = features.trimmed();
    let training: Vec<usize> = (0..40)
        .filter(|&i| Split::Standard.is_training(&data.clips[i]))
        .collect();
    let set = TrainingSet {
        clips: training.iter().map(|&i| all_clips[i]).collect(),
        targets: training.iter().map(|&i| data.clips[i].target).collect(),
        labels: data.labels.clone(),
    };
    let dir = tempfile::tempdir().unwrap();
    let run = |out: &Path, resume: bool, stop_after: usize| {
        train::events::train_events(
            &set,
            &options,
            out,
            resume,
            &mut |net: &EventsNet| {
                Ok(esc50::evaluate(net, &data, &all_clips, Split::Standard)?
                    .scores
                    .map_all)
            },
            &mut |p: Progress<'_>| match p {
                Progress::Epoch(r) if r.epoch == stop_after => ControlFlow::Break(()),
                _ => ControlFlow::Continue(()),
            },
        )
    };
    let full = run(&dir.path().join("full"), false, 0).unwrap();
    let losses: Vec<f64> = full.history.iter().map(|r| r.loss).collect();
    let (first, last) = (losses[0], losses[losses.len() - 1]);
    assert!(
        last < 0.8 * first,
        "loss {first:.3} -> {last:.3}: {losses:?}"
    );
    assert!(full.history.iter().all(|r| r.loss.is_finite()));

    // Stop after 3 epochs (a kill leaves the same checkpoint), then resume: same curve, same weights.
    let halves = dir.path().join("resumed");
    let stopped = run(&halves, false, 3);
    assert!(matches!(
        stopped,
        Err(TrainError::Stopped { epochs_done: 3 })
    ));
    let resumed = run(&halves, true, 0).unwrap();
    let resumed_losses: Vec<f64> = resumed.history.iter().map(|r| r.loss).collect();
    assert_eq!(resumed_losses, losses);
    for bits in [16, 32] {
        let (a, b) = (
            dir.path().join(format!("a{bits}")),
            dir.path().join(format!("b{bits}")),
        );
        full.save(&a, bits).unwrap();
        resumed.save(&b, bits).unwrap();
        let weights = |d: &Path| std::fs::read(d.join(WEIGHTS_FILE)).unwrap();
        assert_eq!(weights(&a), weights(&b), "{bits}-bit model");
        assert_eq!(EventsEncoder::load(&a).unwrap().info().bits, bits);
    }
}

/// The overlay follows real sounds: over one ESC-50 clip per class (fold 1), each map's band
/// profile (its mean over time, row by row) correlates with the clip's own band energy, where
/// the network's attention mask did not. Prints both, and how alike different clips' maps are.
#[test]
fn on_esc50_the_events_attention_follows_each_clip_s_band_energy() {
    let Some(dir) = esc50() else {
        return;
    };
    let data = Esc50::load(&dir).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/events-64");
    let encoder = EventsEncoder::load(&shipped).unwrap();
    let mut first_of_class = std::collections::BTreeMap::new();
    for clip in data.clips.iter().filter(|c| c.fold == 1) {
        first_of_class.entry(clip.target).or_insert(&clip.path);
    }
    let (mut occlusion, mut mask, mut energy) = (Vec::new(), Vec::new(), Vec::new());
    for path in first_of_class.values() {
        let clip = earshot::session::Clip::read(path, None).unwrap();
        let log_mel = clip.log_mel();
        let map = encoder.attention(&log_mel.data).unwrap().unwrap();
        let raw = encoder.attention_map(&log_mel.data).unwrap();
        let per_row = LOG_MEL_BANDS / map.rows;
        let band_energy: Vec<f64> = (0..map.rows)
            .map(|r| {
                map.frames
                    .clone()
                    .flat_map(|f| {
                        let frame = &log_mel.data[f * LOG_MEL_BANDS..(f + 1) * LOG_MEL_BANDS];
                        frame[r * per_row..(r + 1) * per_row]
                            .iter()
                            .map(|&x| f64::from(x))
                    })
                    .sum()
            })
            .collect();
        occlusion.push(row_profile(&map));
        mask.push(row_profile(&raw));
        energy.push(band_energy);
    }
    let with_own = |maps: &[Vec<f64>]| mean(maps.iter().zip(&energy).map(|(m, e)| pearson(m, e)));
    let between = |maps: &[Vec<f64>]| {
        mean(
            (0..maps.len())
                .flat_map(|i| (i + 1..maps.len()).map(move |j| (i, j)))
                .map(|(i, j)| pearson(&maps[i], &maps[j])),
        )
    };
    let (follows, mask_follows) = (with_own(&occlusion), with_own(&mask));
    eprintln!(
        "{} clips: band profile against the clip's own band energy: occlusion {follows:.3}, mask {mask_follows:.3}; between clips: occlusion {:.3}, mask {:.3}, band energies {:.3}",
        occlusion.len(),
        between(&occlusion),
        between(&mask),
        between(&energy)
    );
    assert_eq!(occlusion.len(), 50);
    assert!(
        follows >= 0.4 && follows >= mask_follows + 0.3,
        "{follows} against {mask_follows}"
    );
}

/// A map's mean over time, row by row.
fn row_profile(map: &earshot::model::AttentionMap) -> Vec<f64> {
    (map.values.chunks(map.columns))
        .map(|row| row.iter().map(|&v| f64::from(v)).sum::<f64>() / row.len() as f64)
        .collect()
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    sum / n.max(1) as f64
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let (ma, mb) = (mean(a.iter().copied()), mean(b.iter().copied()));
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        (ab, aa, bb) = (
            ab + (x - ma) * (y - mb),
            aa + (x - ma).powi(2),
            bb + (y - mb).powi(2),
        );
    }
    ab / (aa * bb).sqrt().max(f64::MIN_POSITIVE)
}

/// The ESC-50 folder of `../shared/data`, when it is there.
fn esc50() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/esc50");
    if dir.join("meta/esc50.csv").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "skipping: ESC-50 is not at {} (see ../shared/data/README.md)",
            dir.display()
        );
        None
    }
}

/// The four figures of a model card's metrics row.
fn card_metrics(model: &Path) -> [f64; 4] {
    let card = std::fs::read_to_string(model.join("MODEL_CARD.md")).unwrap();
    let mut lines = card
        .lines()
        .skip_while(|l| !l.starts_with("| mAP@all | mAP@100 | P@10 |"));
    let row = lines
        .nth(2)
        .unwrap_or_else(|| panic!("no metrics row in {}", model.display()));
    let values: Vec<f64> = row
        .split('|')
        .filter_map(|c| c.trim().parse().ok())
        .take(4)
        .collect();
    values
        .try_into()
        .unwrap_or_else(|v| panic!("metrics row {row:?} gave {v:?}"))
}

#[test]
fn the_shipped_events_models_reproduce_their_cards_on_esc50() {
    let Some(data) = esc50() else { return };
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    if !models.join("events-64").join(CONFIG_FILE).is_file() {
        eprintln!(
            "skipping: no events models are committed under {} yet",
            models.display()
        );
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let eval = |extra: &[&str]| {
        let mut args: Vec<&std::ffi::OsStr> = ["eval", "esc50", "--json", "--data"]
            .iter()
            .map(|s| s.as_ref())
            .collect();
        args.extend([
            data.as_os_str(),
            "--cache".as_ref(),
            cache.path().as_os_str(),
        ]);
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        let out = earshot(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let check = |report: &serde_json::Value, bits: usize, folder: &str| {
        let got = &report["bits"][bits.to_string()];
        let card = card_metrics(&models.join(folder));
        for (key, want) in ["map_all", "map_100", "p_at_10", "p_hamming2"]
            .iter()
            .zip(card)
        {
            let value = got[key]
                .as_f64()
                .unwrap_or_else(|| panic!("{folder}: no {key} in {got}"));
            assert!(
                (value - want).abs() < 6e-5,
                "{folder} {key}: eval {value:.5}, card {want:.4}"
            );
        }
        got["map_all"].as_f64().unwrap()
    };
    let standard = eval(&[]);
    for bits in [16, 32, 64, 128] {
        check(&standard, bits, &format!("events-{bits}"));
    }
    // A random ranking scores about 32 relevant / 1600 = 0.02.
    let map_64 = standard["bits"]["64"]["map_all"].as_f64().unwrap();
    assert!(
        map_64 > 0.1,
        "the 64-bit model must rank far above chance: {map_64}"
    );
    // Zero-shot: 10 unseen classes, a random ranking scores about 0.1.
    let zero_shot = eval(&["--zero-shot"]);
    let map_unseen = check(&zero_shot, 64, "events-64-zeroshot");
    assert!(
        map_unseen > 0.2,
        "unseen classes must rank above chance: {map_unseen}"
    );
}

/// The models compiled into the binary are the committed `models/events-64` and
/// `models/fingerprint`, byte for byte: an index built by a copied binary matches one built from
/// the installed folders.
#[test]
fn the_built_in_models_are_the_committed_ones() {
    use earshot::model::config::built_in;
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    for (name, config, weights) in [
        (
            built_in::EVENTS_NAME,
            built_in::EVENTS_CONFIG,
            built_in::EVENTS_WEIGHTS,
        ),
        (
            built_in::FINGERPRINT_NAME,
            built_in::FINGERPRINT_CONFIG,
            built_in::FINGERPRINT_WEIGHTS,
        ),
    ] {
        let dir = models.join(name);
        assert_eq!(
            std::fs::read(dir.join(CONFIG_FILE)).unwrap(),
            config,
            "{name}"
        );
        assert_eq!(
            std::fs::read(dir.join(WEIGHTS_FILE)).unwrap(),
            weights,
            "{name}"
        );
    }
}
