//! `mezcla convert`: a NeMo `.nemo` checkpoint (Conformer CTC, RNN-T or hybrid) into a mezcla model folder, or a model folder into
//! one with other weight storage (f16, bf16, int8).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use crate::nemo::{self, NemoOptions, VocabularyKind};
use crate::weights::WeightFormat;

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// The `.nemo` file (tar, or tar.gz for old files), or a mezcla model folder.
    pub model: PathBuf,
    /// Output model folder (default for a `.nemo` file: its path without `.nemo`; required for a folder).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// How to store the weights: f32, f16, bf16, or int8 (one scale per output row for matrices and
    /// convolution kernels, f32 for the rest; about a quarter of f32's size). Default: f32 for `.nemo` files.
    #[arg(long, value_enum)]
    pub weights: Option<WeightFormat>,
    /// Record NeMo's pre-2025 front-end (+1 frame, reflect padding) whatever nemo_version says.
    #[arg(long, conflicts_with = "no_legacy_frontend")]
    pub legacy_frontend: bool,
    /// Record NeMo's current front-end whatever nemo_version says.
    #[arg(long)]
    pub no_legacy_frontend: bool,
    /// Convert a hybrid RNN-T/CTC model's CTC head (NeMo's decoder_type="ctc") instead of its RNN-T head.
    #[arg(long)]
    pub ctc_head: bool,
    /// Language of a monolingual model's vocabulary, used to tag its words (default: "default").
    #[arg(long)]
    pub lang: Option<String>,
    /// Give the output model this word LM (ARPA or ARPA.gz), stored as lm.arpa.gz: it then decodes with a
    /// beam search and the LM by default (`--no-lm` turns it off).
    #[arg(long, value_name = "ARPA")]
    pub lm: Option<PathBuf>,
    /// The LM weight the model records.
    #[arg(long, default_value_t = 0.5, requires = "lm")]
    pub lm_alpha: f64,
    /// The word bonus the model records.
    #[arg(
        long,
        default_value_t = 2.0,
        requires = "lm",
        allow_negative_numbers = true
    )]
    pub lm_beta: f64,
    /// The unknown-word cost the model records.
    #[arg(long, default_value_t = -12.0, requires = "lm", allow_negative_numbers = true)]
    pub lm_unk: f64,
    /// The beam the model records.
    #[arg(long, default_value_t = 32, requires = "lm")]
    pub beam: usize,
}

impl ConvertArgs {
    /// Gives the written model folder its LM, if one was asked for.
    fn attach_lm(&self, out: &std::path::Path) -> Result<()> {
        let Some(path) = &self.lm else {
            return Ok(());
        };
        let lm = crate::lm::NgramLm::read_arpa(path)?;
        crate::model::attach_lm(
            out,
            &lm,
            crate::model::DecodingConfig {
                beam: self.beam,
                lm_alpha: self.lm_alpha,
                lm_beta: self.lm_beta,
                lm_unk: self.lm_unk,
            },
        )?;
        println!(
            "{}: word LM {} (n-grams {:?}), beam {}, alpha {}, beta {}",
            out.display(),
            path.display(),
            lm.counts(),
            self.beam,
            self.lm_alpha,
            self.lm_beta
        );
        Ok(())
    }
}

pub fn run(a: ConvertArgs) -> Result<()> {
    if a.model.is_dir() {
        return convert_folder(a);
    }
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| nemo::default_output(&a.model));
    let opts = NemoOptions {
        legacy_frontend: (a.legacy_frontend || a.no_legacy_frontend).then_some(a.legacy_frontend),
        ctc_head: a.ctc_head,
        lang: a.lang.clone(),
    };
    // Refused before anything is written.
    if a.lm.is_some()
        && nemo::read_nemo(&a.model, &opts)?
            .config
            .transducer
            .is_some()
    {
        bail!(
            "{}: --lm is for CTC models; this is an RNN-T model (or give --ctc-head for a hybrid's CTC head)",
            a.model.display()
        );
    }
    let ckpt = nemo::convert(&a.model, &out, &opts, a.weights)?;
    a.attach_lm(&out)?;
    let vocab = match &ckpt.vocabulary {
        VocabularyKind::Char => "characters".to_string(),
        VocabularyKind::SentencePiece => "SentencePiece".to_string(),
        VocabularyKind::Aggregate(langs) => format!("aggregate {}", langs.join("+")),
    };
    let e = &ckpt.config.encoder;
    let head = match &ckpt.config.transducer {
        Some(t) => format!(
            "RNN-T head (LSTM {} × {}, joint {}, greedy)",
            t.pred_rnn_layers, t.pred_hidden, t.joint_hidden
        ),
        None => "CTC head".to_string(),
    };
    println!(
        "{} -> {}: {} (NeMo {}), Conformer {} layers × {}, {head}, {} tokens + blank ({vocab}), {} front-end",
        a.model.display(),
        out.display(),
        ckpt.target.rsplit('.').next().unwrap_or(&ckpt.target),
        ckpt.nemo_version.as_deref().unwrap_or("version unknown"),
        e.n_layers,
        e.d_model,
        ckpt.config.vocab_size,
        if ckpt.config.legacy_frontend {
            "pre-2025"
        } else {
            "current"
        }
    );
    Ok(())
}

fn convert_folder(a: ConvertArgs) -> Result<()> {
    if a.legacy_frontend || a.no_legacy_frontend || a.ctc_head || a.lang.is_some() {
        bail!(
            "{}: --legacy-frontend, --no-legacy-frontend, --ctc-head and --lang apply to .nemo files only",
            a.model.display()
        );
    }
    let Some(out) = a.out.clone() else {
        bail!("{}: give the output folder with --out", a.model.display());
    };
    let Some(format) = a.weights else {
        bail!(
            "{}: give the weight storage with --weights (f32, f16, bf16 or int8)",
            a.model.display()
        );
    };
    if a.lm.is_some()
        && crate::model::ModelConfig::read(&a.model.join(crate::model::CONFIG_FILE))?
            .transducer
            .is_some()
    {
        bail!(
            "{}: --lm is for CTC models; this is an RNN-T model",
            a.model.display()
        );
    }
    let (config, size) = crate::model::convert_folder(&a.model, &out, format)?;
    a.attach_lm(&out)?;
    println!(
        "{} -> {}: Conformer {} layers × {}, {} tokens + blank, weights {:?} ({:.1} MB)",
        a.model.display(),
        out.display(),
        config.encoder.n_layers,
        config.encoder.d_model,
        config.vocab_size,
        format,
        size as f64 / 1e6
    );
    Ok(())
}
