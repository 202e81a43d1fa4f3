//! Inference speed of a model on WAV files, for bench/rtfx.py.
//!
//! Usage: `rtfx_bench [--candle] MODEL REPS WAV...` (MODEL: a `.nemo` checkpoint or a model folder; `--candle`:
//! run the candle modules instead of the fused CPU inference path, for comparison).
//!
//! Loads the model (`mezcla_asr::nemo::load_model`, as `mezcla transcribe` does) and reads every WAV into memory
//! (both untimed), transcribes the first file once as a warm-up, then REPS times transcribes every file in turn
//! with greedy decoding and the default chunking (30 s), timing each `AsrModel::transcribe` call: front-end,
//! encoder, CTC head, greedy decoding and detokenisation. Prints one JSON object: the load time, per pass the
//! summed seconds, per file its duration, its seconds in each pass and its text.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Result};
use mezcla_asr::model::DecodeOptions;
use mezcla_datagen::audio::read_wav_at;

fn main() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let candle = args.first().is_some_and(|a| a == "--candle");
    if candle {
        args.remove(0);
    }
    if args.len() < 3 {
        bail!("usage: rtfx_bench [--candle] MODEL REPS WAV...");
    }
    let started = Instant::now();
    let mut model = mezcla_asr::nemo::load_model(Path::new(&args[0]), None, false)?;
    if candle {
        model = model.without_cpu_inference();
    }
    let load_seconds = started.elapsed().as_secs_f64();
    let reps: usize = args[1].parse()?;
    let sr = model.sample_rate();
    let audio: Vec<(String, Vec<f32>)> = args[2..]
        .iter()
        .map(|p| Ok((p.clone(), read_wav_at(Path::new(p), sr)?.samples)))
        .collect::<Result<_>>()?;
    let opts = DecodeOptions::default();
    model.transcribe(&audio[0].1, &opts)?;
    let mut seconds = vec![Vec::with_capacity(reps); audio.len()];
    let mut texts = vec![String::new(); audio.len()];
    let mut passes = Vec::with_capacity(reps);
    for _ in 0..reps {
        let mut total = 0.0;
        for (i, (_, samples)) in audio.iter().enumerate() {
            let t0 = Instant::now();
            let t = model.transcribe(samples, &opts)?;
            let s = t0.elapsed().as_secs_f64();
            total += s;
            seconds[i].push(s);
            texts[i] = t.text;
        }
        passes.push(total);
    }
    let files: Vec<serde_json::Value> = audio
        .iter()
        .enumerate()
        .map(|(i, (path, samples))| {
            serde_json::json!({
                "path": path,
                "duration": samples.len() as f64 / sr as f64,
                "seconds": seconds[i],
                "text": texts[i],
            })
        })
        .collect();
    let out = serde_json::json!({
        "load_seconds": load_seconds,
        "pass_seconds": passes,
        "files": files,
    });
    println!("{out}");
    Ok(())
}
