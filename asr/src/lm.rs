//! Word n-gram language models: ARPA files (read and write), back-off scoring as KenLM's, and training with
//! interpolated modified Kneser-Ney smoothing as KenLM's `lmplz`.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};

pub const UNK: &str = "<unk>";
pub const BOS: &str = "<s>";
pub const EOS: &str = "</s>";

/// log10 probability and log10 back-off weight of one n-gram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    pub log10_prob: f32,
    pub log10_backoff: f32,
}

/// A back-off word n-gram model.
#[derive(Debug, Clone)]
pub struct NgramLm {
    order: usize,
    words: Vec<String>,
    ids: HashMap<String, u32>,
    /// `grams[k - 1]`: the n-grams of order k.
    grams: Vec<HashMap<Box<[u32]>, Weights>>,
    unk: u32,
    bos: u32,
    eos: u32,
}

impl NgramLm {
    /// Builds a model from its vocabulary and n-grams; the vocabulary must hold `<s>`, `</s>` and `<unk>`.
    fn from_parts(words: Vec<String>, grams: Vec<HashMap<Box<[u32]>, Weights>>) -> Result<Self> {
        let ids: HashMap<String, u32> = words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.clone(), i as u32))
            .collect();
        let find = |w: &str| {
            ids.get(w)
                .copied()
                .with_context(|| format!("the unigrams have no {w}"))
        };
        Ok(Self {
            order: grams.len(),
            unk: find(UNK)?,
            bos: find(BOS)?,
            eos: find(EOS)?,
            words,
            ids,
            grams,
        })
    }

    pub fn order(&self) -> usize {
        self.order
    }

    /// Number of n-grams of each order, lowest first.
    pub fn counts(&self) -> Vec<usize> {
        self.grams.iter().map(|g| g.len()).collect()
    }

    /// The vocabulary, `<unk>`, `<s>` and `</s>` included.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// The id of a word; unknown words map to `<unk>`.
    pub fn id(&self, word: &str) -> u32 {
        self.ids.get(word).copied().unwrap_or(self.unk)
    }

    /// Whether a word is in the vocabulary (the special symbols are not words).
    pub fn contains(&self, word: &str) -> bool {
        self.ids
            .get(word)
            .is_some_and(|&i| i != self.unk && i != self.bos && i != self.eos)
    }

    pub fn bos(&self) -> u32 {
        self.bos
    }

    pub fn eos(&self) -> u32 {
        self.eos
    }

    /// The weights of one n-gram, if the model has it.
    pub fn get(&self, ngram: &[u32]) -> Option<Weights> {
        if ngram.is_empty() || ngram.len() > self.order {
            return None;
        }
        self.grams[ngram.len() - 1].get(ngram).copied()
    }

    /// log10 P(word | context) by back-off: the longest n-gram of the context's end and the word that the
    /// model has, plus the back-off weights of the longer contexts. Only the last `order - 1` words of the
    /// context count.
    pub fn log10_prob(&self, context: &[u32], word: u32) -> f32 {
        let n = context.len().min(self.order - 1);
        let context = &context[context.len() - n..];
        let mut key: Vec<u32> = Vec::with_capacity(n + 1);
        let mut backoff = 0.0f32;
        for k in (0..=n).rev() {
            key.clear();
            key.extend_from_slice(&context[n - k..]);
            key.push(word);
            if let Some(w) = self.grams[k].get(key.as_slice()) {
                return w.log10_prob + backoff;
            }
            if k > 0 {
                if let Some(w) = self.grams[k - 1].get(&context[n - k..]) {
                    backoff += w.log10_backoff;
                }
            }
        }
        // Only a word missing from the unigrams gets here; <unk> stands for it.
        match self.grams[0].get([self.unk].as_slice()) {
            Some(w) => w.log10_prob + backoff,
            None => f32::NEG_INFINITY,
        }
    }

    /// The log10 probability of each word of a sentence and of its end, given `<s>` before it.
    pub fn sentence_log10(&self, words: &[&str]) -> Vec<f32> {
        let mut context = vec![self.bos];
        let mut out = Vec::with_capacity(words.len() + 1);
        for w in words.iter().map(|w| self.id(w)).chain([self.eos]) {
            out.push(self.log10_prob(&context, w));
            context.push(w);
            if context.len() >= self.order {
                context.remove(0);
            }
        }
        out
    }

    /// Reads an ARPA file (plain, or gzip-compressed when its name ends in `.gz`).
    pub fn read_arpa(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path)
            .with_context(|| format!("{}: cannot open the language model", path.display()))?;
        let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
            Box::new(flate2::read::MultiGzDecoder::new(file))
        } else {
            Box::new(file)
        };
        Self::parse_arpa(BufReader::new(reader), &path.display().to_string())
    }

    /// Parses ARPA text; errors name `origin` and the line.
    pub fn parse_arpa(reader: impl BufRead, origin: &str) -> Result<Self> {
        let mut lines = reader.lines().enumerate();
        let mut next = || -> Result<Option<(usize, String)>> {
            match lines.next() {
                None => Ok(None),
                Some((i, l)) => {
                    let l = l.with_context(|| format!("{origin}:{}: cannot read", i + 1))?;
                    Ok(Some((i + 1, l.trim().to_string())))
                }
            }
        };
        // Header: everything up to \data\ is ignored, as KenLM does.
        loop {
            match next()? {
                None => bail!("{origin}: not an ARPA file (no \\data\\ line)"),
                Some((_, l)) if l == "\\data\\" => break,
                Some(_) => {}
            }
        }
        let mut declared: Vec<usize> = Vec::new();
        let mut section = loop {
            let Some((no, l)) = next()? else {
                bail!("{origin}: the file ends inside \\data\\");
            };
            if l.is_empty() {
                continue;
            }
            if let Some(rest) = l.strip_prefix("ngram ") {
                let (k, n) = rest.split_once('=').with_context(|| {
                    format!("{origin}:{no}: expected `ngram K=COUNT`, found `{l}`")
                })?;
                let k: usize = k
                    .trim()
                    .parse()
                    .ok()
                    .filter(|&k| k >= 1)
                    .with_context(|| format!("{origin}:{no}: bad order in `{l}`"))?;
                let n: usize = n
                    .trim()
                    .parse()
                    .with_context(|| format!("{origin}:{no}: bad count in `{l}`"))?;
                if k != declared.len() + 1 {
                    bail!(
                        "{origin}:{no}: expected the count of {}-grams, found `{l}`",
                        declared.len() + 1
                    );
                }
                declared.push(n);
                continue;
            }
            break (no, l);
        };
        if declared.is_empty() {
            bail!("{origin}: \\data\\ declares no n-gram counts");
        }
        let order = declared.len();
        let mut words: Vec<String> = Vec::new();
        let mut ids: HashMap<String, u32> = HashMap::new();
        let mut grams: Vec<HashMap<Box<[u32]>, Weights>> = declared
            .iter()
            .map(|&n| HashMap::with_capacity(n))
            .collect();
        for k in 1..=order {
            let (no, l) = section;
            if l != format!("\\{k}-grams:") {
                bail!("{origin}:{no}: expected `\\{k}-grams:`, found `{l}`");
            }
            let mut key: Vec<u32> = Vec::with_capacity(k);
            section = loop {
                let Some((no, l)) = next()? else {
                    bail!("{origin}: the file ends inside the {k}-grams");
                };
                if l.is_empty() {
                    continue;
                }
                if l.starts_with('\\') {
                    break (no, l);
                }
                let mut fields = l.split_whitespace();
                let prob: f32 = fields
                    .next()
                    .and_then(|p| p.parse().ok())
                    .with_context(|| format!("{origin}:{no}: bad probability in `{l}`"))?;
                key.clear();
                for _ in 0..k {
                    let w = fields.next().with_context(|| {
                        format!("{origin}:{no}: a {k}-gram needs {k} words: `{l}`")
                    })?;
                    let id = match ids.get(w) {
                        Some(&id) => id,
                        None if k == 1 => {
                            let id = words.len() as u32;
                            words.push(w.to_string());
                            ids.insert(w.to_string(), id);
                            id
                        }
                        None => bail!("{origin}:{no}: `{w}` is not among the unigrams"),
                    };
                    key.push(id);
                }
                let backoff: f32 = match fields.next() {
                    None => 0.0,
                    Some(b) => b
                        .parse()
                        .with_context(|| format!("{origin}:{no}: bad back-off in `{l}`"))?,
                };
                if fields.next().is_some() {
                    bail!("{origin}:{no}: too many fields for a {k}-gram: `{l}`");
                }
                if grams[k - 1]
                    .insert(
                        key.clone().into_boxed_slice(),
                        Weights {
                            log10_prob: prob,
                            log10_backoff: backoff,
                        },
                    )
                    .is_some()
                {
                    bail!("{origin}:{no}: the {k}-gram `{l}` is listed twice");
                }
            };
            if grams[k - 1].len() != declared[k - 1] {
                bail!(
                    "{origin}: \\data\\ declares {} {k}-grams but the file lists {}",
                    declared[k - 1],
                    grams[k - 1].len()
                );
            }
        }
        if section.1 != "\\end\\" {
            bail!(
                "{origin}:{}: expected `\\end\\`, found `{}`",
                section.0,
                section.1
            );
        }
        // A model without <unk> (some tools leave it out) gets it with probability 0, as KenLM assumes.
        if !ids.contains_key(UNK) {
            ids.insert(UNK.to_string(), words.len() as u32);
            grams[0].insert(
                vec![words.len() as u32].into_boxed_slice(),
                Weights {
                    log10_prob: -100.0,
                    log10_backoff: 0.0,
                },
            );
            words.push(UNK.to_string());
        }
        Self::from_parts(words, grams).map_err(|e| anyhow::anyhow!("{origin}: {e}"))
    }

    /// Writes the model as ARPA text (n-grams of each order sorted by their words' ids).
    pub fn write_arpa(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(out, "\\data\\")?;
        for (k, g) in self.grams.iter().enumerate() {
            writeln!(out, "ngram {}={}", k + 1, g.len())?;
        }
        for (k, g) in self.grams.iter().enumerate() {
            writeln!(out, "\n\\{}-grams:", k + 1)?;
            let mut entries: Vec<(&Box<[u32]>, &Weights)> = g.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            for (key, w) in entries {
                let text: Vec<&str> = key
                    .iter()
                    .map(|&i| self.words[i as usize].as_str())
                    .collect();
                write!(out, "{}\t{}", w.log10_prob, text.join(" "))?;
                if k + 1 < self.order {
                    write!(out, "\t{}", w.log10_backoff)?;
                }
                writeln!(out)?;
            }
        }
        writeln!(out, "\n\\end\\")
    }

    /// Writes the model to an ARPA file atomically (gzip-compressed when the name ends in `.gz`).
    pub fn save_arpa(&self, path: &Path) -> Result<()> {
        let mut file = mezcla_datagen::atomic::AtomicFile::create(path)
            .with_context(|| format!("{}: cannot create", path.display()))?;
        {
            let mut w = std::io::BufWriter::new(&mut file);
            if path.extension().is_some_and(|e| e == "gz") {
                let mut gz = flate2::write::GzEncoder::new(&mut w, flate2::Compression::default());
                self.write_arpa(&mut gz)?;
                gz.finish()?;
            } else {
                self.write_arpa(&mut w)?;
            }
            w.flush()?;
        }
        file.commit()
            .with_context(|| format!("{}: cannot write", path.display()))
    }

    /// Every prefix of every word of the vocabulary (the empty one included), for scoring partial words.
    pub fn word_prefixes(&self) -> HashSet<String> {
        let mut out = HashSet::new();
        out.insert(String::new());
        for (i, w) in self.words.iter().enumerate() {
            let i = i as u32;
            if i == self.unk || i == self.bos || i == self.eos {
                continue;
            }
            for (b, _) in w.char_indices().skip(1) {
                out.insert(w[..b].to_string());
            }
            out.insert(w.clone());
        }
        out
    }
}

