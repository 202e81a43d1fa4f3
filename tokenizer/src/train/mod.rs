//! Training unigram and BPE models into standard `.model` files, with SentencePiece's data preparation.

mod bpe;
mod script;
mod unigram;

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;

use crate::error::{Error, Result};
use crate::model::{byte_piece, ModelType, Piece, PieceType, SentencePieceModel};
use crate::normalizer::{Normalizer, NormalizerSpec};
use crate::proto::{bytes_value, int32_value, Fields, Value};

/// U+2047, which stands for characters outside the required alphabet during training.
pub(crate) const UNK_CHAR: char = '\u{2047}';
const WS_CHAR: char = '\u{2581}';

/// The normalization rule written into a trained model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormalizationRule {
    /// SentencePiece's default: NFKC plus a few NMT-oriented rules (the reference's precompiled charsmap).
    NmtNfkc,
    /// `nmt_nfkc` followed by Unicode case folding.
    NmtNfkcCf,
    /// No character mapping (whitespace handling still applies).
    Identity,
}

impl NormalizationRule {
    /// Parses `nmt_nfkc`, `nmt_nfkc_cf` or `identity`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "nmt_nfkc" => Ok(NormalizationRule::NmtNfkc),
            "nmt_nfkc_cf" => Ok(NormalizationRule::NmtNfkcCf),
            "identity" => Ok(NormalizationRule::Identity),
            _ => Err(Error::Train(format!(
                "unknown normalization rule {s:?} (nmt_nfkc, nmt_nfkc_cf, identity)"
            ))),
        }
    }

    fn spec(self) -> NormalizerSpec {
        match self {
            NormalizationRule::NmtNfkc => NormalizerSpec::new(
                "nmt_nfkc",
                include_bytes!("../charsmaps/nmt_nfkc.bin").to_vec(),
            ),
            NormalizationRule::NmtNfkcCf => NormalizerSpec::new(
                "nmt_nfkc_cf",
                include_bytes!("../charsmaps/nmt_nfkc_cf.bin").to_vec(),
            ),
            NormalizationRule::Identity => NormalizerSpec::new("identity", Vec::new()),
        }
    }
}

/// Options of a training run (the subset of SentencePiece's `TrainerSpec` that mezcla exposes).
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub model_type: ModelType,
    pub vocab_size: usize,
    /// Fraction of characters (by frequency) that must be in the vocabulary; the rest become unknown.
    pub character_coverage: f64,
    pub byte_fallback: bool,
    pub normalization: NormalizationRule,
    pub user_defined_symbols: Vec<String>,
    pub control_symbols: Vec<String>,
    /// Use at most this many sentences (0: all), sampled with `seed`.
    pub input_sentence_size: usize,
    pub seed: u64,
    pub max_sentencepiece_length: usize,
    pub max_sentence_length: usize,
    /// Fail when the corpus cannot fill `vocab_size` (otherwise write a smaller vocabulary).
    pub hard_vocab_limit: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            model_type: ModelType::Unigram,
            vocab_size: 8000,
            character_coverage: 0.9995,
            byte_fallback: false,
            normalization: NormalizationRule::NmtNfkc,
            user_defined_symbols: Vec::new(),
            control_symbols: Vec::new(),
            input_sentence_size: 0,
            seed: 0,
            max_sentencepiece_length: 16,
            max_sentence_length: 4192,
            hard_vocab_limit: true,
        }
    }
}

/// Trains a model on the lines of a text file.
pub fn train_file(path: impl AsRef<Path>, opts: &TrainOptions) -> Result<SentencePieceModel> {
    let path = path.as_ref();
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(f).lines() {
        lines.push(line.map_err(|e| Error::io(path, e))?);
    }
    train(&lines, opts).map_err(|e| match e {
        Error::Train(m) => Error::Train(format!("{}: {m}", path.display())),
        other => other,
    })
}

/// Trains a model on sentences (one string each).
pub fn train<S: AsRef<str>>(sentences: &[S], opts: &TrainOptions) -> Result<SentencePieceModel> {
    if !matches!(opts.model_type, ModelType::Unigram | ModelType::Bpe) {
        return Err(Error::Train(format!(
            "training {} models is not supported (unigram, bpe)",
            opts.model_type
        )));
    }
    if !(0.0..=1.0).contains(&opts.character_coverage) || opts.character_coverage == 0.0 {
        return Err(Error::Train("character_coverage must be in (0, 1]".into()));
    }
    if opts.max_sentencepiece_length == 0 || opts.max_sentencepiece_length > 512 {
        return Err(Error::Train(
            "max_sentencepiece_length must be in 1..=512".into(),
        ));
    }
    let meta = meta_pieces(opts)?;
    let prep = Prepared::new(sentences, opts, &meta)?;
    let pieces = match opts.model_type {
        ModelType::Unigram => unigram::train(&prep, opts, meta.len())?,
        ModelType::Bpe => bpe::train(&prep, opts, meta.len())?,
        _ => unreachable!("checked above"),
    };
    serialize(pieces, meta, opts)
}

