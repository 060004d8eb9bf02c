use std::process::ExitCode;

use clap::Parser;
use earshot::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => earshot::app::run().map(|()| ExitCode::SUCCESS),
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
        eprintln!("error: {err:#}");
        ExitCode::FAILURE
    })
}
