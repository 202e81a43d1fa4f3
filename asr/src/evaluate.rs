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

/// Transcribes every utterance and scores the transcripts; `progress` shows a bar.
pub fn evaluate(
    model: &AsrModel,
    utts: &[Utterance],
    opts: &DecodeOptions,
    progress: bool,
) -> Result<(EvalSummary, Vec<Hypothesis>)> {
    let tok = &model.tokenizer;
    let mut acc = EvalAccumulator::new();
    let mut hyps = Vec::with_capacity(utts.len());
    let bar = mezcla_datagen::progress::items_bar(utts.len() as u64, progress, "utterances");
    for u in utts {
        let audio = read_wav_at(&u.audio, model.sample_rate())
            .with_context(|| format!("{}: the manifest entry's audio", u.origin))?;
        let started = Instant::now();
        let t: Transcript = model.transcribe(&audio.samples, opts)?;
        let seconds = started.elapsed().as_secs_f64();
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
        let hyp_tokens: Vec<(u32, &str)> =
            t.tokens.iter().map(|k| (k.id, k.lang.as_str())).collect();
        let ref_lang = u.language(tok)?;
        acc.add(&Scored {
            reference: &reference,
            hypothesis: &hypothesis,
            reference_tokens: Some(&ref_tokens),
            hypothesis_tokens: Some(&hyp_tokens),
            reference_language: Some(ref_lang),
            predicted_language: Some(&t.lang),
            audio_seconds: audio.duration(),
            processing_seconds: seconds,
        })?;
        hyps.push(Hypothesis {
            audio_filepath: u.audio.display().to_string(),
            reference: crate::metrics::joined_text(&reference),
            text: t.text.clone(),
            lang: t.lang.clone(),
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok((acc.summary()?, hyps))
}
