//! A SentencePiece model: load, validate, encode (unigram, BPE, word, char) and decode exactly as the reference.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::normalizer::{decode_utf8_len, one_char_len, Normalizer, NormalizerSpec, SPACE_SYMBOL};
use crate::proto::{Fields, Value};
use crate::trie::Trie;

/// The segmentation algorithm of a model (`TrainerSpec.model_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelType {
    Unigram,
    Bpe,
    Word,
    Char,
}

impl ModelType {
    fn from_proto(v: i32) -> Option<Self> {
        Some(match v {
            1 => ModelType::Unigram,
            2 => ModelType::Bpe,
            3 => ModelType::Word,
            4 => ModelType::Char,
            _ => return None,
        })
    }

    pub(crate) fn to_proto(self) -> i32 {
        match self {
            ModelType::Unigram => 1,
            ModelType::Bpe => 2,
            ModelType::Word => 3,
            ModelType::Char => 4,
        }
    }
}

impl std::fmt::Display for ModelType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModelType::Unigram => "unigram",
            ModelType::Bpe => "bpe",
            ModelType::Word => "word",
            ModelType::Char => "char",
        })
    }
}

/// The type of a vocabulary entry (`ModelProto.SentencePiece.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl PieceType {
    fn from_proto(v: i32) -> Option<Self> {
        Some(match v {
            1 => PieceType::Normal,
            2 => PieceType::Unknown,
            3 => PieceType::Control,
            4 => PieceType::UserDefined,
            5 => PieceType::Unused,
            6 => PieceType::Byte,
            _ => return None,
        })
    }

    pub(crate) fn to_proto(self) -> i32 {
        match self {
            PieceType::Normal => 1,
            PieceType::Unknown => 2,
            PieceType::Control => 3,
            PieceType::UserDefined => 4,
            PieceType::Unused => 5,
            PieceType::Byte => 6,
        }
    }

    /// Pieces that the segmenter can produce from text (SentencePiece's "normal" pieces).
    fn is_normal_like(self) -> bool {
        matches!(
            self,
            PieceType::Normal | PieceType::UserDefined | PieceType::Unused
        )
    }
}

/// One vocabulary entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    pub piece: String,
    pub score: f32,
    pub kind: PieceType,
}

/// One token of an encoding: its piece (the normalized text it covers, or `<0xXX>`) and its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub piece: String,
    pub id: u32,
}

/// `<0xXX>` for a byte.
pub fn byte_piece(b: u8) -> String {
    format!("<0x{b:02X}>")
}

