//! Per-file log-probabilities as safetensors (`mezcla transcribe --logprobs DIR`), for debugging and parity: a
//! CTC model's per frame, an RNN-T model's per step of its greedy decoding.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use mezcla_datagen::audio::read_wav_at;

use crate::model::AsrModel;

/// Name of the tensor in each file: `[T, V+1]` f32, valid frames only, blank last (CTC); for RNN-T models
/// `[S, V+1]`, the joint's log-probabilities at each of the S steps of greedy decoding.
pub const LOG_PROBS_KEY: &str = "log_probs";
/// RNN-T models only: `[S]` u32, the encoder frame of each step.
pub const FRAMES_KEY: &str = "frames";

/// Log-probabilities `[T, V+1]` of one utterance over its valid frames, computed on the whole audio at once
/// (no chunking, whatever its length).
pub fn utterance_log_probs(model: &AsrModel, samples: &[f32]) -> Result<Tensor> {
    let (lp, lengths) = model.log_probs(&[samples])?;
    Ok(lp.get(0)?.narrow(0, 0, lengths[0])?)
}

/// `DIR/<stem>.safetensors` for each input; two inputs with the same stem are an error.
pub fn output_paths(dir: &Path, files: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut seen: HashMap<String, &Path> = HashMap::new();
    files
        .iter()
        .map(|f| {
            let stem = f
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            if let Some(other) = seen.insert(stem.clone(), f) {
                bail!(
                    "--logprobs: {} and {} would both write {stem}.safetensors",
                    other.display(),
                    f.display()
                );
            }
            Ok(dir.join(format!("{stem}.safetensors")))
        })
        .collect()
}

/// Writes one file's log-probabilities.
pub fn write_file(model: &AsrModel, audio: &Path, out: &Path) -> Result<()> {
    let a = read_wav_at(audio, model.sample_rate())?;
    if a.samples.is_empty() {
        bail!("{}: the file has no samples", audio.display());
    }
    let tensors = if model.is_transducer() {
        let path = model
            .transducer_path(&a.samples, true)
            .with_context(|| audio.display().to_string())?;
        let steps = path.step_frames.len();
        let classes = model.config.vocab_size + 1;
        let frames: Vec<u32> = path.step_frames.iter().map(|&t| t as u32).collect();
        HashMap::from([
            (
                LOG_PROBS_KEY.to_string(),
                Tensor::from_vec(path.log_probs, (steps, classes), &candle_core::Device::Cpu)?,
            ),
            (
                FRAMES_KEY.to_string(),
                Tensor::from_vec(frames, steps, &candle_core::Device::Cpu)?,
            ),
        ])
    } else {
        let lp =
            utterance_log_probs(model, &a.samples).with_context(|| audio.display().to_string())?;
        HashMap::from([(LOG_PROBS_KEY.to_string(), lp)])
    };
    let tmp = out.with_extension("safetensors.tmp");
    candle_core::safetensors::save(&tensors, &tmp)
        .with_context(|| format!("{}: cannot write", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("{}: cannot write", out.display()))
}

/// Writes `DIR/<stem>.safetensors` for every input; a file that fails is reported on stderr and the others go
/// on. Returns the number of failures.
pub fn write_all(model: &AsrModel, files: &[PathBuf], dir: &Path) -> Result<usize> {
    let outs = output_paths(dir, files)?;
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let mut failed = 0;
    for (f, out) in files.iter().zip(&outs) {
        if let Err(e) = write_file(model, f, out) {
            eprintln!("error: {e:#}");
            failed += 1;
        }
    }
    Ok(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_named_by_stem_and_collisions_refused() {
        let dir = Path::new("out");
        let files = [PathBuf::from("en/a.wav"), PathBuf::from("es/b.wav")];
        assert_eq!(
            output_paths(dir, &files).unwrap(),
            [dir.join("a.safetensors"), dir.join("b.safetensors")]
        );
        let clash = [PathBuf::from("en/a.wav"), PathBuf::from("es/a.wav")];
        let e = output_paths(dir, &clash).unwrap_err().to_string();
        assert!(e.contains("en/a.wav") && e.contains("es/a.wav"), "{e}");
    }
}
