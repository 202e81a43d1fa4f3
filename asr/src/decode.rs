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
        let best = mezcla_models::vector_math::argmax(row) as u32;
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

/// What the beam search needs to know of each token id: whether its piece starts a word, and its text.
#[derive(Debug, Clone)]
pub struct Pieces(Vec<(bool, String)>);

impl Pieces {
    pub fn new(tok: &ConcatTokenizer) -> mezcla_tokenizer::Result<Self> {
        let mut out = Vec::with_capacity(tok.vocab_size());
        for id in 0..tok.vocab_size() as u32 {
            out.push((
                tok.id_to_piece(id)?.starts_with(SPACE_SYMBOL),
                tok.decode(&[id])?.trim().to_string(),
            ));
        }
        Ok(Self(out))
    }

    /// From raw pieces (`▁` marks a word start), for vocabularies without a tokenizer.
    pub fn from_pieces<'a>(pieces: impl IntoIterator<Item = &'a str>) -> Self {
        Self(
            pieces
                .into_iter()
                .map(|p| match p.strip_prefix(SPACE_SYMBOL) {
                    Some(rest) => (true, rest.to_string()),
                    None => (false, p.to_string()),
                })
                .collect(),
        )
    }

    fn get(&self, id: u32) -> (bool, &str) {
        self.0
            .get(id as usize)
            .map_or((false, ""), |(s, t)| (*s, t.as_str()))
    }
}

/// Shallow fusion of a word n-gram language model into the CTC prefix beam search. A prefix's score is
/// log P_ctc(prefix) + Σ over its finished words [alpha · (ln P_lm(word | history) + unk · [word unknown to the
/// LM]) + beta], plus alpha · ln P_lm(</s> | history) once the utterance ends; a word in progress that no LM
/// word starts with costs alpha · unk · max(1, chars / 6) until it is finished. These are pyctcdecode's
/// rules in natural logarithms (its kenlm model's unk offset is in log10 units and its partial-word cost
/// lacks alpha).
#[derive(Clone)]
pub struct LmFusion {
    lm: std::sync::Arc<crate::lm::NgramLm>,
    prefixes: std::sync::Arc<std::collections::HashSet<String>>,
    pub alpha: f32,
    pub beta: f32,
    pub unk: f32,
}

impl LmFusion {
    pub fn new(lm: std::sync::Arc<crate::lm::NgramLm>, alpha: f32, beta: f32, unk: f32) -> Self {
        Self {
            prefixes: std::sync::Arc::new(lm.word_prefixes()),
            lm,
            alpha,
            beta,
            unk,
        }
    }

    /// The same model with other weights (shares the model).
    pub fn with_weights(&self, alpha: f32, beta: f32, unk: f32) -> Self {
        Self {
            alpha,
            beta,
            unk,
            ..self.clone()
        }
    }

    pub fn lm(&self) -> &crate::lm::NgramLm {
        &self.lm
    }

    /// The fused score of finishing `word` after `context`, and the context after it.
    fn word(&self, context: &[u32], word: &str, last: bool) -> (f32, Vec<u32>) {
        const LN10: f32 = std::f32::consts::LN_10;
        let id = self.lm.id(word);
        let mut ln = self.lm.log10_prob(context, id) * LN10;
        if !self.lm.contains(word) {
            ln += self.unk;
        }
        let mut next: Vec<u32> = context.to_vec();
        next.push(id);
        let keep = self.lm.order().saturating_sub(1);
        if next.len() > keep {
            next.drain(..next.len() - keep);
        }
        if last {
            ln += self.lm.log10_prob(&next, self.lm.eos()) * LN10;
        }
        (self.alpha * ln + self.beta, next)
    }

    /// The fused LM score of a whole text (words separated by white space), </s> included: what the beam
    /// search adds to a finished hypothesis's acoustic score.
    pub fn text_score(&self, text: &str) -> f32 {
        let mut state = LmState {
            context: vec![self.lm.bos()],
            ..LmState::default()
        };
        for (i, w) in text.split_whitespace().enumerate() {
            state = self.extend(&state, i > 0, w);
        }
        self.end(&state)
    }

