//! Hostile and broken input: a corpus of damaged files, generated here (nothing downloaded), is
//! indexed by the real `earshot index`. Every audio file must end up indexed or reported once,
//! by name, with a reason; the run must not panic or hang, and exits 0 because some files index.
//! A ten-hour file shows that memory does not grow with a file's length.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use earshot::index::format;

use crate::support::{
    Sample, earshot, ffmpeg_available, ffmpeg_encode, tone, write_aiff, write_wav,
};

/// A run that takes longer than this is a hang.
const RUN_LIMIT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Expect {
    /// Must be reported as unreadable.
    Reported,
    /// Must be indexed.
    Indexed,
    /// Damaged but readable: must be indexed, and named as indexed with problems.
    Damaged,
    /// Damaged: either reported as unreadable, or indexed and named as indexed with problems.
    Named,
    /// Damaged but partly decodable: reported, or indexed (named as damaged where the damage
    /// shows: junk after a PCM header is valid samples).
    Either,
}

impl Expect {
    /// Whether a case's outcome meets the expectation: how many times it was listed as
    /// unreadable, how many as indexed with problems, and whether the index holds it.
    pub fn met(self, unreadable: usize, damaged: usize, indexed: bool) -> bool {
        let reported = unreadable == 1 && damaged == 0 && !indexed;
        let flagged = damaged == 1 && unreadable == 0 && indexed;
        match self {
            Expect::Reported => reported,
            Expect::Indexed => unreadable == 0 && damaged == 0 && indexed,
            Expect::Damaged => flagged,
            Expect::Named => reported || flagged,
            Expect::Either => reported || (indexed && unreadable == 0 && damaged <= 1),
        }
    }
}

pub struct Corpus {
    pub root: PathBuf,
    pub cases: Vec<(PathBuf, Expect)>,
}

impl Corpus {
    fn add(&mut self, relative: impl AsRef<Path>, bytes: &[u8], expect: Expect) -> PathBuf {
        let path = self.root.join(relative);
        fs::create_dir_all(path.parent().expect("a parent")).expect("create folder");
        fs::write(&path, bytes).expect("write case");
        self.cases.push((path.clone(), expect));
        path
    }
}

/// Deterministic junk bytes.
fn junk(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = earshot::model::SeededRng::new(seed);
    (0..n).map(|_| rng.next_u64() as u8).collect()
}

/// A canonical WAV header (PCM) with any field values, followed by `data`.
fn wav_header(rate: u32, channels: u16, bits: u16, format: u16, data_len: u32) -> Vec<u8> {
    let block = channels.wrapping_mul(bits / 8);
    let mut h = b"RIFF".to_vec();
    h.extend_from_slice(&36u32.wrapping_add(data_len).to_le_bytes());
    h.extend_from_slice(b"WAVEfmt ");
    h.extend_from_slice(&16u32.to_le_bytes());
    h.extend_from_slice(&format.to_le_bytes());
    h.extend_from_slice(&channels.to_le_bytes());
    h.extend_from_slice(&rate.to_le_bytes());
    h.extend_from_slice(&rate.wrapping_mul(u32::from(block)).to_le_bytes());
    h.extend_from_slice(&block.to_le_bytes());
    h.extend_from_slice(&bits.to_le_bytes());
    h.extend_from_slice(b"data");
    h.extend_from_slice(&data_len.to_le_bytes());
    h
}

fn pcm16(samples: &[f32]) -> Vec<u8> {
    samples
        .iter()
        .flat_map(|&x| ((x * 32767.0) as i16).to_le_bytes())
        .collect()
}

