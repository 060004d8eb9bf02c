//! What the app remembers between runs. Every struct is `#[serde(default)]`, so a state saved by
//! an older version (missing fields, or none at all) loads with defaults instead of failing.
//!
//! Settings live in `settings.json` in the app's data folder, written atomically
//! ([`crate::fsutil::write_atomic`]): eframe's own storage rewrites its file in place, so a crash
//! or a kill while it saves would lose every library. eframe's storage is still read once, for
//! states saved before the file existed.

use std::path::{Path, PathBuf};

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
    /// Similar sounds: the most moments of one file among the results (every similar moment
    /// of a long recording, not only its best).
    pub moments_per_file: usize,
    pub show_inspector: bool,
    /// The similar-sounds model chosen in the Models window (an installed model's name); the
    /// default one when `None`.
    pub events_model: Option<String>,
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
            moments_per_file: 1,
            show_inspector: true,
            events_model: None,
        }
    }
}

impl Settings {
    pub fn library(&self) -> Option<&LibrarySettings> {
        self.libraries.get(self.selected_library)
    }

    /// Reads `data_dir/settings.json`, else a state eframe stored for an older version, else the
    /// defaults. A file that cannot be parsed is kept beside as `settings.json.unreadable` and
    /// the reason returned, so nothing the user had is silently thrown away.
    pub fn load(data_dir: &Path, storage: Option<&dyn eframe::Storage>) -> (Self, Option<String>) {
        let path = settings_path(data_dir);
        crate::fsutil::remove_stale_temp_files(&path);
        let older = || {
            storage
                .and_then(|s| eframe::get_value::<Settings>(s, STORAGE_KEY))
                .unwrap_or_default()
        };
        match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(settings) => (settings, None),
                Err(e) => {
                    let kept = path.with_extension("json.unreadable");
                    let _ = std::fs::rename(&path, &kept);
                    let reason = format!(
                        "{}: unreadable settings ({e}); started with defaults, the file is kept as {}",
                        path.display(),
                        kept.display()
                    );
                    (Self::default(), Some(reason))
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (older(), None),
            Err(e) => (
                Self::default(),
                Some(format!("{}: cannot read settings: {e}", path.display())),
            ),
        }
    }

    /// Writes `data_dir/settings.json` atomically.
    pub fn save(&self, data_dir: &Path) -> Result<(), String> {
        let path = settings_path(data_dir);
        let json = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(data_dir)
            .and_then(|()| crate::fsutil::write_atomic(&path, &json))
            .map_err(|e| format!("{}: cannot save settings: {e}", path.display()))
    }
}

pub fn settings_path(data_dir: &Path) -> PathBuf {
    data_dir.join("settings.json")
}

/// A library: folders of audio with one index.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LibrarySettings {
    pub name: String,
    pub folders: Vec<PathBuf>,
    /// The library's own folder: its index, unless `server` keeps it, and its marks.
    pub db: PathBuf,
    /// A `path,label` CSV whose labels the files take instead of their folders' names.
    pub labels: Option<PathBuf>,
    /// `milvus://HOST:PORT[/PREFIX]`: the index is kept on that Milvus server instead.
    pub server: Option<PathBuf>,
}

impl LibrarySettings {
    /// Where the index is: the server when one is set, else the library's folder.
    pub fn index_db(&self) -> &Path {
        self.server.as_deref().unwrap_or(&self.db)
    }
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

    #[test]
    fn settings_round_trip_through_the_data_folder() {
        let dir = tempfile::tempdir().unwrap();
        let s = Settings {
            mode: Mode::Fingerprint,
            ..Settings::default()
        };
        s.save(dir.path()).unwrap();
        assert_eq!(Settings::load(dir.path(), None), (s, None));
    }

    #[test]
    fn an_unreadable_settings_file_is_kept_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(settings_path(dir.path()), b"{\"libraries\": [").unwrap();
        let (s, problem) = Settings::load(dir.path(), None);
        assert_eq!(s, Settings::default());
        assert!(problem.unwrap().contains("settings.json"));
        assert!(dir.path().join("settings.json.unreadable").exists());
    }
}
