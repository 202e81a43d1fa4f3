//! Unigram LM training as in SentencePiece: substring seeds, EM with a digamma M-step, loss-based pruning.

use std::collections::HashMap;

use super::{Prepared, TrainOptions, UNK_CHAR};
use crate::error::{Error, Result};
use crate::trie::PointerTrie as Trie;

const SEED_SIZE: usize = 1_000_000;
const SHRINKING_FACTOR: f64 = 0.75;
const NUM_SUB_ITERATIONS: usize = 2;
const UNK_PENALTY: f64 = 10.0;
const UNK: u32 = u32::MAX;

/// A word prepared for lattices: its UTF-8 bytes and the byte offset of each char.
struct Word {
    bytes: Vec<u8>,
    /// Byte offset of char i; one extra entry for the end.
    offsets: Vec<usize>,
    freq: f64,
}

struct Model {
    pieces: Vec<(String, f64)>,
    trie: Trie,
    min_score: f64,
}

impl Model {
    fn new(pieces: Vec<(String, f64)>) -> Self {
        let trie = Trie::new(
            pieces
                .iter()
                .enumerate()
                .map(|(i, p)| (p.0.as_bytes(), i as u32)),
        );
        let min_score = pieces.iter().map(|p| p.1).fold(f64::MAX, f64::min);
        Model {
            pieces,
            trie,
            min_score,
        }
    }

    /// Lattice nodes `(start char, end char, id, score)` grouped by start.
    fn nodes(&self, w: &Word, skip_whole: Option<u32>) -> Vec<Vec<(usize, u32, f64)>> {
        let n = w.offsets.len() - 1;
        let mut byte_to_char = vec![usize::MAX; w.bytes.len() + 1];
        for (i, &o) in w.offsets.iter().enumerate() {
            byte_to_char[o] = i;
        }
        let mut out = vec![Vec::new(); n];
        for (i, slot) in out.iter_mut().enumerate() {
            let start = w.offsets[i];
            let mut has_single = false;
            self.trie
                .common_prefix_search(&w.bytes[start..], |len, id| {
                    let e = byte_to_char[start + len];
                    if e == usize::MAX {
                        return;
                    }
                    if i == 0 && e == n && skip_whole == Some(id) {
                        return;
                    }
                    slot.push((e, id, self.pieces[id as usize].1));
                    if e == i + 1 {
                        has_single = true;
                    }
                });
            if !has_single && skip_whole.is_none() {
                slot.push((i + 1, UNK, self.min_score - UNK_PENALTY));
            }
        }
        out
    }

    /// Best path as (id) list, or None when no path exists.
    fn viterbi(&self, w: &Word, skip_whole: Option<u32>) -> Option<Vec<u32>> {
        let nodes = self.nodes(w, skip_whole);
        let n = nodes.len();
        let mut best = vec![(f64::NEG_INFINITY, usize::MAX, UNK); n + 1];
        best[0].0 = 0.0;
        for (s, ns) in nodes.iter().enumerate() {
            if best[s].0 == f64::NEG_INFINITY {
                continue;
            }
            for &(e, id, score) in ns {
                let c = best[s].0 + score;
                if c > best[e].0 {
                    best[e] = (c, s, id);
                }
            }
        }
        if best[n].0 == f64::NEG_INFINITY {
            return None;
        }
        let mut ids = Vec::new();
        let mut e = n;
        while e > 0 {
            ids.push(best[e].2);
            e = best[e].1;
        }
        ids.reverse();
        Some(ids)
    }
}

fn log_add(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    if b == f64::NEG_INFINITY {
        return a;
    }
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    hi + (lo - hi).exp().ln_1p()
}

fn digamma(mut x: f64) -> f64 {
    let mut result = 0.0;
    while x < 7.0 {
        result -= 1.0 / x;
        x += 1.0;
    }
    x -= 0.5;
    let xx = 1.0 / x;
    let xx2 = xx * xx;
    let xx4 = xx2 * xx2;
    result + x.ln() + (1.0 / 24.0) * xx2 - (7.0 / 960.0) * xx4 + (31.0 / 8064.0) * xx4 * xx2
        - (127.0 / 30720.0) * xx4 * xx4
}

