//! What `earshot --version` and the app's About window say: the version, the models in use and
//! where they come from, and the licenses of the data the shipped models were trained on.

use crate::model::default_encoders;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const LICENSE: &str = env!("CARGO_PKG_LICENSE");

/// The data behind the shipped models, with its license. No audio is bundled, only weights
/// trained on it.
pub const DATA_LICENSES: &[(&str, &str)] = &[
    (
        "ESC-50 (K. J. Piczak), training data of the shipped events and fingerprint models",
        "CC BY-NC 3.0",
    ),
    (
        "Tuxemon music tracks, training data of the shipped fingerprint model",
        "CC BY 3.0 / CC BY-SA 3.0 / CC BY-SA 4.0, per track",
    ),
    (
        "household noise and room impulse responses, distortions for the fingerprint model",
        "CC0 and Voxengo (royalty-free)",
    ),
];

/// The lines of the report, without the version line.
pub fn report_lines() -> Vec<String> {
    let mut lines = vec!["models:".to_string()];
    for (mode, name, place) in default_encoders() {
        lines.push(format!("  {:<12} {name} ({place})", mode.name()));
    }
    lines.push(format!("license: {LICENSE}"));
    lines.push("data behind the shipped models:".to_string());
    for (data, license) in DATA_LICENSES {
        lines.push(format!("  {data}: {license}"));
    }
    lines
}

/// `earshot --version`.
pub fn long_version() -> String {
    let mut text = VERSION.to_string();
    for line in report_lines() {
        text.push('\n');
        text.push_str(&line);
    }
    text
}
