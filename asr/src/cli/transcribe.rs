//! `mezcla transcribe` and `mezcla lid`: audio files in, text with language tags (or languages) out.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use mezcla_datagen::manifest::Manifest;

use crate::decode::Transcript;
use crate::model::{AsrModel, DecodeOptions};
use crate::output::{self, Format};

/// Options shared by the commands that run a model.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Model folder (config.json, model.safetensors, tokenizer/, optional lm.arpa.gz), or a NeMo `.nemo`
    /// checkpoint (CTC, RNN-T or hybrid); default: the built-in English-Spanish model.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Use NeMo's pre-2025 front-end (+1 frame, reflect padding) whatever the model records (a `.nemo`
    /// file's nemo_version decides by default: before 2.5).
    #[arg(long, conflicts_with = "no_legacy_frontend")]
    pub legacy_frontend: bool,
    /// Use NeMo's current front-end whatever the model records.
    #[arg(long)]
    pub no_legacy_frontend: bool,
    /// Run a hybrid RNN-T/CTC `.nemo` model with its CTC head (NeMo's decoder_type="ctc") instead of its
    /// RNN-T head.
    #[arg(long)]
    pub ctc_head: bool,
    /// Beam size of the CTC prefix beam search (1: greedy) [default: 1; 32 with --lm; the model's own with
    /// its LM].
    #[arg(long)]
    pub beam: Option<usize>,
    /// A word n-gram language model (ARPA, or ARPA.gz; `mezcla lm train` makes one) fused into the beam search
    /// (instead of the model's own LM, if it has one).
    #[arg(long, value_name = "ARPA", conflicts_with = "no_lm")]
    pub lm: Option<PathBuf>,
    /// Decode without the model's own LM (greedy unless --beam says otherwise).
    #[arg(long)]
    pub no_lm: bool,
    /// Weight of the LM's natural-log probability of each word [default: 0.5, or the model's] (`eval`: a
    /// comma-separated list to search).
    #[arg(long, value_delimiter = ',', conflicts_with = "no_lm")]
    pub lm_alpha: Vec<f32>,
    /// Score added for each word, countering the LM's preference for fewer words [default: 2, or the
    /// model's] (`eval`: a list to search).
    #[arg(
        long,
        value_delimiter = ',',
        allow_negative_numbers = true,
        conflicts_with = "no_lm"
    )]
    pub lm_beta: Vec<f32>,
    /// Extra natural-log cost of a word the LM does not know (and of a word in progress that no LM word
    /// starts with, per 6 characters) [default: -12, or the model's].
    #[arg(long, allow_negative_numbers = true, conflicts_with = "no_lm")]
    pub lm_unk: Option<f32>,
    /// Audio longer than this many seconds is transcribed in overlapping chunks.
    #[arg(long, default_value_t = 30.0)]
    pub chunk_seconds: f64,
    /// Overlap of consecutive chunks in seconds.
    #[arg(long, default_value_t = 4.0)]
    pub overlap_seconds: f64,
}

impl ModelArgs {
    pub fn load(&self) -> Result<AsrModel> {
        match &self.model {
            Some(path) => crate::nemo::load_model(
                path,
                (self.legacy_frontend || self.no_legacy_frontend).then_some(self.legacy_frontend),
                self.ctc_head,
            ),
            None => crate::default_model::load(),
        }
    }

    /// The LM weights asked for: every (alpha, beta) pair of the two lists, the model's own (or the
    /// defaults) where a list is not given.
    pub fn lm_grid(&self, model: &AsrModel) -> Vec<(f32, f32)> {
        let (alpha, beta, _) = self.lm_defaults(model);
        let alphas = if self.lm_alpha.is_empty() {
            vec![alpha]
        } else {
            self.lm_alpha.clone()
        };
        let betas = if self.lm_beta.is_empty() {
            vec![beta]
        } else {
            self.lm_beta.clone()
        };
        alphas
            .iter()
            .flat_map(|&a| betas.iter().map(move |&b| (a, b)))
            .collect()
    }