/// One valid file per format, then each damaged the same ways; then the format-specific cases
/// and the file-system cases.
pub fn build_corpus(dir: &Path) -> Corpus {
    let root = fs::canonicalize(dir)
        .expect("canonical temp dir")
        .join("corpus");
    let mut corpus = Corpus {
        root: root.clone(),
        cases: Vec::new(),
    };
    let work = dir.join("work");
    fs::create_dir_all(&work).expect("work folder");
    let stereo = tone(22_050, 2, 3.0, 440.0, 0.5);
    let wav = work.join("tone.wav");
    write_wav(&wav, 22_050, 2, Sample::Int(16), &stereo);
    let aiff = work.join("tone.aiff");
    write_aiff(&aiff, 22_050, 2, &stereo);
    let formats: Vec<(&str, Vec<u8>, usize)> = vec![
        ("wav", fs::read(&wav).expect("wav"), 44),
        ("aiff", fs::read(&aiff).expect("aiff"), 54),
        (
            "flac",
            fs::read(ffmpeg_encode(&wav, &work.join("t.flac"), &[])).expect("flac"),
            42,
        ),
        (
            "mp3",
            fs::read(ffmpeg_encode(&wav, &work.join("t.mp3"), &["-b:a", "128k"])).expect("mp3"),
            4096,
        ),
        (
            "ogg",
            fs::read(ffmpeg_encode(
                &wav,
                &work.join("t.ogg"),
                &["-c:a", "libvorbis"],
            ))
            .expect("ogg"),
            4096,
        ),
    ];
    for (i, (ext, good, header)) in formats.iter().enumerate() {
        let seed = i as u64 + 1;
        corpus.add(format!("{ext}/good.{ext}"), good, Expect::Indexed);
        corpus.add(format!("{ext}/empty.{ext}"), &[], Expect::Reported);
        corpus.add(
            format!("{ext}/cut-at-8.{ext}"),
            &good[..8],
            Expect::Reported,
        );
        corpus.add(
            format!("{ext}/cut-at-40.{ext}"),
            &good[..40],
            Expect::Reported,
        );
        corpus.add(
            format!("{ext}/cut-in-half.{ext}"),
            &good[..good.len() / 2],
            Expect::Named,
        );
        let mut after_header = good[..*header].to_vec();
        after_header.extend(junk(good.len() - header, seed));
        corpus.add(
            format!("{ext}/junk-after-header.{ext}"),
            &after_header,
            Expect::Either,
        );
        // MPEG audio has no file header: sync words turn up in any junk.
        let junk_only = if *ext == "mp3" {
            Expect::Either
        } else {
            Expect::Reported
        };
        corpus.add(
            format!("{ext}/junk.{ext}"),
            &junk(20_000, seed + 10),
            junk_only,
        );
    }

    let mono = pcm16(&tone(16_000, 1, 1.0, 300.0, 0.5));
    let n = mono.len() as u32;
    // (name, rate, channels, bits, format code, data length in the header, expected)
    let headers = [
        (
            "data-longer-than-file",
            16_000,
            1,
            16,
            1,
            0x7fff_fff0,
            Expect::Either,
        ),
        ("rate-0", 0, 1, 16, 1, n, Expect::Reported),
        ("rate-4-GHz", 4_000_000_000, 1, 16, 1, n, Expect::Reported),
        ("channels-0", 16_000, 0, 16, 1, n, Expect::Reported),
        ("channels-65535", 16_000, 65_535, 16, 1, n, Expect::Either),
        ("bits-0", 16_000, 1, 0, 1, n, Expect::Reported),
        ("format-unknown", 16_000, 1, 16, 0x7777, n, Expect::Reported),
    ];
    for (name, rate, channels, bits, format, data_len, expect) in headers {
        let mut bytes = wav_header(rate, channels, bits, format, data_len);
        bytes.extend_from_slice(&mono);
        corpus.add(format!("wav/{name}.wav"), &bytes, expect);
    }
    corpus.add(
        "wav/data-0-bytes.wav",
        &wav_header(16_000, 1, 16, 1, 0),
        Expect::Reported,
    );
    let mut nan = tone(16_000, 1, 2.0, 500.0, 0.5);
    for (i, x) in nan.iter_mut().enumerate().step_by(7) {
        *x = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][i % 3];
    }
    let nan_path = root.join("wav/nan-and-inf.wav");
    write_wav(&nan_path, 16_000, 1, Sample::Float, &nan);
    corpus.cases.push((nan_path, Expect::Damaged));

    let mut aiff_rate = fs::read(&aiff).expect("aiff");
    // The COMM chunk's 80-bit rate (bytes 28..38): exponent 16383 + 1000, about 1e301 Hz.
    aiff_rate[28..30].copy_from_slice(&(16383u16 + 1000).to_be_bytes());
    corpus.add("aiff/rate-1e301.aiff", &aiff_rate, Expect::Reported);
    corpus.add(
        "mp3/text.mp3",
        b"this is not an mp3 file\n",
        Expect::Reported,
    );

    add_file_system_cases(&mut corpus, &formats[0].1);
    corpus
}

