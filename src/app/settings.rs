//! What the app remembers between runs. Every struct is `#[serde(default)]`, so a state saved by
//! an older version (missing fields, or none at all) loads with defaults instead of failing.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::model::Mode;

/// The key under which eframe stores [`Settings`].
pub const STORAGE_KEY: &str = "earshot-settings-v1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub libraries: Vec<LibrarySettings>,
    /// Position in `libraries` of the library shown.
    pub selected_library: usize,
    pub mode: Mode,
    pub show_attention: bool,
    pub central_view: CentralView,
    /// Results per query.
    pub top: usize,
    pub show_inspector: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            libraries: Vec::new(),
            selected_library: 0,
            mode: Mode::Events,
            show_attention: true,
            central_view: CentralView::Results,
            top: 50,
            show_inspector: true,
        }
    }
}

impl Settings {
    pub fn library(&self) -> Option<&LibrarySettings> {
        self.libraries.get(self.selected_library)
    }

    /// Reads settings saved by any version: anything unreadable gives the defaults.
    pub fn from_storage(storage: Option<&dyn eframe::Storage>) -> Self {
        storage
            .and_then(|s| eframe::get_value::<Settings>(s, STORAGE_KEY))
            .unwrap_or_default()
    }
}

/// A library: folders of audio with one index.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LibrarySettings {
    pub name: String,
    pub folders: Vec<PathBuf>,
    /// The index folder.
    pub db: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum CentralView {
    #[default]
    Results,
    Map,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_state_loads_with_defaults() {
        let old = r#"{"libraries":[{"name":"field","folders":["/data"]}],"mode":"fingerprint"}"#;
        let s: Settings = serde_json::from_str(old).unwrap_or_default();
        assert_eq!(s.libraries[0].name, "field");
        assert_eq!(s.libraries[0].db, PathBuf::new());
        assert_eq!(s.mode, Mode::Fingerprint);
        assert_eq!(s.top, Settings::default().top);
    }
}