/// Meta pieces by id: `<unk>`=0, `<s>`=1, `</s>`=2, then control, user-defined and byte pieces.
fn meta_pieces(opts: &TrainOptions) -> Result<Vec<(String, PieceType)>> {
    let mut meta: Vec<(String, PieceType)> = vec![
        ("<unk>".into(), PieceType::Unknown),
        ("<s>".into(), PieceType::Control),
        ("</s>".into(), PieceType::Control),
    ];
    let mut add = |w: &str, t: PieceType| -> Result<()> {
        if w.is_empty() {
            return Err(Error::Train("empty control or user-defined symbol".into()));
        }
        if w == "<unk>" {
            return Err(Error::Train(
                "<unk> must not be a control or user-defined symbol".into(),
            ));
        }
        if let Some(m) = meta.iter_mut().find(|(p, _)| p == w) {
            if m.1 == PieceType::Control && (w == "<s>" || w == "</s>") {
                m.1 = t;
                return Ok(());
            }
            return Err(Error::Train(format!("{w} is defined twice")));
        }
        meta.push((w.to_string(), t));
        Ok(())
    };
    for w in &opts.control_symbols {
        add(w, PieceType::Control)?;
    }
    for w in &opts.user_defined_symbols {
        add(w, PieceType::UserDefined)?;
    }
    if opts.byte_fallback {
        for b in 0..=255u8 {
            add(&byte_piece(b), PieceType::Byte)?;
        }
    }
    Ok(meta)
}

/// The training corpus after normalization: unique whitespace-split words with frequencies, and the alphabet.
pub(crate) struct Prepared {
    /// Unique words (each starting with `▁`), as chars, with their frequencies; sorted by frequency, then text.
    pub words: Vec<(Vec<char>, u64)>,
    /// Required characters with their frequencies, most frequent first.
    pub required: Vec<(char, u64)>,
    pub max_piece_len: usize,
}

impl Prepared {
    fn new<S: AsRef<str>>(
        sentences: &[S],
        opts: &TrainOptions,
        meta: &[(String, PieceType)],
    ) -> Result<Self> {
        let mut selected: Vec<&str> = sentences
            .iter()
            .map(|s| s.as_ref())
            .filter(|s| {
                !s.is_empty() && s.len() <= opts.max_sentence_length && !s.contains(UNK_CHAR)
            })
            .collect();
        if opts.input_sentence_size > 0 && selected.len() > opts.input_sentence_size {
            // Reservoir-free sampling: a seeded shuffle, then the first N.
            let mut rng = SplitMix(opts.seed ^ 0x9e37_79b9_7f4a_7c15);
            for i in (1..selected.len()).rev() {
                let j = (rng.next() % (i as u64 + 1)) as usize;
                selected.swap(i, j);
            }
            selected.truncate(opts.input_sentence_size);
        }
        let spec = opts.normalization.spec();
        let normalizer = Normalizer::new(&spec, false, &[]).map_err(Error::Train)?;
        let meta_refs: Vec<&str> = meta.iter().map(|(p, _)| p.as_str()).collect();
        let matcher = crate::trie::Trie::new(meta_refs.iter().map(|s| (s.as_bytes(), 0)));
        let mut word_counts: HashMap<String, u64> = HashMap::new();
        for s in selected {
            let norm = normalizer.normalize(s.as_bytes());
            // Meta pieces in the text are replaced by a boundary that never joins a piece.
            let mut out = Vec::with_capacity(norm.len());
            let mut pos = 0;
            while pos < norm.len() {
                let mut longest = 0;
                matcher.common_prefix_search(&norm[pos..], |l, _| longest = longest.max(l));
                if longest > 0 {
                    out.extend_from_slice(UNK_CHAR.to_string().as_bytes());
                    pos += longest;
                } else {
                    out.push(norm[pos]);
                    pos += 1;
                }
            }
            let text = String::from_utf8_lossy(&out).into_owned();
            for w in split_words(&text) {
                *word_counts.entry(w.to_string()).or_insert(0) += 1;
            }
        }
        if word_counts.is_empty() {
            return Err(Error::Train(
                "the corpus is empty (no non-empty lines)".into(),
            ));
        }
        let mut chars: HashMap<char, u64> = HashMap::new();
        let mut all = 0u64;
        for (w, &f) in &word_counts {
            for c in w.chars() {
                if c == UNK_CHAR || c == ' ' || c == '\0' {
                    continue;
                }
                *chars.entry(c).or_insert(0) += f;
                all += f;
            }
        }
        let mut sorted: Vec<(char, u64)> = chars.into_iter().collect();
        sorted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut required = Vec::new();
        let mut acc = 0u64;
        for (c, f) in sorted {
            let coverage = (acc as f64 / all as f64) as f32;
            if coverage >= opts.character_coverage as f32 {
                break;
            }
            acc += f;
            if c == '\t' {
                continue;
            }
            required.push((c, f));
        }
        if required.len() + meta.len() > opts.vocab_size {
            return Err(Error::Train(format!(
                "vocabulary size {} is smaller than the required characters plus meta pieces ({}); increase \
                 vocab_size or decrease character_coverage",
                opts.vocab_size,
                required.len() + meta.len()
            )));
        }
        let req: std::collections::HashSet<char> = required.iter().map(|r| r.0).collect();
        let mut words: HashMap<Vec<char>, u64> = HashMap::new();
        for (w, f) in word_counts {
            let cs: Vec<char> = w
                .chars()
                .map(|c| if req.contains(&c) { c } else { UNK_CHAR })
                .collect();
            *words.entry(cs).or_insert(0) += f;
        }
        let mut words: Vec<(Vec<char>, u64)> = words.into_iter().collect();
        words.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(Prepared {
            words,
            required,
            max_piece_len: opts.max_sentencepiece_length,
        })
    }

