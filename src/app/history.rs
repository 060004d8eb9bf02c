//! The files searched with, for Back and Forward (Alt+Left, Alt+Right), as in a browser: going
//! back and then searching with something new drops what was ahead.

use std::path::PathBuf;

/// A query that can be made again: a file, and the part of it searched with.
#[derive(Debug, Clone, PartialEq)]
pub struct PastQuery {
    pub path: PathBuf,
    /// Seconds from the file's start; the whole file when `None`.
    pub region: Option<(f64, f64)>,
}

#[derive(Debug, Default)]
pub struct QueryHistory {
    entries: Vec<PastQuery>,
    /// Position of the query shown in `entries`.
    at: usize,
}

impl QueryHistory {
    /// A new query searched with: it becomes the latest, after the one shown.
    pub fn visit(&mut self, query: PastQuery) {
        if self.entries.get(self.at) == Some(&query) {
            return;
        }
        if !self.entries.is_empty() {
            self.entries.truncate(self.at + 1);
        }
        self.entries.push(query);
        self.at = self.entries.len() - 1;
    }

    pub fn can_go_back(&self) -> bool {
        self.at > 0
    }

    pub fn can_go_forward(&self) -> bool {
        self.at + 1 < self.entries.len()
    }

    pub fn back(&mut self) -> Option<PastQuery> {
        self.can_go_back().then(|| {
            self.at -= 1;
            self.entries[self.at].clone()
        })
    }

    pub fn forward(&mut self) -> Option<PastQuery> {
        self.can_go_forward().then(|| {
            self.at += 1;
            self.entries[self.at].clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(name: &str) -> PastQuery {
        PastQuery {
            path: PathBuf::from(name),
            region: None,
        }
    }

    #[test]
    fn back_forward_and_a_new_query_drops_what_was_ahead() {
        let mut h = QueryHistory::default();
        assert_eq!(h.back(), None);
        for name in ["a", "b", "c"] {
            h.visit(q(name));
        }
        h.visit(q("c")); // searching again with the same clip adds nothing
        assert_eq!(h.back(), Some(q("b")));
        assert_eq!(h.back(), Some(q("a")));
        assert_eq!(h.back(), None);
        assert_eq!(h.forward(), Some(q("b")));
        h.visit(q("d"));
        assert_eq!(h.forward(), None);
        assert_eq!(h.back(), Some(q("b")));
        assert_eq!(h.back(), Some(q("a")));
    }
}
