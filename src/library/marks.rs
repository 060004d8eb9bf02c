//! The relevant / not-relevant marks a user sets on results, kept per library in
//! [`MARKS_FILE`] beside its index, so that they outlive the query they were set on and can
//! teach the library's codes (`earshot learn --marks`, the app's "Learn codes from these
//! labels").
//!
//! As labels, the marks say (see [`Marks::labelled_moments`]):
//! - a moment marked relevant to a query belongs to that query's sound, labelled by the
//!   query's name;
//! - a moment marked not relevant, and relevant to no query, belongs to
//!   [`NOT_RELEVANT_LABEL`]: what the user has ruled out is a class of its own that codes learn
//!   to keep away from the rest.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The marks' file in a library's folder.
pub const MARKS_FILE: &str = "marks.json";
/// Written into every marks file; a newer one is refused rather than misread.
pub const MARKS_VERSION: u32 = 1;
/// The label of moments marked not relevant to every query they were judged for.
pub const NOT_RELEVANT_LABEL: &str = "(not relevant)";
/// Two marks of one file whose starts are closer than this (seconds) are of the same moment:
/// a query searched again finds its hits at the same times, give or take rounding.
const SAME_MOMENT_S: f64 = 0.005;

#[derive(Debug, thiserror::Error)]
pub enum MarksError {
    #[error("{}: cannot read the marks: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: the marks are damaged ({source}); move the file away to start again", path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{}: marks of version {found}, newer than this Earshot reads ({MARKS_VERSION}); update Earshot", path.display())]
    Version { path: PathBuf, found: u32 },
    #[error("{}: cannot save the marks: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One judgement: the moment `start_s..end_s` of `path`, found for the query `query`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mark {
    /// The query's name (its clip's name: a file name, or the recording's).
    pub query: String,
    pub path: PathBuf,
    pub start_s: f64,
    pub end_s: f64,
    pub relevant: bool,
}

impl Mark {
    fn is_of(&self, query: &str, path: &Path, start_s: f64) -> bool {
        self.query == query && self.path == path && (self.start_s - start_s).abs() < SAME_MOMENT_S
    }
}

/// A moment of a file and the label the marks give it.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledMoment {
    pub label: String,
    pub path: PathBuf,
    pub start_s: f64,
    pub end_s: f64,
}

/// Every mark of one library, in the order set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Marks {
    version: u32,
    marks: Vec<Mark>,
}

impl Marks {
    /// The marks saved in the library folder `db` (none when it has no marks file).
    pub fn load(db: &Path) -> Result<Self, MarksError> {
        let path = db.join(MARKS_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => return Err(MarksError::Read { path, source }),
        };
        let marks: Self = serde_json::from_str(&text).map_err(|source| MarksError::Parse {
            path: path.clone(),
            source,
        })?;
        if marks.version > MARKS_VERSION {
            return Err(MarksError::Version {
                path,
                found: marks.version,
            });
        }
        Ok(marks)
    }

    /// Saves the marks in `db` (atomically: a crash leaves the old marks or the new).
    pub fn save(&self, db: &Path) -> Result<(), MarksError> {
        let path = db.join(MARKS_FILE);
        let saved = Self {
            version: MARKS_VERSION,
            marks: self.marks.clone(),
        };
        let write = |source| MarksError::Write {
            path: path.clone(),
            source,
        };
        let json = serde_json::to_vec_pretty(&saved).map_err(|e| write(e.into()))?;
        std::fs::create_dir_all(db).map_err(write)?;
        crate::fsutil::write_atomic(&path, &json).map_err(write)
    }

    pub fn len(&self) -> usize {
        self.marks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.marks.is_empty()
    }

    /// The judgement of `path` at `start_s` for `query`, if one was made.
    pub fn get(&self, query: &str, path: &Path, start_s: f64) -> Option<bool> {
        self.marks
            .iter()
            .find(|m| m.is_of(query, path, start_s))
            .map(|m| m.relevant)
    }

    /// Sets the judgement of a moment for a query (replacing an earlier one).
    pub fn set(&mut self, moment: Mark) {
        self.clear(&moment.query, &moment.path, moment.start_s);
        self.marks.push(moment);
    }

    pub fn clear(&mut self, query: &str, path: &Path, start_s: f64) {
        self.marks.retain(|m| !m.is_of(query, path, start_s));
    }

    /// The moments the marks label (see the module's rules), one per marked moment and label.
    pub fn labelled_moments(&self) -> Vec<LabelledMoment> {
        let relevant_somewhere = |m: &Mark| {
            self.marks.iter().any(|r| {
                r.relevant && r.path == m.path && (r.start_s - m.start_s).abs() < SAME_MOMENT_S
            })
        };
        let mut moments: Vec<LabelledMoment> = Vec::new();
        for m in &self.marks {
            let label = match m.relevant {
                true => m.query.clone(),
                false if relevant_somewhere(m) => continue,
                false => NOT_RELEVANT_LABEL.to_string(),
            };
            let moment = LabelledMoment {
                label,
                path: m.path.clone(),
                start_s: m.start_s,
                end_s: m.end_s,
            };
            if !moments.contains(&moment) {
                moments.push(moment);
            }
        }
        moments
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(query: &str, file: &str, start_s: f64, relevant: bool) -> Mark {
        Mark {
            query: query.into(),
            path: PathBuf::from(file),
            start_s,
            end_s: start_s + 1.0,
            relevant,
        }
    }

    #[test]
    fn a_moment_has_one_judgement_per_query() {
        let mut marks = Marks::default();
        marks.set(mark("owl", "a.wav", 2.0, true));
        marks.set(mark("owl", "a.wav", 2.001, false));
        marks.set(mark("frog", "a.wav", 2.0, true));
        assert_eq!(marks.len(), 2);
        assert_eq!(marks.get("owl", Path::new("a.wav"), 2.0), Some(false));
        assert_eq!(marks.get("frog", Path::new("a.wav"), 2.0), Some(true));
        marks.clear("owl", Path::new("a.wav"), 2.0);
        assert_eq!(marks.get("owl", Path::new("a.wav"), 2.0), None);
    }

    #[test]
    fn marks_label_by_query_and_rule_out_the_rest() {
        let mut marks = Marks::default();
        marks.set(mark("owl", "a.wav", 0.0, true));
        marks.set(mark("owl", "b.wav", 3.0, false));
        marks.set(mark("owl", "c.wav", 1.0, false));
        marks.set(mark("frog", "c.wav", 1.0, true));
        let labels: Vec<(String, String)> = marks
            .labelled_moments()
            .into_iter()
            .map(|m| (m.label, m.path.display().to_string()))
            .collect();
        assert_eq!(
            labels,
            [
                ("owl".to_string(), "a.wav".to_string()),
                (NOT_RELEVANT_LABEL.to_string(), "b.wav".to_string()),
                ("frog".to_string(), "c.wav".to_string()),
            ]
        );
    }

    #[test]
    fn marks_are_saved_with_their_version_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Marks::load(dir.path()).unwrap().is_empty());
        let mut marks = Marks::default();
        marks.set(mark("owl", "a.wav", 0.0, true));
        marks.save(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(MARKS_FILE)).unwrap();
        assert!(text.contains("\"version\": 1"), "{text}");
        let read = Marks::load(dir.path()).unwrap();
        assert_eq!(read.get("owl", Path::new("a.wav"), 0.0), Some(true));
        std::fs::write(
            dir.path().join(MARKS_FILE),
            "{\"version\": 99, \"marks\": []}",
        )
        .unwrap();
        let err = Marks::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("marks.json") && err.contains("update Earshot"),
            "{err}"
        );
    }
}
