//! CTC decoding (greedy and prefix beam search) into tokens, words and languages with timestamps.

use mezcla_tokenizer::{ConcatTokenizer, SPACE_SYMBOL};
use serde::Serialize;

/// One emitted token: its id and the frames it spans (`start` inclusive, `end` exclusive).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Emission {
    pub id: u32,
    pub start: usize,
    pub end: usize,
}

/// Log-probabilities of one utterance: `frames` rows of `classes` values.
#[derive(Debug, Clone, Copy)]
pub struct LogProbs<'a> {
    pub data: &'a [f32],
    pub frames: usize,
    pub classes: usize,
}

impl LogProbs<'_> {
    fn row(&self, t: usize) -> &[f32] {
        &self.data[t * self.classes..(t + 1) * self.classes]
    }
}

/// Greedy CTC: the best class per frame, repeats merged, blanks dropped.
pub fn greedy(lp: LogProbs, blank: u32) -> Vec<Emission> {
    let mut out: Vec<Emission> = Vec::new();
    let mut prev = blank;
    for t in 0..lp.frames {
        let row = lp.row(t);
        let best = row
            .iter()
            .enumerate()
            .fold((0usize, f32::NEG_INFINITY), |b, (i, &v)| {
                if v > b.1 {
                    (i, v)
                } else {
                    b
                }
            })
            .0 as u32;
        if best != blank {
            if best == prev {
                if let Some(last) = out.last_mut() {
                    last.end = t + 1;
                }
            } else {
                out.push(Emission {
                    id: best,
                    start: t,
                    end: t + 1,
                });
            }
        }
        prev = best;
    }
    out
}

fn log_add(a: f32, b: f32) -> f32 {
    if a == f32::NEG_INFINITY {
        return b;
    }
    if b == f32::NEG_INFINITY {
        return a;
    }
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    hi + (lo - hi).exp().ln_1p()
}

#[derive(Clone)]
struct Beam {
    ids: Vec<u32>,
    frames: Vec<usize>,
    /// log P(prefix, path ends in blank) and log P(prefix, path ends in its last token).
    blank: f32,
    token: f32,
    /// The largest single contribution so far; `frames` come from it.
    best: f32,
}

impl Beam {
    fn total(&self) -> f32 {
        log_add(self.blank, self.token)
    }
}

/// CTC prefix beam search (no language model) keeping `beam` prefixes; each token's frame comes from the
/// most probable single extension that produced its prefix. With `beam` 1 this is close to, but not always
/// equal to, greedy.
pub fn prefix_beam(lp: LogProbs, blank: u32, beam: usize) -> Vec<Emission> {
    use std::collections::HashMap;
    let beam = beam.max(1);
    let mut beams = vec![Beam {
        ids: Vec::new(),
        frames: Vec::new(),
        blank: 0.0,
        token: f32::NEG_INFINITY,
        best: 0.0,
    }];
    for t in 0..lp.frames {
        let row = lp.row(t);
        // Only the most likely classes can extend a prefix into the beam.
        let mut order: Vec<usize> = (0..lp.classes).filter(|&c| c as u32 != blank).collect();
        let keep = (beam + 1).min(order.len());
        if keep < order.len() {
            order.select_nth_unstable_by(keep, |&a, &b| row[b].total_cmp(&row[a]));
            order.truncate(keep);
        }
        let mut next: HashMap<Vec<u32>, Beam> = HashMap::new();
        let pb = row[blank as usize];
        for b in &beams {
            // Stay on the same prefix: blank, or a repeat of the last token without a blank between.
            let e = next.entry(b.ids.clone()).or_insert_with(|| Beam {
                ids: b.ids.clone(),
                frames: b.frames.clone(),
                blank: f32::NEG_INFINITY,
                token: f32::NEG_INFINITY,
                best: f32::NEG_INFINITY,
            });
            let mut stay = b.total() + pb;
            e.blank = log_add(e.blank, stay);
            if let Some(&last) = b.ids.last() {
                let repeat = b.token + row[last as usize];
                e.token = log_add(e.token, repeat);
                stay = stay.max(repeat);
            }
            if stay > e.best {
                e.best = stay;
                e.frames = b.frames.clone();
            }
            for &c in &order {
                let c = c as u32;
                let p = row[c as usize];
                // A repeat only extends through a blank.
                let from = if b.ids.last() == Some(&c) {
                    b.blank
                } else {
                    b.total()
                };
                if from == f32::NEG_INFINITY {
                    continue;
                }
                let mut ids = b.ids.clone();
                ids.push(c);
                let score = from + p;
                let e = next.entry(ids.clone()).or_insert_with(|| Beam {
                    ids,
                    frames: Vec::new(),
                    blank: f32::NEG_INFINITY,
                    token: f32::NEG_INFINITY,
                    best: f32::NEG_INFINITY,
                });
                e.token = log_add(e.token, score);
                if score > e.best {
                    e.best = score;
                    e.frames = b.frames.clone();
                    e.frames.push(t);
                }
            }
        }
        let mut all: Vec<Beam> = next.into_values().collect();
        all.sort_by(|a, b| {
            b.total()
                .total_cmp(&a.total())
                .then_with(|| a.ids.cmp(&b.ids))
        });
        all.truncate(beam);
        beams = all;
    }
    let best = beams.into_iter().next().expect("the beam is never empty");
    best.ids
        .iter()
        .zip(&best.frames)
        .map(|(&id, &f)| Emission {
            id,
            start: f,
            end: f + 1,
        })
        .collect()
}