fn sorted_by_score<K: Ord + Clone>(v: &mut [(K, f64)]) {
    v.sort_by(|a, b| {
        b.1.partial_cmp(&a.1)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.0.cmp(&b.0))
    });
}

pub(super) fn train(
    prep: &Prepared,
    opts: &TrainOptions,
    n_meta: usize,
) -> Result<Vec<(String, f32)>> {
    let words: Vec<Word> = prep
        .words
        .iter()
        .map(|(cs, f)| {
            let s: String = cs.iter().collect();
            let mut offsets: Vec<usize> = s.char_indices().map(|(i, _)| i).collect();
            offsets.push(s.len());
            Word {
                bytes: s.into_bytes(),
                offsets,
                freq: *f as f64,
            }
        })
        .collect();
    let mut model = Model::new(seeds(prep));
    let desired = (opts.vocab_size as f64 * 1.1) as usize;
    loop {
        for _ in 0..NUM_SUB_ITERATIONS {
            let expected = e_step(&model, &words);
            model = Model::new(m_step(&model, &expected));
            if model.pieces.is_empty() {
                return Err(Error::Train(
                    "no pieces survived EM (corpus too small?)".into(),
                ));
            }
        }
        if model.pieces.len() <= desired {
            break;
        }
        let pruned = prune(&model, &words, desired);
        if pruned.len() == model.pieces.len() {
            break;
        }
        model = Model::new(pruned);
    }
    Ok(finalize(&model, prep, opts.vocab_size - n_meta))
}

fn seeds(prep: &Prepared) -> Vec<(String, f64)> {
    let mut chars: HashMap<char, u64> = HashMap::new();
    let mut subs: HashMap<&[char], u64> = HashMap::new();
    for (w, f) in &prep.words {
        for &c in w {
            if c != UNK_CHAR {
                *chars.entry(c).or_insert(0) += f;
            }
        }
        for i in 0..w.len() {
            for len in 2..=prep.max_piece_len.min(w.len() - i) {
                let sub = &w[i..i + len];
                if !prep.is_valid_piece(sub) {
                    break;
                }
                *subs.entry(sub).or_insert(0) += f;
            }
        }
    }
    let mut char_seeds: Vec<(String, f64)> = chars
        .into_iter()
        .map(|(c, f)| (c.to_string(), f as f64))
        .collect();
    sorted_by_score(&mut char_seeds);
    let mut sub_seeds: Vec<(String, f64)> = subs
        .into_iter()
        .filter(|(_, f)| *f >= 2)
        .map(|(s, f)| (s.iter().collect::<String>(), (f * s.len() as u64) as f64))
        .collect();
    sorted_by_score(&mut sub_seeds);
    sub_seeds.truncate(SEED_SIZE);
    let mut all = char_seeds;
    all.extend(sub_seeds);
    let sum: f64 = all.iter().map(|p| p.1).sum();
    let logsum = sum.ln();
    for p in &mut all {
        p.1 = p.1.ln() - logsum;
    }
    all
}

fn e_step(model: &Model, words: &[Word]) -> Vec<f64> {
    let mut expected = vec![0.0f64; model.pieces.len()];
    for w in words {
        let nodes = model.nodes(w, None);
        let n = nodes.len();
        let mut alpha = vec![f64::NEG_INFINITY; n + 1];
        alpha[0] = 0.0;
        for (s, ns) in nodes.iter().enumerate() {
            if alpha[s] == f64::NEG_INFINITY {
                continue;
            }
            for &(e, _, score) in ns {
                alpha[e] = log_add(alpha[e], alpha[s] + score);
            }
        }
        let mut beta = vec![f64::NEG_INFINITY; n + 1];
        beta[n] = 0.0;
        for s in (0..n).rev() {
            for &(e, _, score) in &nodes[s] {
                beta[s] = log_add(beta[s], score + beta[e]);
            }
        }
        let z = alpha[n];
        if !z.is_finite() {
            continue;
        }
        for (s, ns) in nodes.iter().enumerate() {
            for &(e, id, score) in ns {
                if id != UNK {
                    expected[id as usize] += w.freq * (alpha[s] + score + beta[e] - z).exp();
                }
            }
        }
    }
    expected
}