    /// SentencePiece's `IsValidSentencePiece` for the default options (split by whitespace, script and number).
    pub fn is_valid_piece(&self, piece: &[char]) -> bool {
        if piece.is_empty() || piece.len() > self.max_piece_len {
            return false;
        }
        let mut prev: Option<script::Script> = None;
        for (pos, &c) in piece.iter().enumerate() {
            if c == UNK_CHAR || c == '\0' || c == '\t' || c == ' ' {
                return false;
            }
            if c == WS_CHAR {
                if pos > 0 {
                    return false;
                }
                continue;
            }
            let mut s = script::script(c);
            if s == script::Script::Inherited {
                match prev {
                    Some(p) => s = p,
                    None => continue,
                }
            }
            if prev.is_some_and(|p| p != s) {
                return false;
            }
            prev = Some(s);
        }
        true
    }
}

/// Splits a normalized sentence into words, each starting at a `▁` (SentencePiece's `SplitIntoWords`).
fn split_words(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if c == WS_CHAR && i > start {
            out.push(&s[start..i]);
            start = i;
        }
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

/// A small deterministic generator (SplitMix64) for sampling.
pub(crate) struct SplitMix(pub u64);

impl SplitMix {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Builds the model proto: meta pieces at their ids, then the trained pieces in order.
fn serialize(
    pieces: Vec<(String, f32)>,
    meta: Vec<(String, PieceType)>,
    opts: &TrainOptions,
) -> Result<SentencePieceModel> {
    let mut all: Vec<Piece> = meta
        .into_iter()
        .map(|(piece, kind)| Piece {
            piece,
            score: 0.0,
            kind,
        })
        .collect();
    let mut seen: std::collections::HashSet<String> = all.iter().map(|p| p.piece.clone()).collect();
    for (piece, score) in pieces {
        if all.len() >= opts.vocab_size {
            break;
        }
        if seen.insert(piece.clone()) {
            all.push(Piece {
                piece,
                score,
                kind: PieceType::Normal,
            });
        }
    }
    if opts.hard_vocab_limit && all.len() != opts.vocab_size {
        return Err(Error::Train(format!(
            "vocabulary size too high ({}); the corpus supports at most {}",
            opts.vocab_size,
            all.len()
        )));
    }
    let mut ts = Fields::default();
    ts.set(3, int32_value(opts.model_type.to_proto()));
    ts.set(4, int32_value(all.len() as i32));
    ts.set(
        10,
        Value::Fixed32((opts.character_coverage as f32).to_bits()),
    );
    ts.set(20, int32_value(opts.max_sentencepiece_length as i32));
    for w in &opts.control_symbols {
        ts.push(30, bytes_value(w.as_bytes()));
    }
    for w in &opts.user_defined_symbols {
        ts.push(31, bytes_value(w.as_bytes()));
    }
    ts.set(33, Value::Varint(opts.hard_vocab_limit as u64));
    if opts.byte_fallback {
        ts.set(35, Value::Varint(1));
    }
    let spec = opts.normalization.spec();
    SentencePieceModel::build(all, ts, spec, None, Fields::default()).map_err(Error::Train)
}
