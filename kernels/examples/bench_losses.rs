//! Bench helper for `bench/losses.py`: times forward+backward of a loss on a safetensors input.
//!
//! `bench_losses ctc|rnnt IN.safetensors REPS` prints one JSON line per path (candle autograd,
//! and the graph-free `*_loss_and_grad`): median milliseconds over REPS runs and the peak extra
//! resident memory of one run (Linux: `/proc/self/clear_refs` reset, then `VmHWM - VmRSS`).

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor, Var};
use mezcla_kernels::{
    ctc_loss, ctc_loss_and_grad, rnnt_loss, rnnt_loss_and_grad, CtcOptions, Reduction, RnntOptions,
};
use std::time::Instant;

fn status_kb(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Runs `f` once and returns the peak resident memory above the level before it, in MiB.
fn peak_extra_mib(f: &mut dyn FnMut() -> Result<()>) -> Result<Option<f64>> {
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let before = status_kb("VmRSS:");
    f()?;
    let hwm = status_kb("VmHWM:");
    Ok(match (reset, before, hwm) {
        (true, Some(b), Some(h)) => Some(h.saturating_sub(b) as f64 / 1024.0),
        _ => None,
    })
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [kind, input, reps] = args.as_slice() else {
        bail!("usage: bench_losses ctc|rnnt IN.safetensors REPS");
    };
    let reps: usize = reps.parse().context("REPS")?;
    let m = candle_core::safetensors::load(input, &Device::Cpu)?;
    let logits = m["logits"].clone();
    let targets = m["targets"].clone();
    let tl = m["target_lengths"].clone();
    let lens = m
        .get("input_lengths")
        .or_else(|| m.get("logit_lengths"))
        .context("lengths")?
        .clone();
    let var = Var::from_tensor(&logits)?;
    let is_ctc = match kind.as_str() {
        "ctc" => true,
        "rnnt" => false,
        other => bail!("unknown loss {other}"),
    };
    let ctc_o = CtcOptions {
        reduction: Reduction::Mean,
        ..Default::default()
    };
    let rnnt_o = RnntOptions {
        reduction: Reduction::Mean,
        ..Default::default()
    };
    let mut autograd = || -> Result<()> {
        let x = var.as_tensor();
        let loss = if is_ctc {
            ctc_loss(x, &targets, &lens, &tl, &ctc_o)?
        } else {
            rnnt_loss(x, &targets, &lens, &tl, &rnnt_o)?
        };
        let grads = loss.backward()?;
        let g: &Tensor = grads.get(x).context("no gradient")?;
        std::hint::black_box(g);
        Ok(())
    };
    let mut fused = || -> Result<()> {
        let (l, g) = if is_ctc {
            ctc_loss_and_grad(&logits, &targets, &lens, &tl, &ctc_o)?
        } else {
            rnnt_loss_and_grad(&logits, &targets, &lens, &tl, &rnnt_o)?
        };
        std::hint::black_box((l, g));
        Ok(())
    };
    let paths: [(&str, &mut dyn FnMut() -> Result<()>); 2] =
        [("autograd", &mut autograd), ("loss_and_grad", &mut fused)];
    for (name, f) in paths {
        f()?; // warm-up (thread pool, page faults)
        let mem = peak_extra_mib(f)?;
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps {
            let t0 = Instant::now();
            f()?;
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(|a, b| a.total_cmp(b));
        let med = times[times.len() / 2];
        println!(
            "{{\"path\": \"{name}\", \"median_ms\": {med:.3}, \"peak_extra_mib\": {}, \"threads\": {}}}",
            mem.map_or("null".to_string(), |v| format!("{v:.1}")),
            rayon::current_num_threads()
        );
    }
    Ok(())
}