fn piece_to_byte(p: &str) -> Option<u8> {
    let hex = p.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2
        || !hex
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c))
    {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// Span (start, length) of a merged unused piece → spans of its two halves.
type RevMerge = HashMap<(usize, usize), ((usize, usize), (usize, usize))>;

const DEFAULT_UNK_SURFACE: &str = " \u{2047} ";

/// A loaded SentencePiece model.
#[derive(Debug, Clone)]
pub struct SentencePieceModel {
    pieces: Vec<Piece>,
    trainer_spec: Fields,
    normalizer_spec: NormalizerSpec,
    denormalizer_spec: Option<NormalizerSpec>,
    /// Fields of `ModelProto` other than 1, 2, 3 and 5 (self-test data, extensions), kept for writing.
    other: Fields,
    model_type: ModelType,
    byte_fallback: bool,
    treat_whitespace_as_suffix: bool,
    allow_whitespace_only_pieces: bool,
    unk_id: u32,
    unk_surface: String,
    normalizer: Normalizer,
    denormalizer: Option<Normalizer>,
    /// Normal, user-defined and unused pieces.
    trie: Trie,
    /// Unknown, control and byte pieces.
    reserved: HashMap<String, u32>,
    user_defined: Option<Trie>,
    byte_ids: Vec<u32>,
    min_score: f32,
    max_score: f32,
    /// Per id: score and type, compact for the segmenters' inner loops.
    scores: Vec<f32>,
    kinds: Vec<PieceType>,
    has_unused: bool,
}

fn bad(path: &str, reason: impl Into<String>) -> Error {
    Error::BadModel {
        path: path.to_string(),
        reason: reason.into(),
    }
}

impl SentencePieceModel {
    /// Loads a `.model` file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// Parses and validates a serialized `ModelProto`; `name` is used in error messages.
    pub fn from_bytes(bytes: &[u8], name: &str) -> Result<Self> {
        let fields = Fields::parse(bytes).map_err(|e| bad(name, e))?;
        let mut pieces = Vec::new();
        for raw in fields.repeated_bytes(1).map_err(|e| bad(name, e))? {
            let pf = Fields::parse(raw)
                .map_err(|e| bad(name, format!("piece {}: {e}", pieces.len())))?;
            let ctx = |e: String| bad(name, format!("piece {}: {e}", pieces.len()));
            let piece = pf.string(1).map_err(ctx)?.unwrap_or_default();
            let score = pf.float(2, 0.0).map_err(ctx)?;
            let t = pf.int32(3, 1).map_err(ctx)?;
            let kind =
                PieceType::from_proto(t).ok_or_else(|| ctx(format!("unknown piece type {t}")))?;
            pieces.push(Piece { piece, score, kind });
        }
        let trainer_spec = match fields.bytes(2).map_err(|e| bad(name, e))? {
            Some(b) => Fields::parse(b).map_err(|e| bad(name, format!("trainer_spec: {e}")))?,
            None => Fields::default(),
        };
        let normalizer_spec = match fields.bytes(3).map_err(|e| bad(name, e))? {
            Some(b) => NormalizerSpec::parse(b).map_err(|e| bad(name, e))?,
            None => NormalizerSpec::parse(&[]).expect("empty spec parses"),
        };
        let denormalizer_spec = match fields.bytes(5).map_err(|e| bad(name, e))? {
            Some(b) => Some(
                NormalizerSpec::parse(b).map_err(|e| bad(name, format!("denormalizer: {e}")))?,
            ),
            None => None,
        };
        if let Some(b) = fields.bytes(4).map_err(|e| bad(name, e))? {
            Fields::parse(b).map_err(|e| bad(name, format!("self_test_data: {e}")))?;
        }
        let other = Fields(
            fields
                .0
                .into_iter()
                .filter(|(n, _)| !matches!(n, 1 | 2 | 3 | 5))
                .collect(),
        );
        Self::build(
            pieces,
            trainer_spec,
            normalizer_spec,
            denormalizer_spec,
            other,
        )
        .map_err(|e| bad(name, e))
    }

    /// Assembles and validates a model from its parts (as the reference library's `InitializePieces`).
    pub(crate) fn build(
        pieces: Vec<Piece>,
        trainer_spec: Fields,
        normalizer_spec: NormalizerSpec,
        denormalizer_spec: Option<NormalizerSpec>,
        other: Fields,
    ) -> std::result::Result<Self, String> {
        let ts = |e: String| format!("trainer_spec: {e}");
        let mt = trainer_spec.int32(3, 1).map_err(ts)?;
        let model_type =
            ModelType::from_proto(mt).ok_or_else(|| format!("unknown model type {mt}"))?;
        let byte_fallback = trainer_spec.bool(35, false).map_err(ts)?;
        let treat_whitespace_as_suffix = trainer_spec.bool(24, false).map_err(ts)?;
        let allow_whitespace_only_pieces = trainer_spec.bool(26, false).map_err(ts)?;
        let unk_surface = trainer_spec
            .string(44)
            .map_err(ts)?
            .unwrap_or_else(|| DEFAULT_UNK_SURFACE.to_string());
        for n in [4, 10, 40, 41, 42, 43] {
            // Type-check a few more fields the reference reads, so wrong field types are reported.
            if n == 10 {
                trainer_spec.float(n, 0.0).map_err(ts)?;
            } else {
                trainer_spec.varint(n).map_err(ts)?;
            }
        }
        if pieces.is_empty() {
            return Err("the model has no pieces".into());
        }
        let mut normal: HashMap<&str, u32> = HashMap::new();
        let mut reserved = HashMap::new();
        let mut unk_id = None;
        let mut user_defined = Vec::new();
        let mut byte_ids = vec![u32::MAX; 256];
        let mut min_score = f32::MAX;
        let mut max_score = f32::MIN_POSITIVE;
        for (i, p) in pieces.iter().enumerate() {
            let id = i as u32;
            if p.piece.is_empty() {
                return Err(format!("piece {i} is empty"));
            }
            let dup = if p.kind.is_normal_like() {
                normal.insert(p.piece.as_str(), id).is_some()
            } else {
                reserved.insert(p.piece.clone(), id).is_some()
            };
            if dup {
                return Err(format!("piece {:?} is defined twice", p.piece));
            }
            match p.kind {
                PieceType::UserDefined => user_defined.push(p.piece.as_str()),
                PieceType::Unknown => {
                    if unk_id.is_some() {
                        return Err("more than one unknown piece".into());
                    }
                    unk_id = Some(id);
                }
                PieceType::Byte => {
                    if !byte_fallback {
                        return Err(format!(
                            "byte piece {} found although byte_fallback is false",
                            p.piece
                        ));
                    }
                    let b = piece_to_byte(&p.piece)
                        .ok_or_else(|| format!("invalid byte piece {}", p.piece))?;
                    byte_ids[b as usize] = id;
                }
                PieceType::Normal => {
                    min_score = min_score.min(p.score);
                    max_score = max_score.max(p.score);
                }
                _ => {}
            }
        }
        let unk_id = unk_id.ok_or("the model has no unknown piece")?;
        if byte_fallback && byte_ids.contains(&u32::MAX) {
            return Err(
                "byte_fallback is set but the model does not have all 256 byte pieces".into(),
            );
        }
        if model_type == ModelType::Unigram && normal.is_empty() {
            return Err("no pieces are loaded".into());
        }
        let trie = Trie::new(normal.iter().map(|(k, &v)| (k.as_bytes(), v)));
        let normalizer =
            Normalizer::new(&normalizer_spec, treat_whitespace_as_suffix, &user_defined)?;
        let denormalizer = match &denormalizer_spec {
            Some(d) if !d.precompiled_charsmap.is_empty() => Some(Normalizer::new(d, false, &[])?),
            _ => None,
        };
        let user_defined = (!user_defined.is_empty())
            .then(|| Trie::new(user_defined.iter().map(|s| (s.as_bytes(), 0))));
        let pieces_scores: Vec<f32> = pieces.iter().map(|p| p.score).collect();
        let pieces_kinds: Vec<PieceType> = pieces.iter().map(|p| p.kind).collect();
        let has_unused = pieces_kinds.contains(&PieceType::Unused);
        Ok(SentencePieceModel {
            pieces,
            trainer_spec,
            normalizer_spec,
            denormalizer_spec,
            other,
            model_type,
            byte_fallback,
            treat_whitespace_as_suffix,
            allow_whitespace_only_pieces,
            unk_id,
            unk_surface,
            normalizer,
            denormalizer,
            trie,
            reserved,
            user_defined,
            byte_ids,
            min_score,
            max_score,
            scores: pieces_scores,
            kinds: pieces_kinds,
            has_unused,
        })
    }

    /// Serializes the model as a `ModelProto`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut f = Fields::default();
        for p in &self.pieces {
            let mut pf = Fields::default();
            pf.push(1, Value::Bytes(p.piece.as_bytes().to_vec()));
            pf.push(2, Value::Fixed32(p.score.to_bits()));
            if p.kind != PieceType::Normal {
                pf.push(3, Value::Varint(p.kind.to_proto() as u64));
            }
            f.0.push((1, Value::Bytes(pf.to_bytes())));
        }
        f.0.push((2, Value::Bytes(self.trainer_spec.to_bytes())));
        f.0.push((3, Value::Bytes(self.normalizer_spec.to_bytes())));
        f.0.extend(self.other.0.iter().filter(|(n, _)| *n < 5).cloned());
        if let Some(d) = &self.denormalizer_spec {
            f.0.push((5, Value::Bytes(d.to_bytes())));
        }
        f.0.extend(self.other.0.iter().filter(|(n, _)| *n > 5).cloned());
        f.to_bytes()
    }

    /// Writes the model atomically (temporary file, then rename).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::write_atomic(path.as_ref(), &self.to_bytes())
    }

    /// Number of pieces.
    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    /// All pieces in id order.
    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    /// The piece of an id.
    pub fn id_to_piece(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize).map(|p| p.piece.as_str())
    }

    /// The id of a piece; the unknown id when the vocabulary does not have it.
    pub fn piece_to_id(&self, piece: &str) -> u32 {
        if let Some(&id) = self.reserved.get(piece) {
            return id;
        }
        self.trie.get(piece.as_bytes()).unwrap_or(self.unk_id)
    }

    /// The segmentation algorithm.
    pub fn model_type(&self) -> ModelType {
        self.model_type
    }

    /// Whether unknown characters are encoded as UTF-8 byte pieces.
    pub fn byte_fallback(&self) -> bool {
        self.byte_fallback
    }

    /// The id of the unknown piece.
    pub fn unk_id(&self) -> u32 {
        self.unk_id
    }

    /// `TrainerSpec.bos_id` etc.: the id of a special piece when the model has it (-1 means none).
    pub fn special_id(&self, which: SpecialPiece) -> Option<u32> {
        let (num, default) = match which {
            SpecialPiece::Bos => (41, 1),
            SpecialPiece::Eos => (42, 2),
            SpecialPiece::Pad => (43, -1),
        };
        let id = self.trainer_spec.int32(num, default).ok()?;
        u32::try_from(id)
            .ok()
            .filter(|&i| (i as usize) < self.pieces.len())
    }

    /// The normalizer rule name (e.g. `nmt_nfkc`).
    pub fn normalizer_name(&self) -> Option<&str> {
        self.normalizer_spec.name.as_deref()
    }

    /// The normalizer spec.
    pub fn normalizer_spec(&self) -> &NormalizerSpec {
        &self.normalizer_spec
    }

    /// The trainer spec's raw fields.
    pub fn trainer_spec(&self) -> &Fields {
        &self.trainer_spec
    }

    /// The type of an id's piece.
    pub fn piece_type(&self, id: u32) -> Option<PieceType> {
        self.pieces.get(id as usize).map(|p| p.kind)
    }

    /// Normalizes text as the encoder sees it (spaces become `▁`).
    pub fn normalize(&self, text: &str) -> String {
        String::from_utf8_lossy(&self.normalizer.normalize(text.as_bytes())).into_owned()
    }

    /// Encodes text into ids.
    pub fn encode_ids(&self, text: &str) -> Vec<u32> {
        let normalized = self.normalizer.normalize(text.as_bytes());
        let segments = self.segment(&normalized);
        let mut out = Vec::with_capacity(segments.len());
        let mut prev_unk = false;
        for (a, b, id) in segments {
            let is_unk = id == self.unk_id;
            if is_unk && self.byte_fallback {
                out.extend(
                    normalized[a..b]
                        .iter()
                        .map(|&byte| self.byte_ids[byte as usize]),
                );
            } else if !(is_unk && prev_unk) {
                out.push(id);
            }
            prev_unk = is_unk;
        }
        out
    }

    fn segment(&self, normalized: &[u8]) -> Vec<(usize, usize, u32)> {
        match self.model_type {
            ModelType::Unigram => self.segment_unigram(normalized),
            ModelType::Bpe => self.segment_bpe(normalized),
            ModelType::Word => self.segment_word(normalized),
            ModelType::Char => self.segment_char(normalized),
        }
    }

    /// Encodes text into tokens (piece and id), exactly as `SentencePieceProcessor::Encode`.
    pub fn encode(&self, text: &str) -> Vec<Token> {
        let normalized = self.normalizer.normalize(text.as_bytes());
        let segments = self.segment(&normalized);
        let mut out: Vec<Token> = Vec::with_capacity(segments.len());
        let mut prev_unk = false;
        for (a, b, id) in segments {
            let w = &normalized[a..b];
            let is_unk = id == self.unk_id;
            if is_unk && self.byte_fallback {
                for &byte in w {
                    out.push(Token {
                        piece: byte_piece(byte),
                        id: self.byte_ids[byte as usize],
                    });
                }
            } else if is_unk && prev_unk {
                let last = out.last_mut().expect("previous unknown token");
                last.piece.push_str(&String::from_utf8_lossy(w));
            } else {
                out.push(Token {
                    piece: String::from_utf8_lossy(w).into_owned(),
                    id,
                });
            }
            prev_unk = is_unk;
        }
        out
    }

    #[inline]
    fn is_unused(&self, id: u32) -> bool {
        self.kinds[id as usize] == PieceType::Unused
    }

    #[inline]
    fn is_user_defined(&self, id: u32) -> bool {
        self.kinds[id as usize] == PieceType::UserDefined
    }

    /// Unigram Viterbi (the reference's `EncodeOptimized`, including its float/double arithmetic).
    fn segment_unigram(&self, s: &[u8]) -> Vec<(usize, usize, u32)> {
        #[derive(Clone, Copy)]
        struct Best {
            id: u32,
            score: f32,
            starts_at: usize,
        }
        const UNSET: usize = usize::MAX;
        let size = s.len();
        if size == 0 {
            return Vec::new();
        }
        let unk_score = self.min_score - 10.0;
        let mut best = vec![
            Best {
                id: u32::MAX,
                score: 0.0,
                starts_at: UNSET
            };
            size + 1
        ];
        let mut starts_at = 0;
        while starts_at < size {
            let till = best[starts_at].score;
            let mblen = one_char_len(s[starts_at]).min(size - starts_at);
            let mut has_single = false;
            self.trie.common_prefix_search(&s[starts_at..], |len, id| {
                if self.is_unused(id) {
                    return;
                }
                let score: f32 = if self.is_user_defined(id) {
                    len as f32 * self.max_score - 0.1
                } else {
                    self.scores[id as usize]
                };
                let cand = score + till;
                let t = &mut best[starts_at + len];
                if t.starts_at == UNSET || cand > t.score {
                    *t = Best {
                        id,
                        score: cand,
                        starts_at,
                    };
                }
                if len == mblen {
                    has_single = true;
                }
            });
            if !has_single {
                let t = &mut best[starts_at + mblen];
                let cand = unk_score + till;
                if t.starts_at == UNSET || cand > t.score {
                    *t = Best {
                        id: self.unk_id,
                        score: cand,
                        starts_at,
                    };
                }
            }
            starts_at += mblen;
        }
        let mut out = Vec::new();
        let mut end = size;
        while end > 0 {
            let n = best[end];
            if n.starts_at == UNSET {
                break;
            }
            out.push((n.starts_at, end, n.id));
            end = n.starts_at;
        }
        out.reverse();
        out
    }

    fn prefix_match_user_defined(&self, s: &[u8]) -> (usize, bool) {
        if let Some(m) = &self.user_defined {
            let mut longest = 0;
            m.common_prefix_search(s, |l, _| longest = longest.max(l));
            if longest > 0 {
                return (longest, true);
            }
        }
        (one_char_len(s[0]).min(s.len()), false)
    }

    /// BPE merges by score with the reference's priority-queue order and resegmentation of unused pieces.
    fn segment_bpe(&self, s: &[u8]) -> Vec<(usize, usize, u32)> {
        use std::cmp::Ordering;
        use std::collections::BinaryHeap;

        #[derive(Clone, Copy)]
        struct Sym {
            start: usize,
            len: usize,
            prev: isize,
            next: isize,
            freeze: bool,
        }
        struct Pair {
            score: f32,
            left: u32,
            right: u32,
            size: u32,
        }
        impl PartialEq for Pair {
            fn eq(&self, o: &Self) -> bool {
                self.cmp(o) == Ordering::Equal
            }
        }
        impl Eq for Pair {}
        impl PartialOrd for Pair {
            fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
                Some(self.cmp(o))
            }
        }
        impl Ord for Pair {
            fn cmp(&self, o: &Self) -> Ordering {
                // Larger score first; on equal scores the leftmost pair first.
                match self.score.partial_cmp(&o.score) {
                    Some(Ordering::Equal) | None => o.left.cmp(&self.left),
                    Some(ord) => ord,
                }
            }
        }
        if s.is_empty() {
            return Vec::new();
        }
        let mut syms: Vec<Sym> = Vec::with_capacity(s.len());
        let mut pos = 0;
        while pos < s.len() {
            let (len, freeze) = self.prefix_match_user_defined(&s[pos..]);
            let i = syms.len() as isize;
            syms.push(Sym {
                start: pos,
                len,
                prev: i - 1,
                next: i + 1,
                freeze,
            });
            pos += len;
        }
        syms.last_mut().expect("non-empty").next = -1;
        let mut rev_merge: RevMerge = HashMap::new();
        let mut heap = BinaryHeap::new();
        let add = |l: isize,
                   r: isize,
                   syms: &Vec<Sym>,
                   heap: &mut BinaryHeap<Pair>,
                   rev: &mut RevMerge| {
            if l < 0 || r < 0 {
                return;
            }
            let (a, b) = (syms[l as usize], syms[r as usize]);
            if a.freeze || b.freeze {
                return;
            }
            let piece = &s[a.start..a.start + a.len + b.len];
            if let Some(id) = self.trie.get(piece) {
                heap.push(Pair {
                    score: self.scores[id as usize],
                    left: l as u32,
                    right: r as u32,
                    size: piece.len() as u32,
                });
                if self.has_unused && self.is_unused(id) {
                    rev.insert(
                        (a.start, a.len + b.len),
                        ((a.start, a.len), (b.start, b.len)),
                    );
                }
            }
        };
        for i in 1..syms.len() {
            add(i as isize - 1, i as isize, &syms, &mut heap, &mut rev_merge);
        }
        while let Some(top) = heap.pop() {
            let (tl, tr) = (top.left as usize, top.right as usize);
            let (l, r) = (syms[tl], syms[tr]);
            if l.len == 0 || r.len == 0 || l.len + r.len != top.size as usize {
                continue;
            }
            syms[tl].len += r.len;
            syms[tl].next = r.next;
            if r.next >= 0 {
                syms[r.next as usize].prev = tl as isize;
            }
            syms[tr].len = 0;
            let left = syms[tl];
            add(left.prev, tl as isize, &syms, &mut heap, &mut rev_merge);
            add(tl as isize, left.next, &syms, &mut heap, &mut rev_merge);
        }
        let mut out = Vec::new();
        fn reseg(
            m: &SentencePieceModel,
            s: &[u8],
            w: (usize, usize),
            rev: &RevMerge,
            out: &mut Vec<(usize, usize, u32)>,
        ) {
            let id = m.trie.get(&s[w.0..w.0 + w.1]).unwrap_or(m.unk_id);
            if !m.is_unused(id) {
                out.push((w.0, w.0 + w.1, id));
                return;
            }
            match rev.get(&w) {
                Some(&(a, b)) => {
                    reseg(m, s, a, rev, out);
                    reseg(m, s, b, rev, out);
                }
                None => out.push((w.0, w.0 + w.1, id)),
            }
        }
        let mut i = 0isize;
        while i >= 0 {
            let sym = syms[i as usize];
            reseg(self, s, (sym.start, sym.len), &rev_merge, &mut out);
            i = sym.next;
        }
        out
    }

    fn segment_char(&self, s: &[u8]) -> Vec<(usize, usize, u32)> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < s.len() {
            let (len, _) = self.prefix_match_user_defined(&s[pos..]);
            let id = self.trie.get(&s[pos..pos + len]).unwrap_or(self.unk_id);
            out.push((pos, pos + len, id));
            pos += len;
        }
        out
    }

    fn segment_word(&self, s: &[u8]) -> Vec<(usize, usize, u32)> {
        let sp = SPACE_SYMBOL.as_bytes();
        let mut words: Vec<(usize, usize)> = Vec::new();
        let mut pos = 0;
        let mut in_ws = false;
        if self.treat_whitespace_as_suffix {
            if !s.is_empty() {
                words.push((0, 0));
            }
            while pos < s.len() {
                let mb = one_char_len(s[pos]).min(s.len() - pos);
                let is_ws = &s[pos..pos + mb] == sp;
                if is_ws {
                    in_ws = true;
                } else if in_ws {
                    if self.allow_whitespace_only_pieces {
                        words.push((pos, pos));
                    }
                    in_ws = false;
                }
                words.last_mut().expect("word").1 = pos + mb;
                pos += mb;
                if pos < s.len() && is_ws && !self.allow_whitespace_only_pieces {
                    words.push((pos, pos));
                }
            }
        } else {
            while pos < s.len() {
                let mb = one_char_len(s[pos]).min(s.len() - pos);
                let is_ws = &s[pos..pos + mb] == sp;
                if pos == 0 || (is_ws && (!in_ws || !self.allow_whitespace_only_pieces)) {
                    words.push((pos, pos));
                    in_ws = true;
                }
                if in_ws && !is_ws {
                    in_ws = false;
                }
                words.last_mut().expect("word").1 = pos + mb;
                pos += mb;
            }
        }
        words
            .into_iter()
            .map(|(a, b)| (a, b, self.trie.get(&s[a..b]).unwrap_or(self.unk_id)))
            .collect()
    }

    /// Decodes ids into text, exactly as `SentencePieceProcessor::Decode`.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.decode_from(ids, true)
    }

    /// Decodes ids that continue a text (another model's pieces came before them): as [`Self::decode`], but
    /// the whitespace of leading pieces is kept, since it is not at the start of the text.
    pub fn decode_continuation(&self, ids: &[u32]) -> Result<String> {
        self.decode_from(ids, false)
    }

    fn decode_from(&self, ids: &[u32], at_start: bool) -> Result<String> {
        let mut text: Vec<u8> = Vec::new();
        let mut bytes: Vec<u8> = Vec::new();
        let flush = |bytes: &mut Vec<u8>, text: &mut Vec<u8>| {
            let mut off = 0;
            while off < bytes.len() {
                let (n, valid) = decode_utf8_len(&bytes[off..]);
                if valid {
                    text.extend_from_slice(&bytes[off..off + n]);
                } else {
                    text.extend_from_slice("\u{fffd}".as_bytes());
                }
                off += n;
            }
            bytes.clear();
        };
        let mut is_bos_ws = at_start;
        let mut bos_ws_seen = false;
        let ns = &self.normalizer_spec;
        for &id in ids {
            let p = self.pieces.get(id as usize).ok_or(Error::IdOutOfRange {
                id: i64::from(id),
                vocab_size: self.pieces.len(),
            })?;
            if p.kind == PieceType::Byte {
                bytes.push(piece_to_byte(&p.piece).expect("validated byte piece"));
                continue;
            }
            flush(&mut bytes, &mut text);
            if bos_ws_seen || !text.is_empty() {
                is_bos_ws = false;
            }
            bos_ws_seen = false;
            match p.kind {
                PieceType::Control => {}
                PieceType::Unknown => text.extend_from_slice(self.unk_surface.as_bytes()),
                _ => {
                    let mut piece = p.piece.as_str();
                    if is_bos_ws && (ns.add_dummy_prefix || ns.remove_extra_whitespaces) {
                        if let Some(rest) = piece.strip_prefix(SPACE_SYMBOL) {
                            piece = rest;
                            bos_ws_seen = !ns.remove_extra_whitespaces;
                        }
                    }
                    text.extend_from_slice(piece.replace(SPACE_SYMBOL, " ").as_bytes());
                }
            }
        }
        flush(&mut bytes, &mut text);
        if let Some(d) = &self.denormalizer {
            text = d.normalize(&text);
        }
        Ok(String::from_utf8_lossy(&text).into_owned())
    }
}

/// Special pieces whose ids the trainer spec records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialPiece {
    Bos,
    Eos,
    Pad,
}
