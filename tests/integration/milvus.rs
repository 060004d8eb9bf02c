//! The index on a Milvus server (`--db milvus://...`) against the same index in a folder: the
//! same commands give the same results, incremental indexing and a killed run behave alike,
//! and a server that cannot be used is named with the reason.
//!
//! Each test starts its own milvus-lite server (`EARSHOT_MILVUS_LITE`: its `milvus` program,
//! which `.ci/setup` installs in a venv outside the repository) on a free loopback port, and
//! stops it at the end. Where it is not installed the tests say so and skip, unless
//! `EARSHOT_REQUIRE_MILVUS` is set (CI), which makes that a failure.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use earshot::index::milvus::{Field, Milvus};
use serde_json::Value;
use tempfile::TempDir;

use crate::index::{make_library, melody};
use crate::support::*;

/// How long a server may take to listen (it starts in about 3 s).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A milvus-lite server for one test, stopped and its data removed when dropped.
pub struct LiteServer {
    child: Child,
    port: u16,
    _data: TempDir,
}

impl LiteServer {
    /// Starts one, or says why it cannot and returns `None` (a failure where required).
    pub fn start() -> Option<Self> {
        let Some(program) = std::env::var_os("EARSHOT_MILVUS_LITE").map(PathBuf::from) else {
            skip("EARSHOT_MILVUS_LITE is not set (run the tests through .ci/setup)");
            return None;
        };
        if !program.is_file() {
            skip(&format!("{} does not exist", program.display()));
            return None;
        }
        let lib = program.parent().unwrap_or(Path::new("."));
        let data = TempDir::new().unwrap();
        let port = free_port();
        let mut child = Command::new(&program)
            .arg(data.path().join("milvus.db"))
            .arg(format!("127.0.0.1:{port}"))
            .arg("ERROR")
            .env("LD_LIBRARY_PATH", lib)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("milvus-lite exited at start: {status}");
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "milvus-lite did not listen within {START_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(Self {
            child,
            port,
            _data: data,
        })
    }

    /// The `--db` of an index kept under `prefix` on this server.
    pub fn db(&self, prefix: &str) -> PathBuf {
        PathBuf::from(format!("milvus://127.0.0.1:{}/{prefix}", self.port))
    }
}

impl Drop for LiteServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn skip(why: &str) {
    assert!(
        std::env::var_os("EARSHOT_REQUIRE_MILVUS").is_none(),
        "milvus-lite is required here: {why}"
    );
    eprintln!("skipped: no milvus-lite server: {why}");
}

/// A loopback port nothing listens on now.
fn free_port() -> u16 {
    let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    listener.local_addr().unwrap().port()
}

