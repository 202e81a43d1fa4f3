//! Runs CTC or RNN-T on tensors in a safetensors file and writes per-sample losses and the gradient.
//!
//! `cargo run --release -p mezcla-kernels --example loss_file -- ctc|rnnt IN.safetensors OUT.safetensors`
//!
//! Reads `logits` ((B,T,C) for CTC, (B,T,U+1,C) for RNN-T), `targets`, `input_lengths` (CTC) or
//! `logit_lengths` (RNN-T) and `target_lengths` (i32 or i64); the blank is the last class. Writes
//! `loss_none` (B,) and `grad_mean`, the gradient of the `mean`-reduced loss (each loss divided by
//! its target length clamped to >= 1, then the batch mean) with respect to the logits.

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use mezcla_kernels::{
    ctc_loss, ctc_loss_and_grad, rnnt_loss, rnnt_loss_and_grad, CtcOptions, Reduction, RnntOptions,
};
use std::collections::HashMap;

fn get<'a>(m: &'a HashMap<String, Tensor>, k: &str) -> Result<&'a Tensor> {
    m.get(k)
        .with_context(|| format!("input file has no tensor named {k:?}"))
}

fn main() {
    if let Err(e) = run() {
        // first line only: candle errors carry a backtrace in their Display when RUST_BACKTRACE is set
        let msg = format!("{e:#}");
        eprintln!("loss_file: {}", msg.lines().next().unwrap_or_default());
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [kind, input, output] = args.as_slice() else {
        bail!("usage: loss_file ctc|rnnt IN.safetensors OUT.safetensors");
    };
    let m = candle_core::safetensors::load(input, &Device::Cpu)
        .with_context(|| format!("reading {input}"))?;
    let logits = get(&m, "logits")?;
    let targets = get(&m, "targets")?;
    let target_lengths = get(&m, "target_lengths")?;
    let (loss_none, grad_mean) = match kind.as_str() {
        "ctc" => {
            let il = get(&m, "input_lengths")?;
            let o = |reduction| CtcOptions {
                reduction,
                ..Default::default()
            };
            let none = ctc_loss(logits, targets, il, target_lengths, &o(Reduction::None))?;
            let (_, g) =
                ctc_loss_and_grad(logits, targets, il, target_lengths, &o(Reduction::Mean))?;
            (none, g)
        }
        "rnnt" => {
            let ll = get(&m, "logit_lengths")?;
            let o = |reduction| RnntOptions {
                reduction,
                ..Default::default()
            };
            let none = rnnt_loss(logits, targets, ll, target_lengths, &o(Reduction::None))?;
            let (_, g) =
                rnnt_loss_and_grad(logits, targets, ll, target_lengths, &o(Reduction::Mean))?;
            (none, g)
        }
        other => bail!("unknown loss {other:?}: expected ctc or rnnt"),
    };
    let out = HashMap::from([
        ("loss_none".to_string(), loss_none),
        ("grad_mean".to_string(), grad_mean),
    ]);
    candle_core::safetensors::save(&out, output).with_context(|| format!("writing {output}"))?;
    Ok(())
}
