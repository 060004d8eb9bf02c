//! Results written for the tools people open them in (the app's Export menu and batch search,
//! `earshot query --export`):
//!
//! - a CSV, one row per hit, with the marks;
//! - a Raven selection table (Cornell's Raven Pro and Lite, bioacoustics' convention): tab-separated,
//!   one selection per hit, each naming its file (`Begin Path`, `File Offset (s)`);
//! - Audacity label tracks: Audacity imports one label file onto one audio file, so a label file
//!   per audio file, `start<TAB>end<TAB>label` per hit.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::model::Mode;
use crate::search::Hit;

/// The band a Raven selection spans: all of it, up to the Nyquist frequency of 48 kHz audio
/// (Raven shows what the file has).
const RAVEN_HIGH_FREQ_HZ: f64 = 24_000.0;

#[derive(Debug, thiserror::Error)]
#[error("{}: cannot write the export: {source}", path.display())]
pub struct ExportError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// A hit as exported, with the query that found it and the user's mark.
pub struct ExportRow<'a> {
    /// The query's name.
    pub query: &'a str,
    pub hit: &'a Hit,
    /// Marked relevant, not relevant, or not marked.
    pub relevant: Option<bool>,
}

impl ExportRow<'_> {
    fn mark(&self) -> &'static str {
        match self.relevant {
            Some(true) => "yes",
            Some(false) => "no",
            None => "",
        }
    }
}

/// The formats results are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Raven,
    Audacity,
}

/// `rows` written in `format` at `out`: a file, or for Audacity a folder of label files.
pub fn write(
    out: &Path,
    format: Format,
    mode: Mode,
    rows: &[ExportRow],
) -> Result<(), ExportError> {
    match format {
        Format::Csv => write_csv(out, mode, rows),
        Format::Raven => write_raven(out, rows),
        Format::Audacity => write_audacity(out, rows).map(|_| ()),
    }
}

/// `rows` written in `format` to a new file in `dir` (created) named from `stem` (for Audacity, a
/// new folder of label files); returns where.
pub fn write_new(
    dir: &Path,
    stem: &str,
    format: Format,
    mode: Mode,
    rows: &[ExportRow],
) -> Result<PathBuf, ExportError> {
    std::fs::create_dir_all(dir).map_err(|source| ExportError {
        path: dir.to_owned(),
        source,
    })?;
    let suffix = match format {
        Format::Csv => ".csv",
        Format::Raven => ".raven.txt",
        Format::Audacity => "-audacity",
    };
    let out = free_path(dir, stem, suffix);
    write(&out, format, mode, rows).map(|()| out)
}

/// A file name stem for an export of `query`'s results in `mode`, safe on every file system.
pub fn stem(query: &str, mode: Mode) -> String {
    format!("{}-{}", safe_stem(query), mode.name())
}

/// The first `dir/<stem>-N<suffix>` that does not exist yet (N from 1).
pub fn free_path(dir: &Path, stem: &str, suffix: &str) -> PathBuf {
    (1..)
        .map(|n| dir.join(format!("{stem}-{n}{suffix}")))
        .find(|p| !p.exists())
        .unwrap_or_else(|| dir.join(format!("{stem}{suffix}")))
}