/// What Kneser-Ney training found: n-gram counts and the discounts of each order.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainReport {
    pub sentences: usize,
    pub words: usize,
    pub vocabulary: usize,
    pub counts: Vec<usize>,
    /// D1, D2, D3+ of each order, lowest first.
    pub discounts: Vec<[f32; 3]>,
    /// Orders whose discounts came from the fallback.
    pub fallback_orders: Vec<usize>,
}

/// KenLM's `--discount_fallback` values: D1, D2, D3+.
pub const FALLBACK_DISCOUNTS: [f32; 3] = [0.5, 1.0, 1.5];

/// Trains an `order`-gram model with interpolated modified Kneser-Ney smoothing, as KenLM's `lmplz` with
/// its defaults (no pruning, unigrams interpolated with the uniform distribution): continuation counts for
/// lower orders, raw counts for n-grams that start with `<s>`, three discounts per order from the counts of
/// counts (Chen & Goodman's estimate). `fallback` replaces discounts that the data cannot give (too little
/// or artificial text) with `FALLBACK_DISCOUNTS`; without it that is an error. Each sentence is a list of
/// words; `<s>`, `</s>` and `<unk>` are not allowed as words.
pub fn train_kneser_ney(
    sentences: &[Vec<String>],
    order: usize,
    fallback: bool,
) -> Result<(NgramLm, TrainReport)> {
    if order == 0 {
        bail!("the order must be at least 1");
    }
    let mut words: Vec<String> = vec![UNK.into(), BOS.into(), EOS.into()];
    let mut ids: HashMap<String, u32> = words
        .iter()
        .enumerate()
        .map(|(i, w)| (w.clone(), i as u32))
        .collect();
    let (unk, bos, eos) = (0u32, 1u32, 2u32);
    // Raw counts of the n-grams of every order in the sentences padded with one <s> and one </s>.
    let mut raw: Vec<HashMap<Box<[u32]>, u64>> = vec![HashMap::new(); order];
    let mut total_words = 0usize;
    for (i, s) in sentences.iter().enumerate() {
        let mut padded = Vec::with_capacity(s.len() + 2);
        padded.push(bos);
        for w in s {
            if w == UNK || w == BOS || w == EOS {
                bail!("sentence {}: `{w}` is reserved and cannot be a word", i + 1);
            }
            let next = ids.len() as u32;
            let id = *ids.entry(w.clone()).or_insert_with(|| {
                words.push(w.clone());
                next
            });
            padded.push(id);
        }
        padded.push(eos);
        total_words += s.len();
        for k in 1..=order.min(padded.len()) {
            for g in padded.windows(k) {
                *raw[k - 1].entry(g.into()).or_insert(0) += 1;
            }
        }
    }
    if sentences.is_empty() {
        bail!("no sentences to train on");
    }
    // Adjusted counts: raw at the highest order and for n-grams starting with <s>; otherwise the number of
    // distinct words seen before the n-gram (n-grams of the next order that end with it).
    let mut adjusted: Vec<HashMap<Box<[u32]>, u64>> = vec![HashMap::new(); order];
    adjusted[order - 1] = raw[order - 1].clone();
    for k in (1..order).rev() {
        let mut cont: HashMap<&[u32], u64> = HashMap::new();
        for g in raw[k].keys() {
            if g[1] != bos {
                *cont.entry(&g[1..]).or_insert(0) += 1;
            }
        }
        let mut adj = HashMap::with_capacity(raw[k - 1].len());
        for (g, &c) in &raw[k - 1] {
            let a = if g[0] == bos {
                if k == 1 {
                    0
                } else {
                    c
                }
            } else {
                cont.get(&g[..]).copied().unwrap_or(0)
            };
            adj.insert(g.clone(), a);
        }
        adjusted[k - 1] = adj;
    }
    adjusted[0].insert(vec![unk].into(), 0);
    adjusted[0].entry(vec![bos].into()).or_insert(0);
    // Discounts from the counts of counts of each order.
    let mut discounts = Vec::with_capacity(order);
    let mut fallback_orders = Vec::new();
    for (k, adj) in adjusted.iter().enumerate() {
        let mut n = [0u64; 5];
        for &c in adj.values() {
            if (1..5).contains(&c) {
                n[c as usize] += 1;
            }
        }
        let estimate = || -> Option<[f32; 3]> {
            if n[1] == 0 || n[2] == 0 || n[3] == 0 {
                return None;
            }
            let y = n[1] as f32 / (n[1] as f32 + 2.0 * n[2] as f32);
            let mut d = [0f32; 3];
            for j in 1..4usize {
                d[j - 1] = j as f32 - (j + 1) as f32 * y * n[j + 1] as f32 / n[j] as f32;
                if d[j - 1] < 0.0 || d[j - 1] > j as f32 {
                    return None;
                }
            }
            Some(d)
        };
        match estimate() {
            Some(d) => discounts.push(d),
            None if fallback => {
                discounts.push(FALLBACK_DISCOUNTS);
                fallback_orders.push(k + 1);
            }
            None => bail!(
                "cannot estimate the Kneser-Ney discounts of the {}-grams (counts of counts n1..n4 = \
                 {:?}): too little or artificial text; use the fallback discounts to train anyway",
                k + 1,
                &n[1..]
            ),
        }
    }
    let discount = |k: usize, c: u64| -> f64 {
        if c == 0 {
            0.0
        } else {
            discounts[k][(c.min(3) - 1) as usize] as f64
        }
    };
    // Per context (the first k - 1 words of an order-k n-gram): the sum of counts and gamma, the mass that the
    // discounts free for the lower order.
    let mut sums: Vec<HashMap<&[u32], (f64, f64)>> = vec![HashMap::new(); order];
    for (k, adj) in adjusted.iter().enumerate() {
        for (g, &c) in adj {
            let e = sums[k].entry(&g[..g.len() - 1]).or_insert((0.0, 0.0));
            e.0 += c as f64;
            e.1 += discount(k, c);
        }
    }
    let gamma = |k: usize, context: &[u32]| -> Option<f64> {
        sums[k].get(context).map(|&(total, freed)| freed / total)
    };
    // Interpolation, lowest order first: p(w | h) = (c - D(c)) / total + gamma(h) p(w | h minus its first word).
    let uniform = 1.0 / (words.len() - 1) as f64; // <unk> counts, <s> does not
    let mut probs: Vec<HashMap<&[u32], f64>> = vec![HashMap::new(); order];
    for k in 0..order {
        let mut layer = HashMap::with_capacity(adjusted[k].len());
        for (g, &c) in &adjusted[k] {
            let (total, _) = sums[k][&g[..g.len() - 1]];
            let g_ctx = &g[..g.len() - 1];
            let p = if k == 0 && g[0] == bos {
                1.0
            } else {
                let lower = if k == 0 {
                    uniform
                } else {
                    probs[k - 1][&g[1..]]
                };
                let own = if k == 0 && g[0] == unk {
                    0.0
                } else {
                    (c as f64 - discount(k, c)) / total
                };
                own + gamma(k, g_ctx).unwrap_or(0.0) * lower
            };
            layer.insert(&g[..], p);
        }
        probs[k] = layer;
    }
    let mut grams: Vec<HashMap<Box<[u32]>, Weights>> = Vec::with_capacity(order);
    for (k, layer_probs) in probs.iter().enumerate() {
        let mut layer = HashMap::with_capacity(layer_probs.len());
        for (&g, &p) in layer_probs {
            let last = *g.last().expect("n-grams are not empty");
            let backoff = if k + 1 < order && last != unk && last != eos {
                gamma(k + 1, g).unwrap_or(1.0)
            } else {
                1.0
            };
            // <s> has probability 1 (it is never predicted), so log10 0, as lmplz writes it.
            let log10_prob = (p.log10() as f32).min(0.0);
            layer.insert(
                g.into(),
                Weights {
                    log10_prob,
                    log10_backoff: backoff.log10() as f32,
                },
            );
        }
        grams.push(layer);
    }
    let report = TrainReport {
        sentences: sentences.len(),
        words: total_words,
        vocabulary: words.len(),
        counts: grams.iter().map(|g| g.len()).collect(),
        discounts,
        fallback_orders,
    };
    Ok((NgramLm::from_parts(words, grams)?, report))
}