    /// Fails unless at most one pair of LM weights is given (commands other than `eval` take no lists).
    pub fn single_lm_weights(&self) -> Result<()> {
        if self.lm_alpha.len() > 1 || self.lm_beta.len() > 1 {
            bail!("lists of --lm-alpha / --lm-beta values are for `mezcla eval`; give one of each");
        }
        Ok(())
    }

    /// alpha, beta, unk: the model's own when its LM is used, else the defaults.
    fn lm_defaults(&self, model: &AsrModel) -> (f32, f32, f32) {
        match model.config.decoding {
            Some(d) if self.lm.is_none() => (d.lm_alpha as f32, d.lm_beta as f32, d.lm_unk as f32),
            _ => (0.5, 2.0, -12.0),
        }
    }

    /// How to decode with `model`: greedy; a beam search; or a beam search with a word LM (`--lm`, or the
    /// model's own unless `--no-lm`). Loads the `--lm` file.
    pub fn decode_options(&self, model: &AsrModel) -> Result<DecodeOptions> {
        if model.is_transducer()
            && (self.beam.is_some_and(|b| b > 1) || self.lm.is_some() || !self.lm_alpha.is_empty())
        {
            bail!(
                "--beam and --lm are for CTC models; this RNN-T model decodes greedily (NeMo's greedy_batch)"
            );
        }
        let lm: Option<std::sync::Arc<crate::lm::NgramLm>> = match &self.lm {
            Some(path) => Some(std::sync::Arc::new(crate::lm::NgramLm::read_arpa(path)?)),
            None if self.no_lm => None,
            None => model.lm.clone(),
        };
        if lm.is_none()
            && (!self.lm_alpha.is_empty() || !self.lm_beta.is_empty() || self.lm_unk.is_some())
        {
            bail!("--lm-alpha, --lm-beta and --lm-unk need a language model: give --lm");
        }
        let beam = self.beam.unwrap_or(match (&self.lm, &lm) {
            (Some(_), _) => 32,
            (None, Some(_)) => model.config.decoding.map_or(32, |d| d.beam),
            _ => 1,
        });
        if beam == 0 {
            bail!("--beam must be at least 1");
        }
        let fusion = match lm {
            None => None,
            Some(lm) => {
                if beam == 1 {
                    bail!(
                        "a language model needs a beam search: give --beam 2 or more (or --no-lm)"
                    );
                }
                let (alpha, beta, unk) = self.lm_defaults(model);
                Some(std::sync::Arc::new(crate::decode::LmFusion::new(
                    lm,
                    self.lm_alpha.first().copied().unwrap_or(alpha),
                    self.lm_beta.first().copied().unwrap_or(beta),
                    self.lm_unk.unwrap_or(unk),
                )))
            }
        };
        Ok(DecodeOptions {
            beam,
            lm: fusion,
            chunk_seconds: self.chunk_seconds,
            overlap_seconds: self.overlap_seconds,
        })
    }
}

