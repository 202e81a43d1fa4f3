//! BPE training: merge the most frequent adjacent pair (ties: shorter, then smaller string), as SentencePiece.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use super::{Prepared, TrainOptions};
use crate::error::{Error, Result};

/// A fast multiplicative hasher for small integer keys (FxHash).
#[derive(Default, Clone, Copy)]
struct Fx(u64);

impl Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<Fx>>;

pub(super) fn train(
    prep: &Prepared,
    opts: &TrainOptions,
    n_meta: usize,
) -> Result<Vec<(String, f32)>> {
    let target = opts.vocab_size.saturating_sub(n_meta + prep.required.len());
    let mut sym_chars: Vec<Vec<char>> = Vec::new();
    let mut sym_ids: HashMap<Vec<char>, u32> = HashMap::new();
    let mut intern = |cs: Vec<char>, sym_chars: &mut Vec<Vec<char>>| -> u32 {
        *sym_ids.entry(cs.clone()).or_insert_with(|| {
            sym_chars.push(cs);
            (sym_chars.len() - 1) as u32
        })
    };
    let mut words: Vec<Vec<u32>> = Vec::with_capacity(prep.words.len());
    let freqs: Vec<i64> = prep.words.iter().map(|w| w.1 as i64).collect();
    for (w, _) in &prep.words {
        words.push(w.iter().map(|&c| intern(vec![c], &mut sym_chars)).collect());
    }
    let mut valid_cache: FxMap<(u32, u32), bool> = FxMap::default();
    let mut is_valid = |a: u32, b: u32, sym_chars: &Vec<Vec<char>>| -> bool {
        *valid_cache.entry((a, b)).or_insert_with(|| {
            let mut cs = sym_chars[a as usize].clone();
            cs.extend_from_slice(&sym_chars[b as usize]);
            prep.is_valid_piece(&cs)
        })
    };
    let mut counts: FxMap<(u32, u32), i64> = FxMap::default();
    let mut where_: FxMap<(u32, u32), Vec<u32>> = FxMap::default();
    for (wi, w) in words.iter().enumerate() {
        for p in w.windows(2) {
            if is_valid(p[0], p[1], &sym_chars) {
                *counts.entry((p[0], p[1])).or_insert(0) += freqs[wi];
                where_.entry((p[0], p[1])).or_default().push(wi as u32);
            }
        }
    }
    // Heap order: frequency, then fewer chars; ties in both are resolved by the smaller string when popped, as
    // SentencePiece does. Decrements do not push (lazy heap): a popped entry whose count is stale is re-queued.
    type Entry = (i64, Reverse<usize>, u32, u32);
    let entry = |a: u32, b: u32, c: i64, sym_chars: &Vec<Vec<char>>| -> Entry {
        (
            c,
            Reverse(sym_chars[a as usize].len() + sym_chars[b as usize].len()),
            a,
            b,
        )
    };
    let concat = |a: u32, b: u32, sym_chars: &Vec<Vec<char>>| -> String {
        sym_chars[a as usize]
            .iter()
            .chain(&sym_chars[b as usize])
            .collect()
    };
    let mut heap: BinaryHeap<Entry> = counts
        .iter()
        .map(|(&(a, b), &c)| entry(a, b, c, &sym_chars))
        .collect();
    let mut finals: Vec<(String, f32)> = Vec::new();
    let mut dup: HashSet<String> = HashSet::new();
    while finals.len() < target {
        let Some(top) = heap.pop() else { break };
        let (c, len, _, _) = top;
        let current = counts.get(&(top.2, top.3)).copied().unwrap_or(0);
        if current != c {
            if current > 0 {
                heap.push(entry(top.2, top.3, current, &sym_chars));
            }
            continue;
        }
        let mut ties = vec![top];
        while let Some(&next) = heap.peek() {
            if next.0 != c || next.1 != len {
                break;
            }
            heap.pop();
            let current = counts.get(&(next.2, next.3)).copied().unwrap_or(0);
            if current == next.0 {
                ties.push(next);
            } else if current > 0 {
                heap.push(entry(next.2, next.3, current, &sym_chars));
            }
        }
        let best = (0..ties.len())
            .min_by_key(|&i| concat(ties[i].2, ties[i].3, &sym_chars))
            .expect("one tie at least");
        let (_, _, a, b) = ties.swap_remove(best);
        heap.extend(ties);
        let s = concat(a, b, &sym_chars);
        counts.remove(&(a, b));
        if !dup.insert(s.clone()) {
            continue;
        }
        finals.push((s, -(finals.len() as f32)));
        let mut merged = sym_chars[a as usize].clone();
        merged.extend_from_slice(&sym_chars[b as usize]);
        let new = intern(merged, &mut sym_chars);
        let mut locs = where_.remove(&(a, b)).unwrap_or_default();
        locs.sort_unstable();
        locs.dedup();
        let mut delta: FxMap<(u32, u32), i64> = FxMap::default();
        for wi in locs {
            let wi = wi as usize;
            let f = freqs[wi];
            let old = std::mem::take(&mut words[wi]);
            let mut next = Vec::with_capacity(old.len());
            let mut i = 0;
            while i < old.len() {
                if i + 1 < old.len() && old[i] == a && old[i + 1] == b {
                    next.push(new);
                    i += 2;
                } else {
                    next.push(old[i]);
                    i += 1;
                }
            }
            if next.len() == old.len() {
                words[wi] = old;
                continue;
            }
            for p in old.windows(2) {
                let k = (p[0], p[1]);
                if k != (a, b) {
                    if let Some(v) = counts.get_mut(&k) {
                        *v -= f;
                        *delta.entry(k).or_insert(0) -= f;
                    }
                }
            }
            for p in next.windows(2) {
                let k = (p[0], p[1]);
                if is_valid(k.0, k.1, &sym_chars) {
                    *counts.entry(k).or_insert(0) += f;
                    *delta.entry(k).or_insert(0) += f;
                    if k.0 == new || k.1 == new {
                        where_.entry(k).or_default().push(wi as u32);
                    }
                }
            }
            words[wi] = next;
        }
        for (k, d) in delta {
            match counts.get(&k).copied() {
                Some(c) if c <= 0 => {
                    counts.remove(&k);
                }
                Some(c) if d > 0 => heap.push(entry(k.0, k.1, c, &sym_chars)),
                _ => {}
            }
        }
    }
    if opts.hard_vocab_limit && finals.len() < target {
        return Err(Error::Train(format!(
            "vocabulary size too high ({}); the corpus supports at most {}",
            opts.vocab_size,
            finals.len() + n_meta + prep.required.len()
        )));
    }
    for &(c, _) in &prep.required {
        finals.push((c.to_string(), -(finals.len() as f32)));
    }
    Ok(finals)
}
