//! End-to-end: the built-in default model (`mezcla transcribe` with no `--model`) on the shipped code-switched
//! examples from the English–Spanish recipe's test split, checked against their references: a small WER bound,
//! the language switches where the references switch, and every reference segment's language.

use mezcla_asr::metrics::{align, wer, EditOp};
use mezcla_tests::{examples, ok, words_and_langs};
use serde_json::Value;

/// Word error rate allowed over all the example files together: the shipped model (run 8, the recipe's 2-hour
/// run, with its word LM) makes 15 errors in the 62 words (24.2 %); two more than that fails.
const MAX_WER: f64 = 0.26;

struct Reference {
    wav: String,
    /// (word, language) of the reference, segment by segment.
    words: Vec<(String, String)>,
    /// Index of the segment of each reference word.
    segment_of: Vec<usize>,
    segments: Vec<String>,
}

fn references() -> Vec<Reference> {
    let dir = examples("cs");
    let text = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
    text.lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            let mut r = Reference {
                wav: dir
                    .join(v["audio_filepath"].as_str().unwrap())
                    .display()
                    .to_string(),
                words: Vec::new(),
                segment_of: Vec::new(),
                segments: Vec::new(),
            };
            for (i, seg) in v["text"].as_array().unwrap().iter().enumerate() {
                let lang = seg["lang"].as_str().unwrap().to_string();
                for w in seg["str"].as_str().unwrap().split_whitespace() {
                    r.words.push((w.to_string(), lang.clone()));
                    r.segment_of.push(i);
                }
                r.segments.push(lang);
            }
            r
        })
        .collect()
}

#[test]
fn the_default_model_transcribes_the_code_switched_examples_with_their_languages() {
    let refs = references();
    assert!(refs.len() >= 3, "examples/cs holds a few files");
    let mut args = vec!["transcribe", "--format", "json"];
    args.extend(refs.iter().map(|r| r.wav.as_str()));
    let out = ok(&args);
    let got: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), refs.len());

    let mut ref_texts = Vec::new();
    let mut hyp_texts = Vec::new();
    for (r, g) in refs.iter().zip(&got) {
        assert_eq!(g["audio_filepath"], r.wav.as_str());
        let hyp = words_and_langs(g);
        let ref_words: Vec<&str> = r.words.iter().map(|w| w.0.as_str()).collect();
        let hyp_words: Vec<&str> = hyp.iter().map(|w| w.0.as_str()).collect();
        // The languages switch where the reference's do: the runs of the words' languages are the reference
        // segments' languages (consecutive segments of one language are one run), so every switch is found
        // and none is added.
        let runs = |langs: &mut dyn Iterator<Item = &str>| {
            let mut out: Vec<String> = Vec::new();
            for l in langs {
                if out.last().map(String::as_str) != Some(l) {
                    out.push(l.to_string());
                }
            }
            out
        };
        let want = runs(&mut r.segments.iter().map(String::as_str));
        let have = runs(&mut hyp.iter().map(|w| w.1.as_str()));
        assert_eq!(have, want, "{}: language runs of {}", r.wav, g["text"]);
        // Every reference segment gets at least one word in its language among the words aligned to it (hits
        // and substitutions).
        let mut same = vec![0usize; r.segments.len()];
        for chunk in align(&ref_words, &hyp_words) {
            if matches!(chunk.op, EditOp::Equal | EditOp::Substitute) {
                for k in 0..chunk.ref_end - chunk.ref_start {
                    let seg = r.segment_of[chunk.ref_start + k];
                    if hyp[chunk.hyp_start + k].1 == r.segments[seg] {
                        same[seg] += 1;
                    }
                }
            }
        }
        for (seg, n) in same.iter().enumerate() {
            assert!(
                *n > 0,
                "{}: no word of segment {seg} ({}) is in its language: {}",
                r.wav,
                r.segments[seg],
                g["text"]
            );
        }
        ref_texts.push(ref_words.join(" "));
        hyp_texts.push(g["text"].as_str().unwrap().to_string());
    }
    let w = wer(&ref_texts, &hyp_texts).unwrap();
    assert!(
        w <= MAX_WER,
        "WER {w:.3} over the examples: {hyp_texts:?} vs {ref_texts:?}"
    );

    // The text format shows the language runs of the first example.
    let tagged = ok(&["transcribe", &refs[0].wav]);
    for lang in &refs[0].segments {
        assert!(tagged.contains(&format!("[{lang}] ")), "{tagged}");
    }
}
