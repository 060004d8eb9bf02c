//! `earshot train events --backbone NAME`: hash heads on an installed backbone's embeddings of
//! ESC-50 (computed once and cached), one model folder per code length, each with its card;
//! the ablations and the label-free baselines are measured in the same run.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;

use super::card::{command_line, machine};
use super::eval_esc50::split_of;
use super::heads_bench::{ABLATED_BITS, Bench, HeadScores, Row};
use super::train_events::{SplitArg, TrainEvents};
use crate::eval::esc50::Esc50;
use crate::eval::metrics::RetrievalScores;
use crate::model::config::{CARD_FILE, write_folder};
use crate::search::rerank::CODE_WEIGHT;
use crate::train::hash_head::{HeadOptions, HeadRecipe, LabelledEmbeddings, train_head};

pub fn run(args: &TrainEvents) -> anyhow::Result<ExitCode> {
    let backbone_name = args.backbone.clone().unwrap_or_default();
    anyhow::ensure!(
        !args.bits.is_empty() && args.bits.iter().all(|b| (8..=512).contains(b)),
        "--bits must be between 8 and 512 (several comma-separated)"
    );
    let options = HeadOptions {
        hidden: args.hidden,
        epochs: args.epochs.unwrap_or(HeadOptions::default().epochs),
        batch_size: args.batch_size.unwrap_or(HeadOptions::default().batch_size),
        learning_rate: args.lr.unwrap_or(HeadOptions::default().learning_rate),
        weight_decay: args.weight_decay,
        seed: args.seed,
        recipe: HeadRecipe {
            centres: !args.no_centres,
            audionet: args.with_audionet,
            window_subsets: !args.no_window_subsets,
            dropout: !args.no_dropout,
            hadamard: !args.random_centres,
        },
        ..HeadOptions::default()
    };
    anyhow::ensure!(options.batch_size >= 2, "--batch-size must be at least 2");
    anyhow::ensure!(
        options.recipe.centres || options.recipe.audionet,
        "--no-centres needs --with-audionet: a head needs one hashing loss"
    );
    let started = Instant::now();
    let data = Esc50::load(&args.data)?;
    let split = split_of(args.split.into());
    let bench = Bench::new(&data, &backbone_name, split, args.cache.as_deref())?;
    let windows = &bench.windows;
    let training: Vec<usize> = (0..data.clips.len())
        .filter(|&i| split.is_training(&data.clips[i]) && windows.clips[i].is_some())
        .collect();
    let set = LabelledEmbeddings {
        dim: windows.dim,
        clips: training
            .iter()
            .filter_map(|&i| windows.clips[i].as_deref())
            .collect(),
        targets: training.iter().map(|&i| data.clips[i].target).collect(),
        classes: data.labels.len(),
    };
    let baselines = bench.baselines(ABLATED_BITS, args.seed)?;
    let short = backbone_name.split('-').next().unwrap_or(&backbone_name);
    let suffix = args.split.suffix();
    for &bits in &args.bits {
        let trained_at = Instant::now();
        let (config, head) = train_head(&set, &backbone_name, bits, &options)?;
        let seconds = trained_at.elapsed().as_secs_f64();
        let scores = bench.head(&head, bits)?;
        let out = args
            .models_dir
            .join(format!("events-{short}-{bits}{suffix}"));
        write_folder(&out, &config, &head.tensors()?)?;
        let ablations = if bits == ABLATED_BITS {
            bench.ablations(&set, &backbone_name, &options)?
        } else {
            Vec::new()
        };
        let card = Card {
            args,
            options: &options,
            bits,
            input_dim: config.input_dim,
            scores: &scores,
            ablations: &ablations,
            baselines: if bits == ABLATED_BITS {
                &baselines
            } else {
                &[]
            },
            train_seconds: seconds,
            total_seconds: started.elapsed().as_secs_f64(),
            out: &out,
        }
        .render();
        std::fs::write(out.join(CARD_FILE), card)
            .with_context(|| format!("writing {}", out.join(CARD_FILE).display()))?;
        println!(
            "{}: by margins mAP@all {:.4}, mAP@100 {:.4}, P@10 {:.4} (Hamming {:.4}, re-ranked {:.4}); trained in {seconds:.1} s",
            out.display(),
            scores.margins.map_all,
            scores.margins.map_100,
            scores.margins.p_at_10,
            scores.hamming.map_all,
            scores.reranked.map_all,
        );
        for (weight, s) in &scores.fused_by_margins {
            println!(
                "  re-ranked, margin agreement weight {weight}: mAP@all {:.4}, mAP@100 {:.4}, P@10 {:.4}",
                s.map_all, s.map_100, s.p_at_10
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A head's model card.
struct Card<'a> {
    args: &'a TrainEvents,
    options: &'a HeadOptions,
    bits: usize,
    input_dim: usize,
    scores: &'a HeadScores,
    ablations: &'a [Row],
    baselines: &'a [Row],
    train_seconds: f64,
    total_seconds: f64,
    out: &'a PathBuf,
}

impl Card<'_> {
    fn render(&self) -> String {
        let (o, args) = (self.options, self.args);
        let backbone = args.backbone.as_deref().unwrap_or_default();
        let zero_shot = args.split == SplitArg::ZeroShot;
        let name = self
            .out
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let size = std::fs::metadata(self.out.join(crate::model::config::WEIGHTS_FILE))
            .map_or(0, |m| m.len());
        let mut c = String::new();
        let _ = writeln!(
            c,
            "# {name}\n\nA {}-bit hash head for similar sounds on the embeddings of **{backbone}**. This folder holds the head only ({:.2} MB); it needs {backbone}, which Earshot never ships: the user imports it (`earshot models import birdnet PATH`). BirdNET's weights are CC BY-NC-SA 4.0 (Cornell Lab of Ornithology and Chemnitz University of Technology). Trained by Earshot's own training command on ESC-50; no outside weights or data.\n",
            self.bits,
            size as f64 / 1e6
        );
        let _ = writeln!(c, "## Command\n\n```\n{}\n```\n", command_line());
        let _ = writeln!(
            c,
            "## Data\n\nESC-50 (K. J. Piczak, CC BY-NC 3.0) from `{}`: {backbone}'s embeddings of every clip's windows (as a library file is indexed). Trained on {}. Evaluation: queries fold 5, database folds 1-4{}; relevant = same class; each clip is its windows' mean embedding.\n",
            args.data.display(),
            match args.split {
                SplitArg::Standard => "folds 1-4, all 50 classes",
                SplitArg::ZeroShot => "folds 1-4 of classes 0-39",
                SplitArg::Validation => "folds 1-3, all 50 classes",
                SplitArg::ZeroShotValidation => "folds 1-3 of classes 0-29",
            },
            match args.split {
                SplitArg::Standard => "",
                SplitArg::ZeroShot => ", classes 40-49 only",
                SplitArg::Validation => " (validation split: queries fold 4 against folds 1-3)",
                SplitArg::ZeroShotValidation => {
                    " (validation split: queries fold 4 against folds 1-3, classes 30-39 only)"
                }
            }
        );
        let _ = writeln!(c, "## Training\n\n| setting | value |\n|---|---|");
        for (k, v) in [
            (
                "head",
                format!(
                    "standardise, {} -> {} ReLU -> {} bits, balanced sign",
                    self.input_dim, o.hidden, self.bits
                ),
            ),
            ("seed", o.seed.to_string()),
            ("epochs", o.epochs.to_string()),
            ("batch size", o.batch_size.to_string()),
            ("peak learning rate", o.learning_rate.to_string()),
            ("weight decay", o.weight_decay.to_string()),
            ("dropout", o.dropout.to_string()),
            ("recipe", format!("{:?}", o.recipe)),
            (
                "training time",
                format!(
                    "{:.1} s (whole command so far {:.0} s, embedding ESC-50 included unless cached)",
                    self.train_seconds, self.total_seconds
                ),
            ),
            ("machine", machine()),
        ] {
            let _ = writeln!(c, "| {k} | {v} |");
        }
        let _ = writeln!(
            c,
            "\n## Metrics (`earshot eval esc50{} --model {}` reproduces them)\n\n| ranking | mAP@all | mAP@100 | P@10 |\n|---|---|---|---|",
            if zero_shot { " --zero-shot" } else { "" },
            self.out.display()
        );
        let row = |c: &mut String, name: &str, s: &RetrievalScores| {
            let _ = writeln!(
                c,
                "| {name} | {:.4} | {:.4} | {:.4} |",
                s.map_all, s.map_100, s.p_at_10
            );
        };
        row(
            &mut c,
            "query margins on database bits (as search ranks codes learned from labels)",
            &self.scores.margins,
        );
        row(
            &mut c,
            "Hamming distance (ties by cosine)",
            &self.scores.hamming,
        );
        row(
            &mut c,
            "Hamming candidates re-ranked by cosine with query expansion",
            &self.scores.reranked,
        );
        let fused = (self.scores.fused_by_margins.iter()).find(|(w, _)| *w == CODE_WEIGHT);
        if let Some((weight, scores)) = fused {
            let name = format!(
                "re-ranked by cosine + {weight} x margin agreement (as search ranks a library indexed with this head)"
            );
            row(&mut c, &name, scores);
        }
        if !self.ablations.is_empty() {
            let _ = writeln!(
                c,
                "\n## Ablations ({ABLATED_BITS} bits, ranked by query margins, same seed)\n\n| recipe | mAP@all | mAP@100 | P@10 |\n|---|---|---|---|"
            );
            row(&mut c, "full recipe", &self.scores.margins);
            for r in self.ablations {
                row(&mut c, &r.name, &r.scores);
            }
        }
        if !self.baselines.is_empty() {
            let _ = writeln!(
                c,
                "\n## Without labels, on the same split\n\n| method | mAP@all | mAP@100 | P@10 |\n|---|---|---|---|"
            );
            for r in self.baselines {
                row(&mut c, &r.name, &r.scores);
            }
        }
        let _ = writeln!(
            c,
            "\nThe model kept is the last epoch's; the evaluation split never chose anything."
        );
        c
    }
}
