use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use earshot::cli::Cli;

fn main() -> ExitCode {
    keep_freed_memory();
    let matches = Cli::command()
        // Leaked once: clap wants a static string, and the process ends after printing it.
        .long_version(&*earshot::about::long_version().leak())
        .get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        None => run_app(cli.open),
        Some(command) => earshot::cli::run(command),
    };
    result.unwrap_or_else(|err| {
        // A closed pipe (`earshot scan DIR | head`) is the reader's choice, not an error.
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
        {
            return ExitCode::SUCCESS;
        }
        eprintln!("error: {}", chain_text(&err));
        ExitCode::FAILURE
    })
}

/// The error and its causes joined by ": ", leaving out a cause whose text the message before it
/// already includes (library errors name their file and quote the I/O error they wrap).
fn chain_text(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain().map(ToString::to_string) {
        if text.is_empty() {
            text = cause;
        } else if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}

#[cfg(feature = "gui")]
fn run_app(open: Vec<std::path::PathBuf>) -> anyhow::Result<ExitCode> {
    earshot::app::run(open).map(|()| ExitCode::SUCCESS)
}

#[cfg(not(feature = "gui"))]
fn run_app(_open: Vec<std::path::PathBuf>) -> anyhow::Result<ExitCode> {
    anyhow::bail!(
        "this earshot was built without the desktop app (feature `gui`); run `earshot --help` for the commands"
    )
}

/// candle allocates a fresh buffer for every tensor operation. By default glibc hands freed
/// memory back to the kernel and faults it in again on the next operation, which cost a third of
/// the training time; keeping up to 1 GB of it (and allocating up to 32 MB from the heap) avoids
/// that.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters; it is called before any thread
    // starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}
