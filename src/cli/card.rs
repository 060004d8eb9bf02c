//! What every model card records of the run that wrote it: the command and the machine.

/// This run's command line as a user would type it: `earshot` and the arguments, wherever the
/// binary was run from.
pub fn command_line() -> String {
    std::iter::once("earshot".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Training runs on rayon's pool, which RAYON_NUM_THREADS may make smaller than the machine.
    let threads = rayon::current_num_threads();
    format!("{cpu}, {cores} cores, {threads} training threads, no GPU")
}