fn m_step(model: &Model, expected: &[f64]) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let mut sum = 0.0;
    for (p, &f) in model.pieces.iter().zip(expected) {
        if f < 0.5 {
            continue;
        }
        out.push((p.0.clone(), f));
        sum += f;
    }
    let logsum = digamma(sum);
    for p in &mut out {
        p.1 = digamma(p.1) - logsum;
    }
    out
}

fn prune(model: &Model, words: &[Word], desired: usize) -> Vec<(String, f64)> {
    let n = model.pieces.len();
    let mut always_keep = vec![true; n];
    let mut alternatives: Vec<Vec<u32>> = vec![Vec::new(); n];
    for (i, (p, _)) in model.pieces.iter().enumerate() {
        let mut offsets: Vec<usize> = p.char_indices().map(|(k, _)| k).collect();
        offsets.push(p.len());
        let w = Word {
            bytes: p.as_bytes().to_vec(),
            offsets,
            freq: 1.0,
        };
        let best = model.viterbi(&w, None).unwrap_or_default();
        if best.len() >= 2 {
            always_keep[i] = false;
        } else if let Some(alt) = model.viterbi(&w, Some(i as u32)) {
            alternatives[i] = alt;
        }
    }
    let mut freq = vec![0.0f64; n];
    let mut inverted: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut vsum = 0.0;
    for (wi, w) in words.iter().enumerate() {
        vsum += w.freq;
        if let Some(ids) = model.viterbi(w, None) {
            for id in ids {
                if id != UNK {
                    freq[id as usize] += w.freq;
                    inverted[id as usize].push(wi as u32);
                }
            }
        }
    }
    let sum: f64 = freq.iter().sum();
    let logsum = sum.ln();
    let mut kept: Vec<(String, f64)> = Vec::new();
    let mut candidates: Vec<(usize, f64)> = Vec::new();
    for i in 0..n {
        if freq[i] == 0.0 || !always_keep[i] {
            continue;
        }
        if alternatives[i].is_empty() {
            kept.push(model.pieces[i].clone());
            continue;
        }
        let f: f64 = inverted[i]
            .iter()
            .map(|&wi| words[wi as usize].freq)
            .sum::<f64>()
            / vsum;
        let logprob_sp = freq[i].ln() - logsum;
        let logsum_alt = (sum + freq[i] * (alternatives[i].len() as f64 - 1.0)).ln();
        let logprob_alt: f64 = alternatives[i]
            .iter()
            .map(|&a| {
                if a == UNK {
                    0.0
                } else {
                    (freq[a as usize] + freq[i]).ln() - logsum_alt
                }
            })
            .sum();
        candidates.push((i, f * (logprob_sp - logprob_alt)));
    }
    sorted_by_score(&mut candidates);
    let pruned_size = desired.max((SHRINKING_FACTOR * n as f64) as usize);
    for (i, _) in candidates {
        if kept.len() >= pruned_size {
            break;
        }
        kept.push(model.pieces[i].clone());
    }
    kept
}

fn finalize(model: &Model, prep: &Prepared, size: usize) -> Vec<(String, f32)> {
    let scores: HashMap<&str, f64> = model.pieces.iter().map(|(p, s)| (p.as_str(), *s)).collect();
    let mut finals: Vec<(String, f64)> = Vec::new();
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut penalty = 0.0;
    for &(c, _) in &prep.required {
        let s = c.to_string();
        let score = match scores.get(s.as_str()) {
            Some(&sc) => sc,
            None => {
                let sc = model.min_score + penalty;
                penalty += 0.0001;
                sc
            }
        };
        seen.insert(s.clone());
        finals.push((s, score));
    }
    let mut rest: Vec<(String, f64)> = model.pieces.clone();
    sorted_by_score(&mut rest);
    for (p, s) in rest {
        if finals.len() >= size {
            break;
        }
        if seen.insert(p.clone()) {
            finals.push((p, s));
        }
    }
    sorted_by_score(&mut finals);
    finals.into_iter().map(|(p, s)| (p, s as f32)).collect()
}
