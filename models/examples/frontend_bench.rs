//! Front-end throughput on the utterances `bench/frontend.py` writes: prints one JSON line of timings.

// Usage: `frontend_bench DIR BATCH REPS` with `DIR` holding `utts.f32` (all samples, concatenated),
// `utts.json` (`{"lengths": [...], "sample_rate": N, "config": {...}}`) and optionally `nemo_batch0.safetensors`
// (NeMo's features for the first batch, compared here). Batches of `BATCH` utterances in file order go through
// `MelFrontend::batch` (rayon over the utterances); the time is the median over `REPS` passes after a warm-up.

use std::time::Instant;

use candle_core::Device;
use mezcla_models::frontend::{MelFrontend, PreprocessorConfig};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(args.len() == 4, "usage: frontend_bench DIR BATCH REPS");
    let dir = std::path::Path::new(&args[1]);
    let batch: usize = args[2].parse()?;
    let reps: usize = args[3].parse()?;
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("utts.json"))?)?;
    let lengths: Vec<usize> = meta["lengths"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("utts.json: no lengths"))?
        .iter()
        .map(|v| v.as_u64().unwrap_or(0) as usize)
        .collect();
    let bytes = std::fs::read(dir.join("utts.f32"))?;
    let samples: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    anyhow::ensure!(
        samples.len() == lengths.iter().sum::<usize>(),
        "utts.f32 size"
    );
    let mut utts = Vec::new();
    let mut at = 0;
    for &l in &lengths {
        utts.push(&samples[at..at + l]);
        at += l;
    }
    let config = PreprocessorConfig::from_json_value(meta["config"].clone())?;
    let front = MelFrontend::new(&config)?;
    let dev = Device::Cpu;

    let run = || -> anyhow::Result<f64> {
        let t0 = Instant::now();
        for chunk in utts.chunks(batch) {
            let out = front.batch(chunk, &dev)?;
            std::hint::black_box(&out);
        }
        Ok(t0.elapsed().as_secs_f64())
    };
    run()?;
    let mut times: Vec<f64> = (0..reps).map(|_| run()).collect::<anyhow::Result<_>>()?;
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];

    let mut max_diff = None;
    let reference = dir.join("nemo_batch0.safetensors");
    if reference.exists() {
        let t = candle_core::safetensors::load(&reference, &dev)?;
        let want = t["features"].flatten_all()?.to_vec1::<f32>()?;
        let got = front.batch(&utts[..batch.min(utts.len())], &dev)?;
        let got_v = got.features.flatten_all()?.to_vec1::<f32>()?;
        anyhow::ensure!(
            got.features.dims() == t["features"].dims(),
            "shape differs from NeMo's"
        );
        let want_len: Vec<i64> = t["lengths"].to_vec1()?;
        anyhow::ensure!(
            got.lengths
                .iter()
                .zip(&want_len)
                .all(|(a, b)| *a as i64 == *b),
            "lengths differ from NeMo's"
        );
        max_diff = Some(
            got_v
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max),
        );
    }
    let audio_s = lengths.iter().sum::<usize>() as f64 / front.sample_rate() as f64;
    println!(
        "{}",
        serde_json::json!({
            "seconds": median,
            "audio_seconds": audio_s,
            "threads": rayon::current_num_threads(),
            "max_abs_diff_batch0": max_diff,
        })
    );
    Ok(())
}
