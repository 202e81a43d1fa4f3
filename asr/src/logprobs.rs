//! Per-file CTC log-probabilities as safetensors (`mezcla transcribe --logprobs DIR`), for debugging and parity.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use mezcla_datagen::audio::read_wav_at;

use crate::model::AsrModel;

/// Name of the tensor in each file: `[T, V+1]` f32, valid frames only, blank last.
pub const LOG_PROBS_KEY: &str = "log_probs";

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
    let lp = utterance_log_probs(model, &a.samples).with_context(|| audio.display().to_string())?;
    let tmp = out.with_extension("safetensors.tmp");
    candle_core::safetensors::save(&HashMap::from([(LOG_PROBS_KEY.to_string(), lp)]), &tmp)
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