#[derive(Debug, Args)]
pub struct TranscribeArgs {
    /// WAV files or folders of WAV files.
    pub audio: Vec<PathBuf>,
    /// A NeMo manifest whose audio_filepath entries to transcribe.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Write to this file, or into this folder (one file per input) if it is a folder or ends with '/'.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Also write each file's log-probabilities (frames × classes, blank last) to DIR/<stem>.safetensors
    /// (tensor `log_probs`), computed on the whole file at once whatever --chunk-seconds says. For RNN-T
    /// models: the joint's at each greedy step (steps × classes), and each step's frame (tensor `frames`).
    #[arg(long, value_name = "DIR")]
    pub logprobs: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LidArgs {
    /// WAV files or folders of WAV files.
    pub audio: Vec<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// One JSON object per file: audio_filepath, lang, share, words.
    #[arg(long)]
    pub json: bool,
}

/// The audio inputs of a command: files and folders, plus a manifest's entries.
pub fn inputs(audio: &[PathBuf], manifest: Option<&Path>) -> Result<Vec<PathBuf>> {
    let mut files = output::expand_inputs(audio)?;
    if let Some(m) = manifest {
        let m = Manifest::read(m)?;
        files.extend((0..m.entries.len()).map(|i| m.audio_path(i)));
    }
    if files.is_empty() {
        bail!("no audio given: name WAV files or folders, or --manifest");
    }
    Ok(files)
}

/// Runs the model over each file; a file that fails is reported on stderr and the others go on.
/// Returns the number of failures.
fn for_each_file(
    model: &AsrModel,
    opts: &DecodeOptions,
    files: &[PathBuf],
    mut each: impl FnMut(&Path, &Transcript) -> Result<()>,
) -> Result<usize> {
    let bar = mezcla_datagen::progress::items_bar(files.len() as u64, files.len() > 3, "files");
    let mut failed = 0;
    for f in files {
        let result = model.transcribe_file(f, opts).map(|(t, _)| t);
        bar.inc(1);
        match result {
            Ok(t) => each(f, &t)?,
            Err(e) => {
                bar.suspend(|| eprintln!("error: {e:#}"));
                failed += 1;
            }
        }
    }
    bar.finish_and_clear();
    Ok(failed)
}

pub fn run_transcribe(a: TranscribeArgs) -> Result<()> {
    let files = inputs(&a.audio, a.manifest.as_deref())?;
    a.model.single_lm_weights()?;
    let model = a.model.load()?;
    let opts = a.model.decode_options(&model)?;
    let lp_failed = match &a.logprobs {
        Some(dir) => crate::logprobs::write_all(&model, &files, dir)?,
        None => 0,
    };
    let folder = a
        .output
        .as_ref()
        .filter(|o| o.is_dir() || o.as_os_str().to_string_lossy().ends_with('/'));
    if let Some(dir) = folder {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
    }
    let mut collected = String::new();
    let many = files.len() > 1;
    let stdout = std::io::stdout();
    let failed = for_each_file(&model, &opts, &files, |f, t| {
        let name = f.display().to_string();
        let text = output::render(a.format, &name, t);
        if let Some(dir) = folder {
            let path = output::output_file(dir, f, a.format);
            mezcla_datagen::atomic::write_atomic(
                &path,
                format!("{}\n", text.trim_end()).as_bytes(),
            )
            .with_context(|| format!("{}: cannot write", path.display()))?;
            return Ok(());
        }
        let block = match a.format {
            Format::Text if many => format!("{name}\t{text}\n"),
            Format::Srt | Format::Vtt if many => format!("# {name}\n{text}"),
            _ => format!("{}\n", text.trim_end_matches('\n')),
        };
        if a.output.is_some() {
            collected.push_str(&block);
        } else {
            stdout.lock().write_all(block.as_bytes())?;
        }
        Ok(())
    })?;
    if let (Some(path), None) = (&a.output, folder) {
        mezcla_datagen::atomic::write_atomic(path, collected.as_bytes())
            .with_context(|| format!("{}: cannot write", path.display()))?;
    }
    if failed > 0 {
        bail!("{failed} of {} files could not be transcribed", files.len());
    }
    if lp_failed > 0 {
        bail!(
            "log-probabilities of {lp_failed} of {} files could not be written",
            files.len()
        );
    }
    Ok(())
}

pub fn run_lid(a: LidArgs) -> Result<()> {
    let files = inputs(&a.audio, None)?;
    a.model.single_lm_weights()?;
    let model = a.model.load()?;
    let opts = a.model.decode_options(&model)?;
    let stdout = std::io::stdout();
    let failed = for_each_file(&model, &opts, &files, |f, t| {
        let share = if t.tokens.is_empty() {
            0.0
        } else {
            t.tokens.iter().filter(|k| k.lang == t.lang).count() as f64 / t.tokens.len() as f64
        };
        let line = if a.json {
            serde_json::json!({
                "audio_filepath": f.display().to_string(),
                "lang": t.lang,
                "share": share,
                "words": t.words,
            })
            .to_string()
        } else {
            let words: Vec<String> = t
                .words
                .iter()
                .map(|w| format!("{}/{}", w.word, w.lang))
                .collect();
            format!(
                "{}\t{}\t{:.1}%\t{}",
                f.display(),
                if t.lang.is_empty() { "-" } else { &t.lang },
                share * 100.0,
                words.join(" ")
            )
        };
        writeln!(stdout.lock(), "{line}")?;
        Ok(())
    })?;
    if failed > 0 {
        bail!("{failed} of {} files could not be processed", files.len());
    }
    Ok(())
}