    /// The cost of a word in progress.
    fn partial(&self, partial: &str) -> f32 {
        if self.prefixes.contains(partial) {
            0.0
        } else {
            let chars = partial.chars().count() as f32;
            self.alpha * self.unk * (chars / 6.0).max(1.0)
        }
    }

    /// The fused score of the end of an utterance: its last word finished, then </s>.
    fn end(&self, state: &LmState) -> f32 {
        const LN10: f32 = std::f32::consts::LN_10;
        if state.partial.is_empty() {
            return state.score
                + self.alpha * self.lm.log10_prob(&state.context, self.lm.eos()) * LN10;
        }
        state.score + self.word(&state.context, &state.partial, true).0
    }

    /// The LM state after appending a token that starts a word or not, with its text.
    fn extend(&self, state: &LmState, starts_word: bool, text: &str) -> LmState {
        let mut next = state.clone();
        if starts_word && !state.partial.is_empty() {
            let (s, context) = self.word(&state.context, &state.partial, false);
            next.score += s;
            next.context = context;
            next.partial.clear();
        }
        next.partial.push_str(text);
        next.partial_cost = self.partial(&next.partial);
        next
    }
}

/// Where a prefix stands in the language model.
#[derive(Clone, Default)]
struct LmState {
    /// The last words of the history (ids), `<s>` first.
    context: Vec<u32>,
    /// Fused score of the finished words.
    score: f32,
    /// The word in progress and its cost.
    partial: String,
    partial_cost: f32,
}

/// One hypothesis: a text and the probability of all the paths that spell it, split by how they end (CTC's
/// recursion needs that: a token repeated without a blank between merges with itself).
#[derive(Clone)]
struct Beam {
    /// The text so far, words separated by one space (a trailing space once a new word has begun).
    text: String,
    /// log P(text, path ends in blank).
    blank: f32,
    /// log P(text, path ends in token `id`), for each last token.
    tokens: Vec<(u32, f32)>,
    /// The ids and frames of the most probable single path to this text, and its score.
    ids: Vec<u32>,
    frames: Vec<usize>,
    best: f32,
    lm: LmState,
}

impl Beam {
    fn new(text: String, lm: LmState) -> Self {
        Beam {
            text,
            blank: f32::NEG_INFINITY,
            tokens: Vec::new(),
            ids: Vec::new(),
            frames: Vec::new(),
            best: f32::NEG_INFINITY,
            lm,
        }
    }

    fn total(&self) -> f32 {
        self.tokens
            .iter()
            .fold(self.blank, |acc, &(_, p)| log_add(acc, p))
    }

    /// log P of the paths that a new token `c` extends into a longer text: all but those ending in `c`.
    fn extendable_by(&self, c: u32) -> f32 {
        self.tokens
            .iter()
            .filter(|&&(id, _)| id != c)
            .fold(self.blank, |acc, &(_, p)| log_add(acc, p))
    }

    fn add_token(&mut self, id: u32, p: f32) {
        match self.tokens.iter_mut().find(|(i, _)| *i == id) {
            Some((_, q)) => *q = log_add(*q, p),
            None => self.tokens.push((id, p)),
        }
    }

    /// Keeps `ids` and `frames` of the path scoring `score` if it beats the best so far.
    fn offer(&mut self, score: f32, ids: &[u32], frames: &[usize], new: Option<(u32, usize)>) {
        if score > self.best {
            self.best = score;
            self.ids.clear();
            self.ids.extend_from_slice(ids);
            self.frames.clear();
            self.frames.extend_from_slice(frames);
            if let Some((id, t)) = new {
                self.ids.push(id);
                self.frames.push(t);
            }
        }
    }

    /// The score that ranks hypotheses: acoustic, plus the LM's when fused.
    fn rank(&self) -> f32 {
        self.total() + self.lm.score + self.lm.partial_cost
    }
}

/// How far (natural log) below a frame's most probable class a token may be and still extend a text.
pub const TOKEN_PRUNE: f32 = 10.0;

