//! The road through the code (DESIGN.md, "Module map"), checked on the source itself:
//!
//! - no module imports one that imports it back, among the top-level modules and among the
//!   files of any folder (a file naming its parent's items is hierarchy, not a loop);
//! - the engine (`audio`, `features`, `model`, `library`, `index`, `search`, `session`) names
//!   no `clap`, `egui` or `eframe`, and imports neither `app`, `cli`, `eval`, `learn` nor `train`.
//!
//! A reference is any `crate::` or `super::` path in a file (its tests included), resolved to the
//! longest module it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module's path from the crate root (`[]` is `lib.rs`).
type ModPath = Vec<String>;

const ENGINE: [&str; 7] = [
    "audio", "features", "model", "library", "index", "search", "session",
];
const ABOVE_THE_ENGINE: [&str; 5] = ["app", "cli", "eval", "learn", "train"];
const UI_CRATES: [&str; 3] = ["clap", "egui", "eframe"];

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn module_of(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

/// The file's code without its comments (its tests count: they too stay on the road).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_chain(s: &str) -> Vec<String> {
    s.split("::")
        .map_while(|seg| {
            let seg: String = seg
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            (!seg.is_empty()).then_some(seg)
        })
        .collect()
}

/// Every path after `prefix` (`crate::` or `super::`), groups `{a, b::c}` expanded one level.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for (at, _) in code.match_indices(prefix) {
        let before = code[..at].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &code[at + prefix.len()..];
        let head = ident_chain(rest);
        let consumed: usize = head.iter().map(|s| s.len() + 2).sum();
        let tail = rest.get(consumed..).unwrap_or("");
        if tail.starts_with('{') {
            let group = &tail[1..tail.find('}').unwrap_or(tail.len() - 1).max(1)];
            for item in group.split(',') {
                let mut path = head.clone();
                path.extend(ident_chain(item.trim()));
                found.push(path);
            }
        } else {
            found.push(head);
        }
    }
    found
}

/// The longest module of `modules` that `path` names (the root when none).
fn resolve(modules: &BTreeSet<ModPath>, path: &[String]) -> ModPath {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| modules.contains(p))
        .unwrap_or_default()
}

fn is_ancestor(a: &ModPath, b: &ModPath) -> bool {
    a.len() < b.len() && b.starts_with(a)
}

struct Graph {
    /// Module -> modules it refers to (not itself, not its ancestors).
    edges: BTreeMap<ModPath, BTreeSet<ModPath>>,
    text: BTreeMap<ModPath, String>,
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    files.retain(|f| !f.ends_with("main.rs"));
    let text: BTreeMap<ModPath, String> = files
        .iter()
        .map(|f| {
            (
                module_of(&src, f),
                code(&std::fs::read_to_string(f).unwrap()),
            )
        })
        .collect();
    let modules: BTreeSet<ModPath> = text.keys().cloned().collect();
    let mut edges = BTreeMap::new();
    for (module, code) in &text {
        let parent: ModPath = module[..module.len().saturating_sub(1)].to_vec();
        let mut to = BTreeSet::new();
        for path in paths_after(code, "crate::") {
            to.insert(resolve(&modules, &path));
        }
        for path in paths_after(code, "super::") {
            let mut full = parent.clone();
            full.extend(path);
            to.insert(resolve(&modules, &full));
        }
        to.retain(|t| t != module && !is_ancestor(t, module));
        edges.insert(module.clone(), to);
    }
    Graph { edges, text }
}

/// The cycles of a graph, each as the modules along it (one per strongly connected knot).
fn cycles(edges: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<Vec<ModPath>> {
    let mut found = Vec::new();
    for start in edges.keys() {
        // Depth-first from `start`, looking for a path back to it through larger nodes only,
        // so that each cycle is reported once (from its smallest node).
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((node, path)) = stack.pop() {
            for next in edges.get(&node).into_iter().flatten() {
                if next == start {
                    found.push(path.clone());
                } else if next > start && seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    found
}

fn show(cycle: &[ModPath]) -> String {
    cycle
        .iter()
        .map(|m| format!("crate::{}", m.join("::")))
        .collect::<Vec<_>>()
        .join(" -> ")
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let g = graph();
    let loops: Vec<String> = cycles(&g.edges).iter().map(|c| show(c)).collect();
    assert!(loops.is_empty(), "import loops:\n{}", loops.join("\n"));
    // The same between top-level modules (a folder's files counted as the folder).
    let mut top: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    for (from, to) in &g.edges {
        let Some(a) = from.first() else { continue };
        for b in to.iter().filter_map(|t| t.first()).filter(|b| *b != a) {
            top.entry(vec![a.clone()])
                .or_default()
                .insert(vec![b.clone()]);
        }
    }
    let loops: Vec<String> = cycles(&top).iter().map(|c| show(c)).collect();
    assert!(
        loops.is_empty(),
        "top-level import loops:\n{}",
        loops.join("\n")
    );
}

#[test]
fn the_engine_knows_nothing_of_the_front_ends_training_or_benchmarks() {
    let g = graph();
    let mut problems = Vec::new();
    for (module, code) in &g.text {
        if !module.first().is_some_and(|m| ENGINE.contains(&m.as_str())) {
            continue;
        }
        for ui in UI_CRATES {
            if !paths_after(code, &format!("{ui}::")).is_empty() {
                problems.push(format!("crate::{} names {ui}", module.join("::")));
            }
        }
        for to in &g.edges[module] {
            if to
                .first()
                .is_some_and(|t| ABOVE_THE_ENGINE.contains(&t.as_str()))
            {
                problems.push(format!(
                    "crate::{} imports crate::{}",
                    module.join("::"),
                    to.join("::")
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_checks_see_a_loop_and_an_engine_import_when_there_is_one() {
    let module = |s: &str| s.split("::").map(String::from).collect::<ModPath>();
    let edges = BTreeMap::from([
        (module("app::audio"), BTreeSet::from([module("app::jobs")])),
        (
            module("app::jobs"),
            BTreeSet::from([module("app::results")]),
        ),
        (
            module("app::results"),
            BTreeSet::from([module("app::audio")]),
        ),
        (module("model"), BTreeSet::from([module("features")])),
    ]);
    let found = cycles(&edges);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].len(), 3);
    let code = "use crate::{eval::esc50, model::Mode};\nuse super::train::{TrainError, save};";
    let paths = paths_after(code, "crate::");
    assert_eq!(paths, vec![module("eval::esc50"), module("model::Mode")]);
    assert_eq!(
        paths_after(code, "super::"),
        vec![module("train::TrainError"), module("train::save")]
    );
    assert!(!paths_after("#[derive(clap::ValueEnum)]", "clap::").is_empty());
}
