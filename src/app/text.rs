//! How the app writes names and times: text its fonts can draw.

use std::path::Path;

pub use crate::text::{clock, count};

/// A file's name, as lists and titles show it.
pub fn file_name(path: &Path) -> String {
    drawable(&path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    ))
}

/// The whole path, for hover texts.
pub fn shown_path(path: &Path) -> String {
    drawable(&path.display().to_string())
}

/// Text the app's fonts can draw. A name that is not UTF-8 is shown with U+FFFD in place of its
/// bad bytes, and the bundled fonts have no glyph for it (egui would draw an empty box): `?`.
pub fn drawable(text: &str) -> String {
    text.replace('\u{FFFD}', "?")
}
