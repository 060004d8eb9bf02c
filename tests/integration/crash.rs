//! Crash safety: `earshot index` killed (SIGKILL) at random moments, and the app's settings
//! killed mid-save, never leave a file that fails to load or has lost what was saved before.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use earshot::index::format;
use earshot::model::SeededRng;

use crate::support::{Sample, tone, write_wav};

const KILLS: usize = 20;
const FILES_PER_ROUND: usize = 8;

fn add_files(library: &Path, round: usize) {
    let folder = library.join(format!("round-{round:02}"));
    std::fs::create_dir_all(&folder).expect("library folder");
    for i in 0..FILES_PER_ROUND {
        let freq = 200.0 + 37.0 * (round * FILES_PER_ROUND + i) as f64;
        let samples = tone(16_000, 1, 12.0, freq, 0.4);
        write_wav(
            &folder.join(format!("{i}.wav")),
            16_000,
            1,
            Sample::Int(16),
            &samples,
        );
    }
}

/// Starts `earshot index` saving a checkpoint as often as it can, so kills land mid-save too.
fn start_index(db: &Path, library: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_earshot"))
        .args(["index", "--checkpoint-secs", "0", "--db"])
        .arg(db)
        .arg(library)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run earshot index")
}

fn indexed_files(db: &Path) -> Vec<PathBuf> {
    match format::load(db) {
        Ok(index) => index.files.into_iter().map(|f| f.path).collect(),
        Err(earshot::index::IndexError::Missing { .. }) => Vec::new(),
        Err(e) => panic!("the index does not load after a kill: {e}"),
    }
}

#[test]
fn killing_the_indexer_never_loses_or_corrupts_the_index() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (library, db) = (dir.path().join("library"), dir.path().join("db"));
    // How long a round takes when left alone sets the range of kill times.
    add_files(&library, 0);
    let started = Instant::now();
    let status = start_index(&db, &library).wait().expect("wait");
    assert!(status.success());
    let round_time = started.elapsed();
    let mut rng = SeededRng::new(7);
    let mut mid_run = 0;
    for round in 1..=KILLS {
        let before = indexed_files(&db);
        add_files(&library, round);
        let mut child = start_index(&db, &library);
        std::thread::sleep(round_time.mul_f64(rng.uniform()));
        let still_running = child.try_wait().expect("poll").is_none();
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        mid_run += usize::from(still_running);
        let after = indexed_files(&db);
        let lost: Vec<_> = before.iter().filter(|p| !after.contains(p)).collect();
        assert!(lost.is_empty(), "round {round}: lost {lost:?}");
    }
    let status = start_index(&db, &library).wait().expect("wait");
    assert!(status.success());
    let files = indexed_files(&db);
    assert_eq!(files.len(), (KILLS + 1) * FILES_PER_ROUND);
    let leftovers = std::fs::read_dir(&db).expect("db").count();
    assert_eq!(leftovers, 1, "temporary files left in the database folder");
    eprintln!(
        "kill test: {KILLS} kills, {mid_run} while indexing (round of {FILES_PER_ROUND} files: {:.2} s)",
        round_time.as_secs_f64()
    );
    assert!(
        mid_run >= KILLS / 2,
        "only {mid_run} kills landed while indexing"
    );
}

/// The app's settings are saved the way the app saves them, by a child process that is killed
/// at random moments; each time, what is on disk must load cleanly as one of the saved states.
#[cfg(feature = "gui")]
#[test]
fn killing_the_app_while_it_saves_its_settings_loses_nothing() {
    use earshot::app::settings::{LibrarySettings, Settings};

    let library = |n: usize| LibrarySettings {
        name: format!("library {n}"),
        folders: vec![PathBuf::from(format!("/data/{n}"))],
        db: PathBuf::from(format!("/db/{n}")),
        ..LibrarySettings::default()
    };
    if let Some(dir) = std::env::var_os("EARSHOT_SETTINGS_WRITER") {
        // The child: save ever-growing settings until killed.
        let mut settings = Settings::default();
        for n in 0.. {
            settings.libraries.push(library(n));
            settings.save(Path::new(&dir)).expect("save settings");
        }
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut rng = SeededRng::new(11);
    let file = earshot::app::settings::settings_path(dir.path());
    for kill in 0..KILLS {
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "crash::killing_the_app_while_it_saves_its_settings_loses_nothing",
                "--test-threads=1",
            ])
            .env("EARSHOT_SETTINGS_WRITER", dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the writer");
        let started = Instant::now();
        while !file.exists() && started.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis((rng.uniform() * 200.0) as u64));
        let _ = child.kill();
        let _ = child.wait();
        let (settings, problem) = Settings::load(dir.path(), None);
        assert_eq!(problem, None, "kill {kill}");
        let n = settings.libraries.len();
        assert!(n > 0, "kill {kill}: the settings were lost");
        assert!(
            settings
                .libraries
                .iter()
                .enumerate()
                .all(|(i, l)| *l == library(i)),
            "kill {kill}: a mixed state"
        );
    }
    let leftovers = std::fs::read_dir(dir.path()).expect("dir").count();
    assert!(leftovers <= 2, "temporary files pile up: {leftovers}");
}