/// A folder named like audio, a locked file, symlink loops, a dangling link, a FIFO and a name
/// that is not UTF-8.
fn add_file_system_cases(corpus: &mut Corpus, good_wav: &[u8]) {
    let fs_dir = corpus.root.join("fs");
    corpus.add("fs/x.wav/inside.wav", good_wav, Expect::Indexed);
    let locked = corpus.add("fs/locked.wav", good_wav, Expect::Reported);
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).expect("chmod");
    std::os::unix::fs::symlink(fs_dir.join("loop-b.wav"), fs_dir.join("loop-a.wav")).expect("link");
    std::os::unix::fs::symlink(fs_dir.join("loop-a.wav"), fs_dir.join("loop-b.wav")).expect("link");
    corpus
        .cases
        .push((fs_dir.join("loop-a.wav"), Expect::Reported));
    corpus
        .cases
        .push((fs_dir.join("loop-b.wav"), Expect::Reported));
    std::os::unix::fs::symlink(&fs_dir, fs_dir.join("folder-loop")).expect("link");
    std::os::unix::fs::symlink(fs_dir.join("gone.wav"), fs_dir.join("dangling.wav")).expect("link");
    corpus
        .cases
        .push((fs_dir.join("dangling.wav"), Expect::Reported));
    let fifo = fs_dir.join("fifo.wav");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    corpus.cases.push((fifo, Expect::Reported));
    let latin1 = fs_dir.join(OsStr::from_bytes(b"caf\xe9 \xff.wav"));
    fs::write(&latin1, good_wav).expect("write non-UTF-8 name");
    corpus.cases.push((latin1, Expect::Indexed));
}

/// What one `earshot index` run did.
struct Run {
    success: bool,
    stderr: String,
    /// Peak resident memory of the process, bytes.
    peak_rss: u64,
    elapsed: Duration,
}

/// Runs `earshot index --db DB ROOT`, as an unprivileged user when the tests run as root (so
/// that file permissions apply).
fn index(db: &Path, root: &Path) -> Run {
    let args = [
        OsStr::new("index"),
        OsStr::new("--db"),
        db.as_os_str(),
        root.as_os_str(),
    ];
    run_measured(&args, &db.with_extension("log"), true)
}

/// Runs `earshot ARGS` with a time limit, stderr to `log`, under GNU time for its peak memory.
/// (`wait4` on a child spawned from this process would not do: Linux counts the spawning
/// process's own peak into the child's, and this test process holds other tests' data.)
fn run_measured(args: &[&OsStr], log: &Path, unprivileged: bool) -> Run {
    const PEAK: &str = "EARSHOT_TEST_PEAK_RSS_KB=";
    let mut command = Command::new("/usr/bin/time");
    command
        .arg("-f")
        .arg(format!("{PEAK}%M"))
        .arg(env!("CARGO_BIN_EXE_earshot"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(fs::File::create(log).expect("log file"))
        .process_group(0);
    // SAFETY: geteuid has no preconditions.
    if unprivileged && unsafe { libc::geteuid() } == 0 {
        command.uid(65534).gid(65534);
    }
    let started = Instant::now();
    let mut child = command
        .spawn()
        .expect("run earshot under /usr/bin/time (Debian package `time`)");
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll earshot") {
            break status;
        }
        if started.elapsed() > RUN_LIMIT {
            // SAFETY: killing the process group of our own child.
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            panic!("earshot {args:?} hung (over {RUN_LIMIT:?})");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = fs::read_to_string(log).expect("read log");
    let peak_kb: u64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix(PEAK))
        .and_then(|kb| kb.trim().parse().ok())
        .expect("GNU time's peak memory line");
    Run {
        success: status.success(),
        stderr,
        peak_rss: peak_kb * 1024,
        elapsed: started.elapsed(),
    }
}

/// Folders an unprivileged user can read, and a database folder it can write.
fn open_up(dir: &Path) {
    for entry in walkdir::WalkDir::new(dir).into_iter().flatten() {
        if entry.file_type().is_dir() {
            let _ = fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o777));
        }
    }
}