fn run(args: &[&OsStr]) -> Output {
    let out = earshot(args);
    assert!(
        out.status.success(),
        "earshot {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn index(db: &Path, lib: &Path) -> String {
    let out = run(&[
        "index".as_ref(),
        "--db".as_ref(),
        db.as_os_str(),
        lib.as_os_str(),
    ]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The hits of each clip, as `earshot query --json` gives them (timing left out).
fn query(db: &Path, mode: &str, clips: &[PathBuf]) -> Vec<Value> {
    let mut args: Vec<&OsStr> = vec![
        "query".as_ref(),
        "--db".as_ref(),
        db.as_os_str(),
        "--mode".as_ref(),
        mode.as_ref(),
        "--json".as_ref(),
        "--top".as_ref(),
        "5".as_ref(),
    ];
    args.extend(clips.iter().map(|c| c.as_os_str()));
    let out = run(&args);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["hits"].clone())
        .collect()
}

fn info(db: &Path) -> Value {
    let out = run(&[
        "info".as_ref(),
        "--db".as_ref(),
        db.as_os_str(),
        "--json".as_ref(),
    ]);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Each mode's segment count, as `info` gives it.
fn segments(info: &Value) -> Vec<(String, u64)> {
    (info["modes"].as_array().unwrap().iter())
        .map(|m| {
            (
                m["mode"].as_str().unwrap().to_string(),
                m["segments"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// 3 s excerpts of the library's first files, off the segment grid, as query files.
fn excerpts(dir: &Path, count: u64) -> Vec<PathBuf> {
    (0..count)
        .map(|i| {
            let rate = 16_000;
            let clip = melody(i, 6.0);
            let start = ((1.0 + 0.37 * i as f64) * f64::from(rate)) as usize;
            let path = dir.join(format!("excerpt{i}.wav"));
            write_wav(
                &path,
                rate,
                1,
                Sample::Int(16),
                &clip[start..start + 3 * rate as usize],
            );
            path
        })
        .collect()
}

#[test]
fn the_same_commands_give_the_same_results_on_milvus_and_in_a_folder() {
    let Some(server) = LiteServer::start() else {
        return;
    };
    let dir = TempDir::new().unwrap();
    let lib = dir.path().join("lib");
    let files = make_library(&lib, 6);
    let (folder, remote) = (dir.path().join("db"), server.db("same"));
    let clips: Vec<PathBuf> = files
        .iter()
        .cloned()
        .chain(excerpts(dir.path(), 3))
        .collect();

    let compare = |expected_summary: &str| {
        for db in [&folder, &remote] {
            let summary = index(db, &lib);
            assert!(
                summary.contains(expected_summary),
                "{}: {summary}",
                db.display()
            );
        }
        for mode in ["events", "fingerprint"] {
            let (here, there) = (query(&folder, mode, &clips), query(&remote, mode, &clips));
            assert_eq!(here, there, "{mode}");
            assert!(here.iter().all(|hits| !hits.as_array().unwrap().is_empty()));
        }
        let (here, there) = (info(&folder), info(&remote));
        assert_eq!(
            (&here["files"], segments(&here)),
            (&there["files"], segments(&there))
        );
        assert!(there["bytes"].is_null(), "{there}");
        here
    };
    compare("6 added, 0 updated, 0 removed, 0 relabelled, 0 unchanged");
    // Each file finds itself first; each excerpt its file, at its place.
    let hits = query(&remote, "fingerprint", &clips);
    for (i, path) in files.iter().enumerate() {
        assert_eq!(hits[i][0]["path"], path.to_string_lossy().as_ref());
    }
    for i in 0..3 {
        assert_eq!(
            hits[files.len() + i][0]["path"],
            files[i].to_string_lossy().as_ref()
        );
        let start = hits[files.len() + i][0]["start_s"].as_f64().unwrap();
        assert!((start - (1.0 + 0.37 * i as f64)).abs() <= 0.05, "{start}");
    }

    compare("0 added, 0 updated, 0 removed, 0 relabelled, 6 unchanged");
    // Changed, removed and added files, indexed again on both.
    write_wav(&files[0], 16_000, 1, Sample::Int(16), &melody(100, 4.0));
    std::fs::remove_file(&files[1]).unwrap();
    write_wav(
        &lib.join("birds/new.wav"),
        16_000,
        1,
        Sample::Int(16),
        &melody(200, 5.0),
    );
    let clips: Vec<PathBuf> = files.iter().filter(|f| f.exists()).cloned().collect();
    for db in [&folder, &remote] {
        let summary = index(db, &lib);
        assert!(
            summary.contains("1 added, 1 updated, 1 removed, 0 relabelled, 4 unchanged"),
            "{summary}"
        );
    }
    for mode in ["events", "fingerprint"] {
        let (here, there) = (query(&folder, mode, &clips), query(&remote, mode, &clips));
        assert_eq!(here, there, "{mode}");
        let removed = files[1].to_string_lossy();
        assert!(
            there
                .iter()
                .flat_map(|h| h.as_array().unwrap())
                .all(|h| h["path"] != removed.as_ref())
        );
    }
    let there = info(&remote);
    assert_eq!(
        (&info(&folder)["files"], segments(&info(&folder))),
        (&there["files"], segments(&there))
    );
}

#[test]
fn an_unreachable_server_and_a_foreign_collection_are_named_with_the_fix() {
    let port = free_port();
    let closed = PathBuf::from(format!("milvus://127.0.0.1:{port}/x"));
    let started = Instant::now();
    let out = earshot(&["info".as_ref(), "--db".as_ref(), closed.as_os_str()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let out = earshot(&[
        "info".as_ref(),
        "--db".as_ref(),
        "milvus://nowhere".as_ref(),
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("milvus://nowhere: not a Milvus address")
    );

    let Some(server) = LiteServer::start() else {
        return;
    };
    let db = server.db("foreign");
    let milvus = Milvus::connect("127.0.0.1", server.port).unwrap();
    let fields = [Field::primary("id"), Field::float_vector("other", 8)];
    milvus
        .create_collection("foreign_meta", &fields, &[])
        .unwrap();
    let out = earshot(&["info".as_ref(), "--db".as_ref(), db.as_os_str()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("foreign_meta") && err.contains("--rebuild"),
        "{err}"
    );
}

/// Each complete file's segment count per mode, read from the server as it is.
fn stored_segments(server: &LiteServer, prefix: &str) -> Vec<HashMap<String, u64>> {
    let milvus = Milvus::connect("127.0.0.1", server.port).unwrap();
    let files = format!("{prefix}_files");
    if !milvus.has_collection(&files).unwrap() {
        return vec![HashMap::new(); 2];
    }
    let rows = milvus
        .query(&files, "complete == true", &["id", "record"])
        .unwrap();
    let paths: Vec<(i64, String)> = (rows
        .i64("id")
        .unwrap()
        .iter()
        .zip(rows.strings("record").unwrap()))
    .map(|(&id, json)| {
        let record: Value = serde_json::from_str(json).unwrap();
        (id, record["path"].as_str().unwrap().to_string())
    })
    .collect();
    ["events", "fingerprint"]
        .iter()
        .map(|mode| {
            let name = format!("{prefix}_{mode}");
            (paths.iter())
                .map(|(id, path)| {
                    let n = milvus.count(&name, &format!("file == {id}")).unwrap_or(0);
                    (path.clone(), n)
                })
                .collect()
        })
        .collect()
}

/// Kills `earshot index --db milvus://...` at random moments: every time, each file the index
/// lists has all its segments, exactly as a complete run stores them, and the next run
/// finishes the job.
#[cfg(unix)]
#[test]
fn killing_an_index_run_on_milvus_leaves_only_whole_files() {
    let Some(server) = LiteServer::start() else {
        return;
    };
    let dir = TempDir::new().unwrap();
    let lib = dir.path().join("lib");
    make_library(&lib, 40);
    index(&server.db("whole"), &lib);
    let expected = stored_segments(&server, "whole");
    assert_eq!(expected[0].len(), 40);

    let db = server.db("killed");
    let mut rng = earshot::model::SeededRng::new(7);
    let mut seen_partial = false;
    for round in 0..6 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_earshot"))
            .args(["index", "--checkpoint-secs", "0", "--db"])
            .arg(&db)
            .arg(&lib)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200 + (rng.uniform() * 800.0) as u64));
        child.kill().unwrap();
        child.wait().unwrap();
        let stored = stored_segments(&server, "killed");
        seen_partial |= !stored[0].is_empty() && stored[0].len() < 40;
        for (mode, (got, want)) in stored.iter().zip(&expected).enumerate() {
            for (path, count) in got {
                assert_eq!(
                    Some(count),
                    want.get(path),
                    "round {round}, mode {mode}: {path}"
                );
            }
        }
    }
    assert!(
        seen_partial,
        "no kill landed mid-run; the test did not test anything"
    );
    index(&db, &lib);
    assert_eq!(stored_segments(&server, "killed"), expected);
    assert_eq!(segments(&info(&db)), segments(&info(&server.db("whole"))));
}

/// ESC-50 by its protocol (database folds 1-4, queries fold 5) indexed in a folder and on the
/// server: every query gets the same hits from both, in both modes. CI runs the first 10
/// classes (320 clips against 80 queries); `EARSHOT_MILVUS_ESC50=full` runs all 50 (1,600
/// against 400, about 3 minutes). Skipped where the data or the server is missing.
#[test]
fn on_esc50_fold_5_the_server_gives_the_local_index_s_hits() {
    let esc50 = crate::birdnet::data_dir().join("esc50");
    let Ok(meta) = std::fs::read_to_string(esc50.join("meta/esc50.csv")) else {
        eprintln!("skipped: no ESC-50 under {}", esc50.display());
        return;
    };
    let Some(server) = LiteServer::start() else {
        return;
    };
    let classes = match std::env::var("EARSHOT_MILVUS_ESC50").as_deref() {
        Ok("full") => 50,
        _ => 10,
    };
    let dir = TempDir::new().unwrap();
    let database = dir.path().join("database");
    std::fs::create_dir_all(&database).unwrap();
    let mut queries = Vec::new();
    for line in meta.lines().skip(1) {
        // filename,fold,target,category,...
        let fields: Vec<&str> = line.split(',').collect();
        let target: usize = fields[2].parse().unwrap();
        if target >= classes {
            continue;
        }
        let clip = esc50.join("audio").join(fields[0]);
        match fields[1] {
            "5" => queries.push(clip),
            _ => std::os::unix::fs::symlink(&clip, database.join(fields[0])).unwrap(),
        }
    }
    assert_eq!(queries.len(), 8 * classes);
    let (folder, remote) = (dir.path().join("db"), server.db("esc50"));
    for db in [&folder, &remote] {
        index(db, &database);
    }
    for mode in ["events", "fingerprint"] {
        let (here, there) = (
            query(&folder, mode, &queries),
            query(&remote, mode, &queries),
        );
        assert_eq!(here.len(), queries.len());
        let same_first = (here.iter().zip(&there))
            .filter(|(h, t)| h[0]["path"] == t[0]["path"] && h[0]["start_s"] == t[0]["start_s"])
            .count();
        let same_all = here.iter().zip(&there).filter(|(h, t)| h == t).count();
        eprintln!(
            "{mode}: {} fold-5 queries, the same first hit for {same_first}, the same 5 hits for {same_all}",
            queries.len()
        );
        assert_eq!(same_first, queries.len(), "{mode}");
    }
}
