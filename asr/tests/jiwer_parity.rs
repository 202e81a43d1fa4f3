//! WER/CER parity with jiwer 4.0 (rapidfuzz 3.14) on the committed fixture `fixtures/jiwer_fixture.json`.

use anyhow::{anyhow, ensure, Context, Result};
use mezcla_asr::metrics::{self, AlignmentChunk, EditCounts, EditOp, EvalAccumulator, Utterance};
use serde_json::Value;

const FIXTURE: &str = include_str!("fixtures/jiwer_fixture.json");

fn fixture() -> Result<Value> {
    serde_json::from_str(FIXTURE).context("parsing jiwer_fixture.json")
}

fn field<'a>(v: &'a Value, key: &str) -> Result<&'a Value> {
    v.get(key)
        .ok_or_else(|| anyhow!("fixture entry lacks {key:?}"))
}

fn count(v: &Value, key: &str) -> Result<usize> {
    let n = field(v, key)?
        .as_u64()
        .ok_or_else(|| anyhow!("{key:?} is not a count"))?;
    Ok(usize::try_from(n)?)
}

fn rate(v: &Value, key: &str) -> Result<f64> {
    field(v, key)?
        .as_f64()
        .ok_or_else(|| anyhow!("{key:?} is not a number"))
}

fn text<'a>(v: &'a Value, key: &str) -> Result<&'a str> {
    field(v, key)?
        .as_str()
        .ok_or_else(|| anyhow!("{key:?} is not a string"))
}

/// The fixture's alignment encoding: `<tag><length>` per opcode.
fn rle(chunks: &[AlignmentChunk]) -> String {
    chunks
        .iter()
        .map(|c| match c.op {
            EditOp::Equal => format!("e{}", c.ref_end - c.ref_start),
            EditOp::Substitute => format!("s{}", c.ref_end - c.ref_start),
            EditOp::Delete => format!("d{}", c.ref_end - c.ref_start),
            EditOp::Insert => format!("i{}", c.hyp_end - c.hyp_start),
        })
        .collect()
}

fn close(ours: f64, theirs: f64, what: &str) -> Result<()> {
    ensure!(
        (ours - theirs).abs() < 1e-12,
        "{what}: mezcla {ours} vs jiwer {theirs}"
    );
    Ok(())
}

/// Counts must be equal; rates within 1e-12 when the reference is non-empty. With an empty
/// reference jiwer 4 reports the insertion count as WER; mezcla returns an error instead.
fn check_counts(ours: &EditCounts, jiwer: &Value, rate_key: &str, what: &str) -> Result<()> {
    for (name, value) in [
        ("hits", ours.hits),
        ("substitutions", ours.substitutions),
        ("deletions", ours.deletions),
        ("insertions", ours.insertions),
        ("reference_len", ours.reference_len),
    ] {
        ensure!(
            value == count(jiwer, name)?,
            "{what}: {name} mezcla {value} vs jiwer {}",
            count(jiwer, name)?
        );
    }
    if ours.reference_len == 0 {
        ensure!(
            ours.error_rate().is_err(),
            "{what}: empty reference must be an error"
        );
        ensure!(
            rate(jiwer, rate_key)? == ours.insertions as f64,
            "{what}: jiwer's empty-reference {rate_key} should be the insertion count"
        );
        return Ok(());
    }
    close(
        ours.error_rate()?,
        rate(jiwer, rate_key)?,
        &format!("{what} {rate_key}"),
    )?;
    if rate_key == "wer" {
        ensure!(
            ours.hypothesis_len == count(jiwer, "hypothesis_len")?,
            "{what}: hypothesis_len"
        );
        close(ours.mer()?, rate(jiwer, "mer")?, &format!("{what} mer"))?;
        close(ours.wil()?, rate(jiwer, "wil")?, &format!("{what} wil"))?;
        close(ours.wip()?, rate(jiwer, "wip")?, &format!("{what} wip"))?;
    }
    Ok(())
}

