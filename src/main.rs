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
        eprintln!("error: {err:#}");
        ExitCode::FAILURE
    })
}