/// A token with its text, language and times (seconds).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Token {
    pub id: u32,
    pub piece: String,
    pub lang: String,
    pub start: f64,
    pub end: f64,
}

/// A word with its majority language and times (seconds).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Word {
    pub word: String,
    pub lang: String,
    pub start: f64,
    pub end: f64,
}

/// A decoded utterance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transcript {
    pub text: String,
    /// Utterance language by majority vote of the tokens (ties: the language seen first); "" when empty.
    pub lang: String,
    pub words: Vec<Word>,
    pub tokens: Vec<Token>,
}

impl Transcript {
    pub fn token_ids(&self) -> Vec<u32> {
        self.tokens.iter().map(|t| t.id).collect()
    }

    /// Text with a language tag at each change of language: `[en] I told her [es] que no quería ir`.
    pub fn tagged_text(&self) -> String {
        let mut out = String::new();
        let mut current = "";
        for w in &self.words {
            if w.lang != current {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(&format!("[{}]", w.lang));
                current = &w.lang;
            }
            out.push(' ');
            out.push_str(&w.word);
        }
        out
    }
}

/// The punctuation marks of a vocabulary, as NeMo's `extract_punctuation_from_vocab` finds them: characters of
/// Unicode category P* in pieces that are not special (`[..]`, `<..>`, `##..`, `▁..`, blank).
pub fn vocabulary_punctuation(tok: &ConcatTokenizer) -> Vec<char> {
    use unicode_categories::UnicodeCategories;
    let mut marks = Vec::new();
    for id in 0..tok.vocab_size() as u32 {
        let Ok(piece) = tok.id_to_piece(id) else {
            continue;
        };
        let special = (piece.starts_with('[') && piece.ends_with(']') && piece.len() >= 2)
            || (piece.starts_with('<') && piece.ends_with('>') && piece.len() >= 2)
            || piece.starts_with("##")
            || piece.starts_with(SPACE_SYMBOL)
            || piece.trim().is_empty();
        if special {
            continue;
        }
        for c in piece.chars() {
            if c.is_punctuation() && !marks.contains(&c) {
                marks.push(c);
            }
        }
    }
    marks
}