fn safe_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn write_file(path: &Path, text: &str) -> Result<(), ExportError> {
    let err = |source| ExportError {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::create(path).map_err(err)?;
    file.write_all(text.as_bytes()).map_err(err)?;
    file.flush().map_err(err)
}

/// The hits and marks as a CSV at `path`.
pub fn write_csv(path: &Path, mode: Mode, rows: &[ExportRow]) -> Result<(), ExportError> {
    let err = |e: csv::Error| ExportError {
        path: path.to_owned(),
        source: e.into(),
    };
    let mut out = csv::Writer::from_path(path).map_err(err)?;
    out.write_record([
        "query",
        "mode",
        "rank",
        "path",
        "label",
        "start_s",
        "end_s",
        "hamming",
        "score",
        "correlation",
        "relevant",
    ])
    .map_err(err)?;
    for r in rows {
        let h = r.hit;
        out.write_record([
            r.query,
            mode.name(),
            &h.rank.to_string(),
            &h.path.to_string_lossy(),
            &h.label,
            &format!("{:.3}", h.start_s),
            &format!("{:.3}", h.end_s),
            &h.hamming.to_string(),
            &format!("{:.4}", h.score),
            &h.correlation.map_or(String::new(), |c| format!("{c:.4}")),
            r.mark(),
        ])
        .map_err(err)?;
    }
    out.flush().map_err(|e| ExportError {
        path: path.to_owned(),
        source: e,
    })
}

/// Tabs and line breaks would split a field of a tab-separated line.
fn field(text: &str) -> String {
    text.replace(['\t', '\n', '\r'], " ")
}

/// The hits as a Raven selection table at `path` (Raven reads `.txt`).
pub fn write_raven(path: &Path, rows: &[ExportRow]) -> Result<(), ExportError> {
    let mut text = String::from(
        "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tBegin Path\tFile Offset (s)\tQuery\tRank\tLabel\tScore\tRelevant\n",
    );
    for (n, r) in rows.iter().enumerate() {
        let h = r.hit;
        let start = h.start_s.max(0.0);
        text.push_str(&format!(
            "{}\tSpectrogram 1\t1\t{start:.3}\t{:.3}\t0.0\t{RAVEN_HIGH_FREQ_HZ:.1}\t{}\t{start:.3}\t{}\t{}\t{}\t{:.4}\t{}\n",
            n + 1,
            h.end_s.max(start),
            field(&h.path.to_string_lossy()),
            field(r.query),
            h.rank,
            field(&h.label),
            h.score,
            r.mark(),
        ));
    }
    write_file(path, &text)
}

/// The hits as Audacity label tracks in the folder `dir` (created): one `<file name>.txt` per
/// audio file, its hits in time order. Returns the label files written.
pub fn write_audacity(dir: &Path, rows: &[ExportRow]) -> Result<Vec<PathBuf>, ExportError> {
    std::fs::create_dir_all(dir).map_err(|source| ExportError {
        path: dir.to_owned(),
        source,
    })?;
    let mut by_file: Vec<(&Path, Vec<&ExportRow>)> = Vec::new();
    for r in rows {
        match by_file.iter_mut().find(|(p, _)| *p == r.hit.path) {
            Some((_, hits)) => hits.push(r),
            None => by_file.push((&r.hit.path, vec![r])),
        }
    }
    let mut written = Vec::new();
    for (audio, mut hits) in by_file {
        hits.sort_by(|a, b| a.hit.start_s.total_cmp(&b.hit.start_s));
        let name = audio
            .file_name()
            .map_or_else(|| "labels".into(), |n| safe_stem(&n.to_string_lossy()));
        let path = free_path(dir, &name, ".txt");
        let text: String = hits
            .iter()
            .map(|r| {
                let h = r.hit;
                let mark = match r.relevant {
                    Some(true) => " relevant",
                    Some(false) => " not relevant",
                    None => "",
                };
                format!(
                    "{:.6}\t{:.6}\t#{} {} {:.3}{mark}\n",
                    h.start_s.max(0.0),
                    h.end_s.max(h.start_s.max(0.0)),
                    h.rank,
                    field(r.query),
                    h.score
                )
            })
            .collect();
        write_file(&path, &text)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(rank: usize, path: &str, start_s: f64, end_s: f64) -> Hit {
        Hit {
            rank,
            path: PathBuf::from(path),
            label: "dog".into(),
            start_s,
            end_s,
            hamming: 3,
            score: 0.9,
            correlation: None,
            found: None,
            audio_check: None,
            codes: None,
        }
    }

    #[test]
    fn raven_and_audacity_files_hold_every_hit_where_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let hits = [
            hit(1, "/rec/dawn.wav", 12.5, 15.5),
            hit(2, "/rec/dusk.wav", 3.0, 6.0),
            hit(3, "/rec/dawn.wav", 1.25, 4.25),
        ];
        let rows: Vec<ExportRow> = hits
            .iter()
            .enumerate()
            .map(|(i, hit)| ExportRow {
                query: "bark\tclip",
                hit,
                relevant: (i == 0).then_some(true),
            })
            .collect();
        let raven = dir.path().join("table.txt");
        write_raven(&raven, &rows).unwrap();
        let text = std::fs::read_to_string(&raven).unwrap();
        let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
        assert_eq!(lines.len(), 4);
        assert!(lines.iter().all(|l| l.len() == lines[0].len()));
        assert_eq!(lines[0][3], "Begin Time (s)");
        assert_eq!(
            &lines[1][..5],
            ["1", "Spectrogram 1", "1", "12.500", "15.500"]
        );
        assert_eq!(lines[1][7], "/rec/dawn.wav");
        assert_eq!(lines[1][9], "bark clip");
        assert_eq!(lines[1][13], "yes");

        let labels = write_audacity(&dir.path().join("audacity"), &rows).unwrap();
        assert_eq!(labels.len(), 2);
        let dawn = std::fs::read_to_string(&labels[0]).unwrap();
        // One label file per audio file, its hits in time order.
        assert!(labels[0].ends_with("dawn_wav-1.txt"), "{labels:?}");
        let starts: Vec<&str> = dawn
            .lines()
            .map(|l| l.split('\t').next().unwrap())
            .collect();
        assert_eq!(starts, ["1.250000", "12.500000"]);
        assert!(dawn.lines().nth(1).unwrap().ends_with("relevant"));
    }
}