#[test]
fn every_broken_file_is_reported_once_and_the_rest_indexed() {
    if !ffmpeg_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let corpus = build_corpus(dir.path());
    let db = dir.path().join("db");
    fs::create_dir_all(&db).expect("db folder");
    open_up(dir.path());
    let run = index(&db, &corpus.root);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert!(run.success, "exit status not 0:\n{}", run.stderr);
    let records = format::load(&db).expect("the index loads").files;
    let indexed: Vec<PathBuf> = records.iter().map(|f| f.path.clone()).collect();
    let mut outcome = Vec::new();
    let (mut unreadable, mut damaged) = (Vec::new(), Vec::new());
    let mut section = &mut unreadable;
    for line in run.stderr.lines() {
        if line.starts_with("cannot read (") {
            section = &mut unreadable;
        } else if line.starts_with("indexed with problems (") {
            section = &mut damaged;
        } else {
            section.push(line);
        }
    }
    for (path, expect) in &corpus.cases {
        let shown = format!("  {}: ", path.display());
        let named = |lines: &[&str]| -> Vec<String> {
            let of_path = lines.iter().filter(|l| l.starts_with(&shown));
            of_path.map(|l| l.to_string()).collect()
        };
        let (unreadable, damaged) = (named(&unreadable), named(&damaged));
        let is_indexed = indexed.contains(path);
        let ok = expect.met(unreadable.len(), damaged.len(), is_indexed);
        assert!(
            ok,
            "{}: expected {expect:?}, indexed {is_indexed}, reported {unreadable:?}, damaged {damaged:?}\n{}",
            path.display(),
            run.stderr
        );
        for r in unreadable.iter().chain(&damaged) {
            assert!(r.len() > shown.len() + 5, "no reason given: {r}");
        }
        // The index keeps the reason, for the app and `info` to show later.
        let kept = records.iter().find(|f| f.path == *path).map(|f| &f.damage);
        assert_eq!(
            kept.is_some_and(Option::is_some),
            !damaged.is_empty(),
            "{}: the index keeps its damage exactly when it was named",
            path.display()
        );
        outcome.push(match (is_indexed, damaged.is_empty()) {
            (false, _) => "reported",
            (true, false) => "indexed with problems",
            (true, true) => "indexed",
        });
    }
    assert!(
        run.stderr.contains("folder-loop"),
        "the folder loop is reported"
    );
    let info = earshot(&[OsStr::new("info"), OsStr::new("--db"), db.as_os_str()]);
    let info = String::from_utf8_lossy(&info.stdout);
    let listed = info.lines().filter(|l| l.starts_with("damaged ")).count();
    let flagged = outcome.iter().filter(|o| **o == "indexed with problems");
    assert_eq!(
        listed,
        flagged.count(),
        "`info` lists the damaged files:\n{info}"
    );
    let unnamed: Vec<String> = (corpus.cases.iter().zip(&outcome))
        .filter(|((_, expect), o)| **o == "indexed" && *expect != Expect::Indexed)
        .map(|((path, _), _)| {
            path.strip_prefix(&corpus.root)
                .unwrap_or(path)
                .display()
                .to_string()
        })
        .collect();
    eprintln!("damaged, indexed without a word: {unnamed:?}");
    let count = |what: &str| outcome.iter().filter(|o| **o == what).count();
    let reported = count("reported");
    eprintln!(
        "hostile corpus: {} cases, {} indexed, {} of them with problems named, {reported} reported, in {:.1} s, peak RSS {:.0} MB",
        corpus.cases.len(),
        outcome.len() - reported,
        count("indexed with problems"),
        run.elapsed.as_secs_f64(),
        run.peak_rss as f64 / 1e6
    );
    let broken = (corpus.cases.iter())
        .filter(|(_, e)| *e != Expect::Indexed)
        .count();
    eprintln!(
        "of {broken} broken files, {} named in `earshot index`'s output ({} unreadable, {} indexed with problems)",
        reported + count("indexed with problems"),
        reported,
        count("indexed with problems"),
    );
    assert!(corpus.cases.len() >= 30);
}