/// Removes one whitespace character before each of `marks` ("hola , qué ?" → "hola, qué?"), as NeMo's
/// `transcribe()` does for the punctuation of the model's vocabulary.
pub fn remove_space_before_punctuation(text: &str, marks: &[char]) -> String {
    if marks.is_empty() {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_whitespace() && i + 1 < chars.len() && marks.contains(&chars[i + 1]) {
            out.push(chars[i + 1]);
            i += 2;
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// Turns emissions into text, tokens, words and languages; `frame_seconds` is the duration of one output
/// frame (window stride × subsampling factor), `offset` is added to every time.
pub fn transcript(
    tok: &ConcatTokenizer,
    emissions: &[Emission],
    frame_seconds: f64,
    offset: f64,
) -> mezcla_tokenizer::Result<Transcript> {
    let ids: Vec<u32> = emissions.iter().map(|e| e.id).collect();
    let mut tokens = Vec::with_capacity(ids.len());
    for e in emissions {
        tokens.push(Token {
            id: e.id,
            piece: tok.id_to_piece(e.id)?.to_string(),
            lang: tok.id_to_lang(e.id)?.to_string(),
            start: offset + e.start as f64 * frame_seconds,
            end: offset + e.end as f64 * frame_seconds,
        });
    }
    let mut words = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let mut j = i + 1;
        while j < tokens.len() && !tokens[j].piece.starts_with(SPACE_SYMBOL) {
            j += 1;
        }
        let text = tok.decode(&ids[i..j])?.trim().to_string();
        if !text.is_empty() {
            words.push(Word {
                word: text,
                lang: tok.ids_to_lang(&ids[i..j])?.to_string(),
                start: tokens[i].start,
                end: tokens[j - 1].end,
            });
        }
        i = j;
    }
    let text = tok.decode(&ids)?;
    Ok(Transcript {
        text: remove_space_before_punctuation(text.trim(), &vocabulary_punctuation(tok)),
        lang: tok.ids_to_lang(&ids)?.to_string(),
        words,
        tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Log-probabilities from per-frame probability rows.
    fn lp(rows: &[&[f32]]) -> (Vec<f32>, usize, usize) {
        let c = rows[0].len();
        (
            rows.iter().flat_map(|r| r.iter().map(|p| p.ln())).collect(),
            rows.len(),
            c,
        )
    }

    #[test]
    fn greedy_merges_repeats_and_drops_blanks() {
        // classes: 0, 1, blank = 2
        let (data, frames, classes) = lp(&[
            &[0.8, 0.1, 0.1],
            &[0.7, 0.2, 0.1],
            &[0.1, 0.1, 0.8],
            &[0.6, 0.3, 0.1],
            &[0.1, 0.8, 0.1],
            &[0.1, 0.1, 0.8],
        ]);
        let e = greedy(
            LogProbs {
                data: &data,
                frames,
                classes,
            },
            2,
        );
        assert_eq!(
            e,
            vec![
                Emission {
                    id: 0,
                    start: 0,
                    end: 2
                },
                Emission {
                    id: 0,
                    start: 3,
                    end: 4
                },
                Emission {
                    id: 1,
                    start: 4,
                    end: 5
                }
            ]
        );
    }

    #[test]
    fn beam_search_finds_the_prefix_greedy_misses() {
        // Greedy picks blank at both frames, giving "" with probability 0.18. The prefix "a" sums
        // a·a, a·blank, blank·a = 0.105 + 0.1575 + 0.12 = 0.3825 ("b" gets 0.275); its most probable single
        // path, a·blank, emits it at frame 0.
        let (data, frames, classes) = lp(&[&[0.35, 0.25, 0.4], &[0.3, 0.25, 0.45]]);
        let lp = LogProbs {
            data: &data,
            frames,
            classes,
        };
        assert!(greedy(lp, 2).is_empty());
        let best = prefix_beam(lp, 2, 4);
        assert_eq!(best.len(), 1);
        assert_eq!(best[0].start, 0);
        // Brute force over all alignments agrees on the most likely labelling.
        let mut scores = std::collections::HashMap::<Vec<u32>, f32>::new();
        for a in 0..3u32 {
            for b in 0..3u32 {
                let mut out = Vec::new();
                let mut prev = 2;
                for &x in &[a, b] {
                    if x != 2 && x != prev {
                        out.push(x);
                    }
                    prev = x;
                }
                *scores.entry(out).or_default() += (data[a as usize] + data[3 + b as usize]).exp();
            }
        }
        let brute = scores.iter().max_by(|a, b| a.1.total_cmp(b.1)).unwrap();
        assert_eq!(best.iter().map(|e| e.id).collect::<Vec<_>>(), *brute.0);
    }

    #[test]
    fn beam_search_keeps_repeats_separated_by_blanks() {
        let (data, frames, classes) =
            lp(&[&[0.9, 0.05, 0.05], &[0.05, 0.05, 0.9], &[0.9, 0.05, 0.05]]);
        let lp = LogProbs {
            data: &data,
            frames,
            classes,
        };
        let ids: Vec<u32> = prefix_beam(lp, 2, 3).iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![0, 0]);
        assert_eq!(greedy(lp, 2).len(), 2);
    }

    #[test]
    fn a_space_before_vocabulary_punctuation_is_removed_once() {
        let marks = [',', '?', '.'];
        assert_eq!(
            remove_space_before_punctuation("hola , qué tal ?", &marks),
            "hola, qué tal?"
        );
        // One space only, as NeMo's `(\s)(p)` substitution: a doubled space is the model's error to keep.
        assert_eq!(remove_space_before_punctuation("a  , b", &marks), "a , b");
        assert_eq!(remove_space_before_punctuation("a , . ,", &marks), "a,.,");
        // Marks outside the vocabulary and text without marks are left alone.
        assert_eq!(
            remove_space_before_punctuation("a ; b !", &marks),
            "a ; b !"
        );
        assert_eq!(remove_space_before_punctuation("a , b", &[]), "a , b");
    }
}
