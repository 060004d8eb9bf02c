//! BirdNET v2.4 embedding speed in Earshot (candle), the other side of `birdnet_tflite.py`;
//! `benches/birdnet_speed.sh MODEL.tflite` runs both, on 1 and 2 threads, in one run.
//!
//!     RAYON_NUM_THREADS=1 cargo bench --bench birdnet -- MODEL.tflite [WINDOWS] [ROUNDS]
//!
//! Threads: RAYON_NUM_THREADS (also read by candle's matmul). Prints one line: threads,
//! windows/s, ms/window, x real time (3 s per window); best of ROUNDS batches of WINDOWS.

use std::time::Instant;

use earshot::model::birdnet::{WINDOW_SAMPLES, WINDOW_SECONDS, network_from_tflite};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let model = args
        .first()
        .ok_or("usage: bench MODEL.tflite [WINDOWS] [ROUNDS]")?;
    let count: usize = args.get(1).map_or(Ok(16), |s| s.parse())?;
    let rounds: usize = args.get(2).map_or(Ok(5), |s| s.parse())?;
    let net = network_from_tflite(&std::fs::read(model)?)?;
    // Deterministic noisy chirps.
    let windows: Vec<Vec<f32>> = (0..count)
        .map(|w| {
            (0..WINDOW_SAMPLES)
                .map(|i| {
                    let t = i as f32 / 48_000.0;
                    (t * (500.0 + 300.0 * w as f32) * (1.0 + t)).sin() * 0.3
                        + ((i * 7919 + w * 104_729) % 1000) as f32 * 1e-4
                })
                .collect()
        })
        .collect();
    let refs: Vec<&[f32]> = windows.iter().map(Vec::as_slice).collect();
    net.embed(&refs)?; // warm-up
    let mut best = f64::INFINITY;
    for _ in 0..rounds {
        let start = Instant::now();
        net.embed(&refs)?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    let per_window = best / count as f64;
    println!(
        "candle  threads {}  {:.1} windows/s  {:.1} ms/window  {:.0}x real time",
        rayon::current_num_threads(),
        1.0 / per_window,
        per_window * 1e3,
        f64::from(WINDOW_SECONDS) / per_window
    );
    Ok(())
}