/// Ten hours of 16 kHz silence: a sparse file on disk, streamed through decoding and encoding.
#[test]
fn a_ten_hour_file_is_indexed_in_bounded_memory() {
    const HOURS: u32 = 10;
    let dir = tempfile::tempdir().expect("temp dir");
    let folder = dir.path().join("long");
    fs::create_dir_all(&folder).expect("folder");
    let data_len = HOURS * 3600 * 16_000 * 2;
    let path = folder.join("ten-hours.wav");
    fs::write(&path, wav_header(16_000, 1, 16, 1, data_len)).expect("header");
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(44 + u64::from(data_len)))
        .expect("extend sparse file");
    let db = dir.path().join("db");
    fs::create_dir_all(&db).expect("db folder");
    open_up(dir.path());
    let run = index(&db, &folder);
    assert!(run.success, "{}", run.stderr);
    let index = format::load(&db).expect("the index loads");
    let hours = index.total_duration_s() / 3600.0;
    assert!((hours - f64::from(HOURS)).abs() < 0.01, "{hours} h indexed");
    eprintln!(
        "ten-hour file: indexed in {:.1} s ({:.0}x real time), peak RSS {:.0} MB",
        run.elapsed.as_secs_f64(),
        f64::from(HOURS) * 3600.0 / run.elapsed.as_secs_f64(),
        run.peak_rss as f64 / 1e6
    );
    // The decoded signal alone would be 2.3 GB of f32.
    assert!(
        run.peak_rss < 600 << 20,
        "peak RSS {} MB",
        run.peak_rss >> 20
    );
}

/// Ten million 64-bit segments over a thousand files: the index opens (`earshot info`) streaming
/// its file, so memory holds the index once, not also the file's bytes.
#[test]
fn an_index_of_ten_million_segments_opens_in_memory_the_size_of_its_contents() {
    use earshot::index::{Index, ModeIndex, SegmentRef};
    use earshot::library::FileRecord;
    use earshot::model::{EncoderInfo, EncoderInput, Mode};

    const SEGMENTS: u32 = 10_000_000;
    const FILES: u32 = 1000;
    let dir = tempfile::tempdir().expect("temp dir");
    let info = EncoderInfo {
        name: "synthetic".into(),
        weights_hash: String::new(),
        bits: 64,
        embedding_dim: 0,
    };
    let mut index = Index::new();
    let mut data = ModeIndex::new(
        Mode::Fingerprint,
        info,
        EncoderInput::log_mel(Mode::Fingerprint),
    );
    let mut rng = earshot::model::SeededRng::new(3);
    data.codes = (0..SEGMENTS).map(|_| rng.next_u64()).collect();
    data.segments = (0..SEGMENTS)
        .map(|i| SegmentRef {
            file: i % FILES,
            start_frame: i / FILES * 4,
            n_frames: 96,
        })
        .collect();
    index.files = (0..FILES)
        .map(|f| FileRecord {
            path: PathBuf::from(format!("/archive/{f}.flac")),
            size: 0,
            modified: None,
            duration_s: 400.0,
            label: String::new(),
            damage: None,
        })
        .collect();
    index.modes.insert(Mode::Fingerprint, data);
    let db = dir.path().join("db");
    format::save(&index, &db).expect("save");
    drop(index);
    let file_bytes = fs::metadata(Index::index_path(&db))
        .expect("index file")
        .len();
    // `--json`: the figures of the file alone (the text report also builds the bucket tables).
    let args = [
        OsStr::new("info"),
        OsStr::new("--json"),
        OsStr::new("--db"),
        db.as_os_str(),
    ];
    let run = run_measured(&args, &dir.path().join("info.log"), false);
    assert!(run.success, "{}", run.stderr);
    eprintln!(
        "10M-segment index: {:.0} MB file, opened by `earshot info --json` in {:.1} s, peak RSS {:.0} MB",
        file_bytes as f64 / 1e6,
        run.elapsed.as_secs_f64(),
        run.peak_rss as f64 / 1e6
    );
    // Reading the file whole before parsing it would need twice its size.
    assert!(
        (run.peak_rss as f64) < file_bytes as f64 * 1.5,
        "peak RSS {} MB for a {} MB index",
        run.peak_rss >> 20,
        file_bytes >> 20
    );
}
