//! Scoring a model on a labelled manifest: WER, CER, WER per language, token/word/utterance LID, RTFx.

use std::time::Instant;

use anyhow::{Context, Result};
use mezcla_datagen::audio::read_wav_at;

use crate::dataset::Utterance;
use crate::decode::Transcript;
use crate::metrics::{EvalAccumulator, EvalSummary, Utterance as Scored};
use crate::model::{AsrModel, DecodeOptions};

/// One scored utterance, for reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Hypothesis {
    pub audio_filepath: String,
    pub reference: String,
    pub text: String,
    pub lang: String,
}

/// Adds one transcript to the scores and returns its report line.
fn score(
    acc: &mut EvalAccumulator,
    tok: &mezcla_tokenizer::ConcatTokenizer,
    u: &Utterance,
    t: &Transcript,
    audio_seconds: f64,
    seconds: f64,
) -> Result<Hypothesis> {
    let reference: Vec<(&str, &str)> = u
        .segments
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let hypothesis: Vec<(&str, &str)> = t
        .words
        .iter()
        .map(|w| (w.word.as_str(), w.lang.as_str()))
        .collect();
    let ref_tokens = u.tagged_ids(tok)?;
    let hyp_tokens: Vec<(u32, &str)> = t.tokens.iter().map(|k| (k.id, k.lang.as_str())).collect();
    let ref_lang = u.language(tok)?;
    acc.add(&Scored {
        reference: &reference,
        hypothesis: &hypothesis,
        reference_tokens: Some(&ref_tokens),
        hypothesis_tokens: Some(&hyp_tokens),
        reference_language: Some(ref_lang),
        predicted_language: Some(&t.lang),
        audio_seconds,
        processing_seconds: seconds,
    })?;
    Ok(Hypothesis {
        audio_filepath: u.audio.display().to_string(),
        reference: crate::metrics::joined_text(&reference),
        text: t.text.clone(),
        lang: t.lang.clone(),
    })
}

/// Transcribes every utterance and scores the transcripts; `progress` shows a bar.
pub fn evaluate(
    model: &AsrModel,
    utts: &[Utterance],
    opts: &DecodeOptions,
    progress: bool,
) -> Result<(EvalSummary, Vec<Hypothesis>)> {
    let mut acc = EvalAccumulator::new();
    let mut hyps = Vec::with_capacity(utts.len());
    let bar = mezcla_datagen::progress::items_bar(utts.len() as u64, progress, "utterances");
    for u in utts {
        let audio = read_wav_at(&u.audio, model.sample_rate())
            .with_context(|| format!("{}: the manifest entry's audio", u.origin))?;
        let started = Instant::now();
        let t: Transcript = model.transcribe(&audio.samples, opts)?;
        let seconds = started.elapsed().as_secs_f64();
        hyps.push(score(
            &mut acc,
            &model.tokenizer,
            u,
            &t,
            audio.duration(),
            seconds,
        )?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok((acc.summary()?, hyps))
}

/// One point of an LM weight search and its scores.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GridPoint {
    pub alpha: f64,
    pub beta: f64,
    #[serde(flatten)]
    pub summary: EvalSummary,
}

/// Scores every (alpha, beta) pair of LM weights on the utterances (`opts` holds the LM); the acoustic model
/// runs once per utterance, the beam search once per pair (RTFx counts both).
pub fn evaluate_grid(
    model: &AsrModel,
    utts: &[Utterance],
    opts: &DecodeOptions,
    points: &[(f32, f32)],
    progress: bool,
) -> Result<Vec<GridPoint>> {
    let base = opts
        .lm
        .as_ref()
        .context("searching LM weights needs a language model")?;
    let variants: Vec<DecodeOptions> = points
        .iter()
        .map(|&(a, b)| DecodeOptions {
            lm: Some(std::sync::Arc::new(base.with_weights(a, b, base.unk))),
            ..opts.clone()
        })
        .collect();
    let mut accs: Vec<EvalAccumulator> = points.iter().map(|_| EvalAccumulator::new()).collect();
    let bar = mezcla_datagen::progress::items_bar(utts.len() as u64, progress, "utterances");
    for u in utts {
        let audio = read_wav_at(&u.audio, model.sample_rate())
            .with_context(|| format!("{}: the manifest entry's audio", u.origin))?;
        let started = Instant::now();
        let lp = model.utterance_log_probs(&audio.samples, opts)?;
        let acoustic = started.elapsed().as_secs_f64();
        for (acc, o) in accs.iter_mut().zip(&variants) {
            let started = Instant::now();
            let t = match &lp {
                Some((data, frames, classes)) => model.decode_log_probs(
                    crate::decode::LogProbs {
                        data,
                        frames: *frames,
                        classes: *classes,
                    },
                    o,
                )?,
                // Longer than a chunk: transcribed in chunks for each pair.
                None => model.transcribe(&audio.samples, o)?,
            };
            let seconds = acoustic + started.elapsed().as_secs_f64();
            score(acc, &model.tokenizer, u, &t, audio.duration(), seconds)?;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    points
        .iter()
        .zip(accs)
        .map(|(&(alpha, beta), acc)| {
            // As written (0.3, not 0.30000001192092896).
            let exact = |x: f32| x.to_string().parse::<f64>().unwrap_or(x as f64);
            Ok(GridPoint {
                alpha: exact(alpha),
                beta: exact(beta),
                summary: acc.summary()?,
            })
        })
        .collect()
}
