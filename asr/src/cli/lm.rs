//! `mezcla lm`: train a word n-gram language model for beam-search decoding, and measure its perplexity.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use mezcla_datagen::manifest::Manifest;

use crate::lm::{self, NgramLm};

#[derive(Debug, Args)]
pub struct LmArgs {
    #[command(subcommand)]
    pub command: LmCommand,
}

#[derive(Debug, Subcommand)]
pub enum LmCommand {
    /// Train a word n-gram model (interpolated modified Kneser-Ney, as KenLM's lmplz) and write it as ARPA.
    Train(TrainLmArgs),
    /// Perplexity of a model on text (sentences with </s>, unknown words included as <unk>).
    Perplexity(PerplexityArgs),
}

/// Where sentences come from: text files (one sentence a line) and manifests (each entry's transcript).
#[derive(Debug, Args)]
pub struct TextArgs {
    /// Text files, one sentence per line, words separated by spaces (normalised as the model's transcripts).
    #[arg(long, num_args = 1..)]
    pub text: Vec<PathBuf>,
    /// Manifests whose transcripts (segments joined) are sentences.
    #[arg(long, num_args = 1..)]
    pub manifest: Vec<PathBuf>,
}

impl TextArgs {
    fn sentences(&self) -> Result<Vec<Vec<String>>> {
        if self.text.is_empty() && self.manifest.is_empty() {
            bail!("no text given: use --text or --manifest");
        }
        let mut out = Vec::new();
        for t in &self.text {
            out.extend(lm::read_sentences(t)?);
        }
        for m in &self.manifest {
            out.extend(manifest_sentences(m)?);
        }
        if out.is_empty() {
            bail!("the text has no sentences");
        }
        Ok(out)
    }
}

/// The transcripts of a manifest as sentences; an entry without text is an error naming its line.
fn manifest_sentences(path: &Path) -> Result<Vec<Vec<String>>> {
    let m = Manifest::read(path)?;
    let mut out = Vec::with_capacity(m.entries.len());
    for (i, e) in m.entries.iter().enumerate() {
        let Some(text) = &e.text else {
            bail!("{}", m.error_at(i, "the entry has no text"));
        };
        let words: Vec<String> = text
            .to_plain()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if let Some(w) = words
            .iter()
            .find(|w| *w == lm::UNK || *w == lm::BOS || *w == lm::EOS)
        {
            bail!(
                "{}",
                m.error_at(i, format!("`{w}` is reserved and cannot be a word"))
            );
        }
        if !words.is_empty() {
            out.push(words);
        }
    }
    Ok(out)
}

#[derive(Debug, Args)]
pub struct TrainLmArgs {
    #[command(flatten)]
    pub input: TextArgs,
    /// The n-gram order.
    #[arg(long, default_value_t = 3)]
    pub order: usize,
    /// Where to write the model (ARPA; gzip-compressed if the name ends in .gz).
    #[arg(long)]
    pub out: PathBuf,
    /// Use fixed discounts (0.5, 1, 1.5) for orders whose counts of counts cannot give them (small or
    /// artificial text), as lmplz --discount_fallback.
    #[arg(long)]
    pub discount_fallback: bool,
    /// Print the training report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PerplexityArgs {
    /// The model (ARPA or ARPA.gz).
    #[arg(long)]
    pub lm: PathBuf,
    #[command(flatten)]
    pub input: TextArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: LmArgs) -> Result<()> {
    match a.command {
        LmCommand::Train(a) => train(a),
        LmCommand::Perplexity(a) => perplexity(a),
    }
}

fn train(a: TrainLmArgs) -> Result<()> {
    if a.order == 0 {
        bail!("--order must be at least 1");
    }
    let sentences = a.input.sentences()?;
    let (model, report) = lm::train_kneser_ney(&sentences, a.order, a.discount_fallback)?;
    model.save_arpa(&a.out)?;
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["out"] = serde_json::Value::String(a.out.display().to_string());
        println!("{v}");
    } else {
        println!(
            "{}-gram model of {} sentences ({} words, vocabulary {}): n-grams {:?}{} -> {}",
            a.order,
            report.sentences,
            report.words,
            report.vocabulary,
            report.counts,
            if report.fallback_orders.is_empty() {
                String::new()
            } else {
                format!(
                    "; fallback discounts for orders {:?}",
                    report.fallback_orders
                )
            },
            a.out.display()
        );
    }
    Ok(())
}

fn perplexity(a: PerplexityArgs) -> Result<()> {
    let model = NgramLm::read_arpa(&a.lm)?;
    let sentences = a.input.sentences()?;
    let (mut log10, mut tokens, mut oov) = (0f64, 0usize, 0usize);
    for s in &sentences {
        let words: Vec<&str> = s.iter().map(String::as_str).collect();
        oov += words.iter().filter(|w| !model.contains(w)).count();
        let scores = model.sentence_log10(&words);
        tokens += scores.len();
        log10 += scores.iter().map(|&x| x as f64).sum::<f64>();
    }
    let ppl = 10f64.powf(-log10 / tokens as f64);
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "sentences": sentences.len(),
                "tokens": tokens,
                "oov": oov,
                "log10_prob": log10,
                "perplexity": ppl,
            })
        );
    } else {
        println!(
            "{} sentences, {tokens} tokens (</s> included), {oov} OOV: log10 prob {log10:.2}, perplexity {ppl:.2}",
            sentences.len()
        );
    }
    Ok(())
}
