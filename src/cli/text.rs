//! Progress bars on stderr, drawn only where someone watches.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar on stderr, drawn only when stderr is a terminal.
pub(crate) fn progress_bar(len: u64, template: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Prints an epoch's line above the bar and moves the bar on to the next epoch. Off a terminal
/// the bar is hidden, and so would its lines be: they go to stderr.
pub fn epoch_done(bar: &ProgressBar, epoch: usize, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
    bar.set_prefix((epoch + 1).to_string());
}