/// Reads training text: one sentence per line, words separated by white space; empty lines are skipped.
pub fn read_sentences(path: &Path) -> Result<Vec<Vec<String>>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("{}:{}: cannot read", path.display(), i + 1))?;
        let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        if words.is_empty() {
            continue;
        }
        if let Some(w) = words.iter().find(|w| *w == UNK || *w == BOS || *w == EOS) {
            bail!(
                "{}:{}: `{w}` is reserved and cannot be a word",
                path.display(),
                i + 1
            );
        }
        out.push(words);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<NgramLm> {
        NgramLm::parse_arpa(std::io::Cursor::new(text), "t.arpa")
    }

    const SMALL: &str = "\\data\\\nngram 1=4\nngram 2=2\n\n\\1-grams:\n-1.0\t<s>\t-0.5\n-0.7\t</s>\n-0.5\ta\t-0.3\n\
                         -0.9\tb\t-0.2\n\n\\2-grams:\n-0.2\t<s> a\n-0.1\ta b\n\n\\end\\\n";

    #[test]
    fn back_off_adds_the_weights_of_the_missing_contexts() {
        let lm = parse(SMALL).unwrap();
        let (s, a, b) = (lm.bos(), lm.id("a"), lm.id("b"));
        assert_eq!(lm.log10_prob(&[s], a), -0.2);
        assert_eq!(lm.log10_prob(&[a], b), -0.1);
        // "b b" is missing: backoff(b) + p(b).
        assert!((lm.log10_prob(&[b], b) - (-0.2 - 0.9)).abs() < 1e-6);
        // A model without <unk> gives unknown words probability 10^-100, as KenLM assumes.
        assert_eq!(lm.log10_prob(&[s], lm.id("zzz")), -100.0 - 0.5);
        assert!(!lm.contains("zzz") && lm.contains("a") && !lm.contains("</s>"));
    }

    #[test]
    fn arpa_errors_name_the_file_and_line() {
        let err = |t: &str| parse(t).unwrap_err().to_string();
        assert!(err("hello").contains("t.arpa: not an ARPA file"));
        let e = err(&SMALL.replace("ngram 2=2", "ngram 2=3"));
        assert!(e.contains("declares 3 2-grams but the file lists 2"), "{e}");
        let e = err(&SMALL.replace("-0.1\ta b", "-0.1\ta c"));
        assert!(e.starts_with("t.arpa:13:") && e.contains("`c`"), "{e}");
        let e = err(&SMALL.replace("-0.9\tb\t-0.2", "x\tb"));
        assert!(
            e.starts_with("t.arpa:9:") && e.contains("probability"),
            "{e}"
        );
        let e = err(&SMALL.replace("\\end\\\n", ""));
        assert!(e.contains("ends inside the 2-grams"), "{e}");
    }
}
