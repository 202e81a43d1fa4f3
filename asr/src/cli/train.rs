//! `mezcla train` and `mezcla eval`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::cli::transcribe::ModelArgs;
use crate::train::{self, TrainConfig};

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The run's TOML config (see README: Training).
    #[arg(long)]
    pub config: PathBuf,
    /// Continue from the latest checkpoint in the run's out_dir.
    #[arg(long)]
    pub resume: bool,
    /// Print the summary as JSON on stdout (progress still goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// No progress bar or progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Manifest with references (text as segments, or string + lang).
    #[arg(long)]
    pub manifest: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Print the scores as JSON (with every utterance's hypothesis under "hypotheses").
    #[arg(long)]
    pub json: bool,
}

pub fn run_train(a: TrainArgs) -> Result<()> {
    let cfg = TrainConfig::read(&a.config)?;
    let summary = train::run(&cfg, a.resume, !a.quiet)?;
    if a.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "trained {} steps ({} parameters) in {:.1} s; final loss {:.4}{}; model: {}",
            summary.steps,
            summary.parameters,
            summary.seconds,
            summary.final_loss,
            summary
                .best_val_wer
                .map(|w| format!(", best validation WER {:.2}%", w * 100.0))
                .unwrap_or_default(),
            summary.model.display()
        );
    }
    Ok(())
}

pub fn run_eval(a: EvalArgs) -> Result<()> {
    let model = a.model.load()?;
    let opts = a.model.decode_options(&model)?;
    let utts = crate::dataset::load(&a.manifest, &model.tokenizer)?;
    let grid = a.model.lm_grid(&model);
    if opts.lm.is_some() && grid.len() > 1 {
        return run_eval_grid(&a, &model, &utts, &opts, &grid);
    }
    let (s, hyps) = crate::evaluate::evaluate(&model, &utts, &opts, !a.json)?;
    if a.json {
        let mut v = serde_json::to_value(&s)?;
        v["hypotheses"] = serde_json::to_value(&hyps)?;
        println!("{v}");
        return Ok(());
    }
    let pct = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{:.2}%", v * 100.0));
    println!("utterances         {}", s.utterances);
    println!("WER                {:.2}%", s.wer * 100.0);
    println!("CER                {:.2}%", s.cer * 100.0);
    for (lang, l) in &s.per_language {
        println!(
            "WER [{lang}]{}{}",
            " ".repeat(13usize.saturating_sub(lang.len())),
            pct(l.wer)
        );
    }
    println!("token LID          {}", pct(s.token_lid_accuracy));
    println!("word LID           {}", pct(s.word_lid_accuracy));
    println!("utterance LID      {}", pct(s.utterance_lid_accuracy));
    println!(
        "RTFx               {}",
        s.rtfx.map_or("-".to_string(), |r| format!("{r:.1}"))
    );
    Ok(())
}

/// `eval` with lists of LM weights: every pair scored, the best (lowest WER) reported.
fn run_eval_grid(
    a: &EvalArgs,
    model: &crate::model::AsrModel,
    utts: &[crate::dataset::Utterance],
    opts: &crate::model::DecodeOptions,
    grid: &[(f32, f32)],
) -> Result<()> {
    let points = crate::evaluate::evaluate_grid(model, utts, opts, grid, !a.json)?;
    let best = points
        .iter()
        .min_by(|x, y| x.summary.wer.total_cmp(&y.summary.wer))
        .expect("the grid is not empty");
    if a.json {
        println!(
            "{}",
            serde_json::json!({"grid": points, "best": best, "lm_unk": opts.lm.as_ref().map(|l| l.unk)})
        );
        return Ok(());
    }
    println!("alpha   beta    WER      CER      token LID  utt LID");
    let pct = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{:.2}%", v * 100.0));
    for p in &points {
        println!(
            "{:<7} {:<7} {:<8} {:<8} {:<10} {}{}",
            p.alpha,
            p.beta,
            format!("{:.2}%", p.summary.wer * 100.0),
            format!("{:.2}%", p.summary.cer * 100.0),
            pct(p.summary.token_lid_accuracy),
            pct(p.summary.utterance_lid_accuracy),
            if std::ptr::eq(p, best) {
                "   <- best"
            } else {
                ""
            }
        );
    }
    Ok(())
}
