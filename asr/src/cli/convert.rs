//! `mezcla convert`: a NeMo `.nemo` checkpoint (Conformer CTC) into a mezcla model folder.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::nemo::{self, NemoOptions, VocabularyKind};

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// The `.nemo` file (tar, or tar.gz for old files).
    pub model: PathBuf,
    /// Output model folder (default: the file's path without `.nemo`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Record NeMo's pre-2025 front-end (+1 frame, reflect padding) whatever nemo_version says.
    #[arg(long, conflicts_with = "no_legacy_frontend")]
    pub legacy_frontend: bool,
    /// Record NeMo's current front-end whatever nemo_version says.
    #[arg(long)]
    pub no_legacy_frontend: bool,
    /// Convert a hybrid RNN-T/CTC model's CTC head (NeMo's decoder_type="ctc").
    #[arg(long)]
    pub ctc_head: bool,
    /// Language of a monolingual model's vocabulary, used to tag its words (default: "default").
    #[arg(long)]
    pub lang: Option<String>,
}

pub fn run(a: ConvertArgs) -> Result<()> {
    let out = a.out.unwrap_or_else(|| nemo::default_output(&a.model));
    let opts = NemoOptions {
        legacy_frontend: (a.legacy_frontend || a.no_legacy_frontend).then_some(a.legacy_frontend),
        ctc_head: a.ctc_head,
        lang: a.lang.clone(),
    };
    let ckpt = nemo::convert(&a.model, &out, &opts)?;
    let vocab = match &ckpt.vocabulary {
        VocabularyKind::Char => "characters".to_string(),
        VocabularyKind::SentencePiece => "SentencePiece".to_string(),
        VocabularyKind::Aggregate(langs) => format!("aggregate {}", langs.join("+")),
    };
    let e = &ckpt.config.encoder;
    println!(
        "{} -> {}: {} (NeMo {}), Conformer {} layers × {}, {} tokens + blank ({vocab}), {} front-end",
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