/// CTC prefix beam search over texts, keeping the `beam` best texts, with a word language model fused into
/// their ranking when `lm` is given. All the token sequences that spell the same text (other segmentations,
/// the same piece in another language) are summed, as pyctcdecode does; the ids, languages and frames
/// reported are those of the best text's most probable single path. Only the `beam + 1` most probable
/// tokens of each frame, and none more than `TOKEN_PRUNE` below its best, extend a text.
pub fn prefix_beam(
    lp: LogProbs,
    blank: u32,
    beam: usize,
    pieces: &Pieces,
    lm: Option<&LmFusion>,
) -> Vec<Emission> {
    beam_search(lp, blank, beam, pieces, lm)
        .into_iter()
        .next()
        .expect("the beam is never empty")
        .emissions
}

/// One finished hypothesis of the beam search.
#[derive(Debug, Clone)]
pub struct BeamHypothesis {
    /// The text, words separated by single spaces.
    pub text: String,
    /// The tokens of its most probable single path.
    pub emissions: Vec<Emission>,
    /// log P_ctc(text): all the paths that spell it (as far as the beam kept them).
    pub acoustic: f32,
    /// The ranking score: `acoustic` plus the LM's fused score (equal to `acoustic` without an LM).
    pub score: f32,
}

/// The beam search of `prefix_beam`, returning every hypothesis left at the end, best first.
pub fn beam_search(
    lp: LogProbs,
    blank: u32,
    beam: usize,
    pieces: &Pieces,
    lm: Option<&LmFusion>,
) -> Vec<BeamHypothesis> {
    use std::collections::HashMap;
    let beam = beam.max(1);
    let start = LmState {
        context: lm.map(|f| vec![f.lm.bos()]).unwrap_or_default(),
        ..LmState::default()
    };
    let mut first = Beam::new(String::new(), start);
    first.blank = 0.0;
    first.best = 0.0;
    let mut beams = vec![first];
    for t in 0..lp.frames {
        let row = lp.row(t);
        let mut order: Vec<usize> = (0..lp.classes).filter(|&c| c as u32 != blank).collect();
        let keep = (beam + 1).min(order.len());
        if keep < order.len() {
            order.select_nth_unstable_by(keep, |&a, &b| row[b].total_cmp(&row[a]));
            order.truncate(keep);
        }
        // Nor is a token far below the frame's best one worth a try: its paths weigh e^-TOKEN_PRUNE of those.
        let top = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        order.retain(|&c| row[c] >= top - TOKEN_PRUNE);
        let mut next: HashMap<String, Beam> = HashMap::new();
        let pb = row[blank as usize];
        for b in &beams {
            // The same text: a blank, or the last token repeated without a blank between.
            let e = next
                .entry(b.text.clone())
                .or_insert_with(|| Beam::new(b.text.clone(), b.lm.clone()));
            let stay = b.total() + pb;
            e.blank = log_add(e.blank, stay);
            let mut stay_best = b.best + pb;
            for &(id, p) in &b.tokens {
                e.add_token(id, p + row[id as usize]);
                if b.ids.last() == Some(&id) {
                    stay_best = stay_best.max(b.best + row[id as usize]);
                }
            }
            e.offer(stay_best, &b.ids, &b.frames, None);
            // A longer text.
            for &c in &order {
                let c = c as u32;
                let from = b.extendable_by(c);
                if from == f32::NEG_INFINITY {
                    continue;
                }
                let p = row[c as usize];
                let (starts_word, piece) = pieces.get(c);
                // Words are separated by one space whatever pieces mark the boundary (`▁`, `▁` + `▁x`).
                let mut text = b.text.clone();
                if starts_word && !text.is_empty() && !text.ends_with(' ') {
                    text.push(' ');
                }
                text.push_str(piece);
                let e = next.entry(text).or_insert_with_key(|text| {
                    Beam::new(
                        text.clone(),
                        match lm {
                            Some(f) => f.extend(&b.lm, starts_word, piece),
                            None => LmState::default(),
                        },
                    )
                });
                e.add_token(c, from + p);
                // The ids of the new text: those of this text's best path and `c` (through a blank when that
                // path ends in `c`; its score then counts the path without the blank, a close bound). A bare
                // word boundary (`▁`) right before a token that starts a word is dropped: it spells nothing.
                let mut keep = b.ids.len();
                if starts_word && b.ids.last().is_some_and(|&l| pieces.get(l) == (true, "")) {
                    keep -= 1;
                }
                e.offer(b.best + p, &b.ids[..keep], &b.frames[..keep], Some((c, t)));
            }
        }
        let mut all: Vec<Beam> = next.into_values().collect();
        all.sort_by(|a, b| {
            b.rank()
                .total_cmp(&a.rank())
                .then_with(|| a.text.cmp(&b.text))
        });
        all.truncate(beam);
        beams = all;
    }
    // The end: the LM finishes the last word and scores </s>, and texts that differ only by a trailing word
    // boundary (a last `▁` piece) are one text.
    let mut ended: HashMap<String, Beam> = HashMap::new();
    for mut b in beams {
        if let Some(f) = lm {
            b.lm.score = f.end(&b.lm);
            b.lm.partial_cost = 0.0;
        }
        let text = b.text.trim_end().to_string();
        match ended.get_mut(&text) {
            None => {
                b.text = text.clone();
                ended.insert(text, b);
            }
            Some(e) => {
                // Nothing follows, so how the paths end no longer matters.
                e.blank = log_add(e.total(), b.total());
                e.tokens.clear();
                if b.best > e.best {
                    e.best = b.best;
                    e.ids = b.ids;
                    e.frames = b.frames;
                }
            }
        }
    }
    let mut beams: Vec<Beam> = ended.into_values().collect();
    beams.sort_by(|a, b| {
        b.rank()
            .total_cmp(&a.rank())
            .then_with(|| a.text.cmp(&b.text))
    });
    beams
        .into_iter()
        .map(|b| BeamHypothesis {
            acoustic: b.total(),
            score: b.rank(),
            text: b.text,
            emissions: b
                .ids
                .iter()
                .zip(&b.frames)
                .map(|(&id, &f)| Emission {
                    id,
                    start: f,
                    end: f + 1,
                })
                .collect(),
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
        let best = prefix_beam(lp, 2, 4, &Pieces::from_pieces(["▁a", "▁b", ""]), None);
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
    fn a_wide_beam_sums_every_path_of_each_text() {
        // Pieces that spell one text in several ways ("▁a" + "a", "▁" + "a" + "a", ...), a bare word
        // boundary, and a blank; every labelling of 5 frames enumerated, each text's probability summed.
        let names = ["▁a", "a", "▁", "b", ""];
        let rows: Vec<[f32; 5]> = vec![
            [0.3, 0.2, 0.1, 0.15, 0.25],
            [0.1, 0.35, 0.2, 0.05, 0.3],
            [0.25, 0.25, 0.1, 0.2, 0.2],
            [0.05, 0.3, 0.3, 0.15, 0.2],
            [0.2, 0.1, 0.1, 0.3, 0.3],
        ];
        let data: Vec<f32> = rows.iter().flat_map(|r| r.map(f32::ln)).collect();
        let lp = LogProbs {
            data: &data,
            frames: rows.len(),
            classes: names.len(),
        };
        let mut texts = std::collections::HashMap::<String, f64>::new();
        for path in 0..5usize.pow(5) {
            let labels: Vec<usize> = (0..5).map(|t| path / 5usize.pow(t as u32) % 5).collect();
            let (mut spelt, mut prev, mut p) = (String::new(), 4usize, 1f64);
            for (t, &l) in labels.iter().enumerate() {
                p *= rows[t][l] as f64;
                if l != 4 && l != prev {
                    spelt.push_str(names[l]);
                }
                prev = l;
            }
            let text = spelt
                .replace('▁', " ")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            *texts.entry(text).or_default() += p;
        }
        let got = beam_search(lp, 4, 10_000, &Pieces::from_pieces(names), None);
        assert_eq!(got.len(), texts.len());
        for h in &got {
            let want = texts[&h.text].ln();
            assert!(
                (h.acoustic as f64 - want).abs() < 1e-5,
                "{}: {} vs {want}",
                h.text,
                h.acoustic
            );
        }
        let best = texts.iter().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        assert_eq!(&got[0].text, best);
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
        let ids: Vec<u32> = prefix_beam(lp, 2, 3, &Pieces::from_pieces(["▁a", "▁b", ""]), None)
            .iter()
            .map(|e| e.id)
            .collect();
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