#[test]
fn pairs_match_jiwer_counts_rates_and_alignments() -> Result<()> {
    let fx = fixture()?;
    let pairs = field(&fx, "pairs")?
        .as_array()
        .ok_or_else(|| anyhow!("pairs is not a list"))?;
    assert!(pairs.len() >= 300, "fixture too small: {}", pairs.len());
    let mut empty_refs = 0;
    for (i, p) in pairs.iter().enumerate() {
        let (r, h) = (text(p, "reference")?, text(p, "hypothesis")?);
        let what = format!("pair {i} ({r:.40?} / {h:.40?})");
        let jw = field(p, "words")?;
        let jc = field(p, "chars")?;

        let words = metrics::process_words(&[r], &[h])?;
        check_counts(&words.counts, jw, "wer", &format!("{what} words"))?;
        assert_eq!(
            rle(&words.alignments[0]),
            text(jw, "alignment")?,
            "{what} word alignment"
        );

        let chars = metrics::process_characters(&[r], &[h])?;
        check_counts(&chars.counts, jc, "cer", &format!("{what} chars"))?;
        assert_eq!(
            rle(&chars.alignments[0]),
            text(jc, "alignment")?,
            "{what} char alignment"
        );

        if words.counts.reference_len == 0 {
            empty_refs += 1;
            assert!(
                metrics::wer(&[r], &[h]).is_err(),
                "{what}: wer() must error"
            );
        } else {
            close(metrics::wer(&[r], &[h])?, rate(jw, "wer")?, &what)?;
        }
        if chars.counts.reference_len > 0 {
            close(metrics::cer(&[r], &[h])?, rate(jc, "cer")?, &what)?;
        }
    }
    assert!(empty_refs >= 3, "fixture should exercise empty references");
    Ok(())
}

fn corpus_pairs<'a>(fx: &'a Value, corpus: &Value) -> Result<(Vec<&'a str>, Vec<&'a str>)> {
    let pairs = field(fx, "pairs")?
        .as_array()
        .ok_or_else(|| anyhow!("pairs is not a list"))?;
    let mut refs = Vec::new();
    let mut hyps = Vec::new();
    for i in field(corpus, "indices")?
        .as_array()
        .ok_or_else(|| anyhow!("indices is not a list"))?
    {
        let p = &pairs[usize::try_from(i.as_u64().ok_or_else(|| anyhow!("bad index"))?)?];
        refs.push(text(p, "reference")?);
        hyps.push(text(p, "hypothesis")?);
    }
    Ok((refs, hyps))
}

#[test]
fn corpora_match_jiwer() -> Result<()> {
    let fx = fixture()?;
    let corpora = field(&fx, "corpora")?
        .as_array()
        .ok_or_else(|| anyhow!("corpora is not a list"))?;
    for c in corpora {
        let name = text(c, "name")?;
        let (refs, hyps) = corpus_pairs(&fx, c)?;
        let words = metrics::process_words(&refs, &hyps)?;
        check_counts(&words.counts, field(c, "words")?, "wer", name)?;
        let chars = metrics::process_characters(&refs, &hyps)?;
        check_counts(&chars.counts, field(c, "chars")?, "cer", name)?;
        if name == "empty_references_only" {
            let err = metrics::wer(&refs, &hyps).expect_err("all-empty references must error");
            assert!(err.to_string().contains("reference is empty"), "{err}");
        }
    }
    Ok(())
}

/// The accumulator (one single-language segment per utterance) gives jiwer's corpus numbers.
#[test]
fn accumulator_matches_jiwer_corpus() -> Result<()> {
    let fx = fixture()?;
    let corpus = field(&fx, "corpora")?
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == "all"))
        .ok_or_else(|| anyhow!("no corpus named all"))?;
    let (refs, hyps) = corpus_pairs(&fx, corpus)?;
    let mut acc = EvalAccumulator::new();
    for (r, h) in refs.iter().zip(&hyps) {
        let reference = [(*r, "xx")];
        let hypothesis = [(*h, "xx")];
        acc.add(&Utterance {
            reference: &reference,
            hypothesis: &hypothesis,
            reference_tokens: None,
            hypothesis_tokens: None,
            reference_language: None,
            predicted_language: None,
            audio_seconds: 2.0,
            processing_seconds: 0.5,
        })?;
    }
    let s = acc.summary()?;
    check_counts(
        &s.words,
        field(corpus, "words")?,
        "wer",
        "accumulator words",
    )?;
    check_counts(
        &s.chars,
        field(corpus, "chars")?,
        "cer",
        "accumulator chars",
    )?;
    close(
        s.wer,
        rate(field(corpus, "words")?, "wer")?,
        "accumulator wer",
    )?;
    close(
        s.cer,
        rate(field(corpus, "chars")?, "cer")?,
        "accumulator cer",
    )?;
    let xx = &s.per_language["xx"];
    assert_eq!(xx.counts.reference_words, s.words.reference_len);
    assert_eq!(xx.wer, Some(s.wer));
    assert_eq!(s.rtfx, Some(4.0));
    Ok(())
}
