//! Evaluation metrics: jiwer-exact WER/CER (rapidfuzz's alignment), per-language WER, LID accuracies, RTFx.

use std::collections::BTreeMap;

use anyhow::{bail, ensure, Result};
use serde::Serialize;

/// Whitespace as Python's `str.isspace` (and `re`'s `\s`) defines it: Unicode `White_Space` plus
/// the four information separators U+001C..U+001F.
pub fn is_python_whitespace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Strips leading and trailing whitespace as Python's `str.strip()` does.
fn python_strip(s: &str) -> &str {
    s.trim_matches(is_python_whitespace)
}

/// jiwer's `RemoveMultipleSpaces`: each run of two or more whitespace characters becomes one space.
fn remove_multiple_spaces(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if is_python_whitespace(c) && chars.peek().is_some_and(|&n| is_python_whitespace(n)) {
            while chars.peek().is_some_and(|&n| is_python_whitespace(n)) {
                chars.next();
            }
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

/// The words jiwer's `wer_default` makes of a sentence: collapse whitespace runs, strip, split on
/// spaces, drop empty pieces. Case and punctuation are kept.
pub fn words_default(text: &str) -> Vec<String> {
    let collapsed = remove_multiple_spaces(text);
    python_strip(&collapsed)
        .split(' ')
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// The characters jiwer's `cer_default` makes of a sentence: strip, then one unit per Unicode scalar
/// value (spaces included, runs of spaces kept).
pub fn chars_default(text: &str) -> Vec<char> {
    python_strip(text).chars().collect()
}

/// The kind of one alignment chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EditOp {
    /// Reference and hypothesis units are equal (hits).
    Equal,
    /// Reference units replaced one for one by hypothesis units.
    Substitute,
    /// Reference units missing from the hypothesis.
    Delete,
    /// Hypothesis units with no reference counterpart.
    Insert,
}

/// One opcode of the alignment, as jiwer's `AlignmentChunk`: `reference[ref_start..ref_end]`
/// against `hypothesis[hyp_start..hyp_end]`. Chunks are contiguous and cover both sequences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AlignmentChunk {
    /// What the chunk does.
    pub op: EditOp,
    /// Start of the reference span.
    pub ref_start: usize,
    /// End (exclusive) of the reference span.
    pub ref_end: usize,
    /// Start of the hypothesis span.
    pub hyp_start: usize,
    /// End (exclusive) of the hypothesis span.
    pub hyp_end: usize,
}

impl AlignmentChunk {
    /// The aligned `(reference index, hypothesis index)` pairs of an equal or substitute chunk
    /// (empty for insertions and deletions).
    pub fn pairs(&self) -> impl Iterator<Item = (usize, usize)> {
        let paired = matches!(self.op, EditOp::Equal | EditOp::Substitute);
        let n = if paired {
            self.ref_end - self.ref_start
        } else {
            0
        };
        let (r, h) = (self.ref_start, self.hyp_start);
        (0..n).map(move |k| (r + k, h + k))
    }
}

/// The kind of an elementary edit (matches are not recorded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RawOp {
    Replace,
    Insert,
    Delete,
}

/// One elementary edit (rapidfuzz's `Editop`): position in the reference and in the hypothesis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RawEdit {
    op: RawOp,
    src: usize,
    dest: usize,
}

/// rapidfuzz's switch to Hirschberg's algorithm: `2 * band * len2 / 8 >= 1 MiB`, `len1 >= 65`,
/// `len2 >= 10` (`levenshtein_align_hirschberg`).
const HIRSCHBERG_MATRIX_BYTES: usize = 1024 * 1024;

/// The largest full matrix [`matrix_align`] builds (4 bytes a cell: 128 MiB).
const MAX_MATRIX_CELLS: usize = 1 << 25;

fn common_affix<T: PartialEq>(a: &[T], b: &[T]) -> (usize, usize) {
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    (prefix, suffix)
}

/// Full Levenshtein matrix and rapidfuzz's `recover_alignment` traceback. `d[i][j]` is the distance
/// of `s1[..i]` and `s2[..j]`; Hyyrö's VP bit (row j, col i) is `d[i][j] - d[i-1][j] == 1`, VN is `== -1`.
fn matrix_align<T: PartialEq>(
    s1: &[T],
    s2: &[T],
    src_pos: usize,
    dest_pos: usize,
    out: &mut Vec<RawEdit>,
) {
    let (n1, n2) = (s1.len(), s2.len());
    let w = n2 + 1;
    let mut d = vec![0u32; (n1 + 1) * w];
    for (j, cell) in d.iter_mut().take(w).enumerate() {
        *cell = j as u32;
    }
    for i in 1..=n1 {
        d[i * w] = i as u32;
        for j in 1..=n2 {
            let diag = d[(i - 1) * w + j - 1] + u32::from(s1[i - 1] != s2[j - 1]);
            let up = d[(i - 1) * w + j] + 1;
            let left = d[i * w + j - 1] + 1;
            d[i * w + j] = diag.min(up).min(left);
        }
    }
    let at = |i: usize, j: usize| i64::from(d[i * w + j]);
    let mut rev = Vec::new();
    let (mut col, mut row) = (n1, n2);
    while row > 0 && col > 0 {
        if at(col, row) - at(col - 1, row) == 1 {
            col -= 1;
            rev.push((RawOp::Delete, col, row));
        } else {
            row -= 1;
            if row > 0 && at(col, row) - at(col - 1, row) == -1 {
                rev.push((RawOp::Insert, col, row));
            } else {
                col -= 1;
                if s1[col] != s2[row] {
                    rev.push((RawOp::Replace, col, row));
                }
            }
        }
    }
    while col > 0 {
        col -= 1;
        rev.push((RawOp::Delete, col, row));
    }
    while row > 0 {
        row -= 1;
        rev.push((RawOp::Insert, col, row));
    }
    out.extend(rev.into_iter().rev().map(|(op, s, t)| RawEdit {
        op,
        src: s + src_pos,
        dest: t + dest_pos,
    }));
}

/// Last row of the Levenshtein matrix of `s1` against `s2`: `row[i]` = distance of `s1[..i]` and `s2`.
fn last_row<'a, T: PartialEq + 'a>(
    s1: impl Iterator<Item = &'a T> + Clone,
    n1: usize,
    s2: impl Iterator<Item = &'a T>,
) -> Vec<usize> {
    let mut row: Vec<usize> = (0..=n1).collect();
    for (j, b) in s2.enumerate() {
        let mut diag = row[0];
        row[0] = j + 1;
        for (i, a) in s1.clone().enumerate() {
            let next = (diag + usize::from(a != b))
                .min(row[i + 1] + 1)
                .min(row[i] + 1);
            diag = row[i + 1];
            row[i + 1] = next;
        }
    }
    row
}

/// rapidfuzz's `find_hirschberg_pos`: split `s2` at `len2 / 2` and `s1` at the first position that
/// minimises left + right distance. Returns `(s1_mid, s2_mid, left_score, right_score)`.
fn hirschberg_pos<T: PartialEq>(s1: &[T], s2: &[T]) -> (usize, usize, usize, usize) {
    let n1 = s1.len();
    let s2_mid = s2.len() / 2;
    let left = last_row(s1.iter(), n1, s2[..s2_mid].iter());
    let right = last_row(s1.iter().rev(), n1, s2[s2_mid..].iter().rev());
    let mut best = (0, left[0], right[n1]);
    for i in 1..=n1 {
        if left[i] + right[n1 - i] < best.1 + best.2 {
            best = (i, left[i], right[n1 - i]);
        }
    }
    (best.0, s2_mid, best.1, best.2)
}

/// rapidfuzz's `levenshtein_align_hirschberg`, recursion and thresholds included.
fn align_recursive<T: PartialEq>(
    s1: &[T],
    s2: &[T],
    src_pos: usize,
    dest_pos: usize,
    max: usize,
    out: &mut Vec<RawEdit>,
) {
    let (prefix, suffix) = common_affix(s1, s2);
    let s1 = &s1[prefix..s1.len() - suffix];
    let s2 = &s2[prefix..s2.len() - suffix];
    let (src_pos, dest_pos) = (src_pos + prefix, dest_pos + prefix);
    let max = max.min(s1.len().max(s2.len()));
    let full_band = s1.len().min(2 * max + 1);
    let matrix_size = 2 * full_band * s2.len() / 8;
    let rapidfuzz_uses_matrix =
        matrix_size < HIRSCHBERG_MATRIX_BYTES || s1.len() < 65 || s2.len() < 10;
    // Where rapidfuzz keeps only a narrow band of a huge matrix (long, nearly equal sequences) a full
    // matrix would not fit: split with Hirschberg instead. The alignment stays optimal (same S+D+I);
    // only the choice among tied alignments may then differ from rapidfuzz's.
    let fits = (s1.len() + 1).saturating_mul(s2.len() + 1) <= MAX_MATRIX_CELLS;
    if rapidfuzz_uses_matrix && (fits || s1.len() < 2 || s2.len() < 2) {
        matrix_align(s1, s2, src_pos, dest_pos, out);
    } else {
        let (m1, m2, left, right) = hirschberg_pos(s1, s2);
        align_recursive(&s1[..m1], &s2[..m2], src_pos, dest_pos, left, out);
        align_recursive(
            &s1[m1..],
            &s2[m2..],
            src_pos + m1,
            dest_pos + m2,
            right,
            out,
        );
    }
}

/// rapidfuzz's `Editops.as_opcodes`: group elementary edits into contiguous chunks.
fn to_opcodes(edits: &[RawEdit], src_len: usize, dest_len: usize) -> Vec<AlignmentChunk> {
    let mut chunks = Vec::new();
    let (mut src, mut dest) = (0, 0);
    let mut i = 0;
    while i < edits.len() {
        if src < edits[i].src || dest < edits[i].dest {
            chunks.push(AlignmentChunk {
                op: EditOp::Equal,
                ref_start: src,
                ref_end: edits[i].src,
                hyp_start: dest,
                hyp_end: edits[i].dest,
            });
            src = edits[i].src;
            dest = edits[i].dest;
        }
        let (src_begin, dest_begin, op) = (src, dest, edits[i].op);
        while i < edits.len() && edits[i].op == op && edits[i].src == src && edits[i].dest == dest {
            match op {
                RawOp::Replace => {
                    src += 1;
                    dest += 1;
                }
                RawOp::Insert => dest += 1,
                RawOp::Delete => src += 1,
            }
            i += 1;
        }
        chunks.push(AlignmentChunk {
            op: match op {
                RawOp::Replace => EditOp::Substitute,
                RawOp::Insert => EditOp::Insert,
                RawOp::Delete => EditOp::Delete,
            },
            ref_start: src_begin,
            ref_end: src,
            hyp_start: dest_begin,
            hyp_end: dest,
        });
    }
    if src < src_len || dest < dest_len {
        chunks.push(AlignmentChunk {
            op: EditOp::Equal,
            ref_start: src,
            ref_end: src_len,
            hyp_start: dest,
            hyp_end: dest_len,
        });
    }
    chunks
}

/// The Levenshtein alignment of `reference` against `hypothesis` exactly as rapidfuzz's
/// `Levenshtein.opcodes` (and hence jiwer) computes it, including its choice among tied optimal
/// alignments (see [`EditCounts`] for the one exception, sequences beyond 2^25 matrix cells that
/// rapidfuzz aligns in a narrow band). Works on any comparable units: words, characters, token ids.
pub fn align<T: PartialEq>(reference: &[T], hypothesis: &[T]) -> Vec<AlignmentChunk> {
    let mut edits = Vec::new();
    let max = reference.len().max(hypothesis.len());
    align_recursive(reference, hypothesis, 0, 0, max, &mut edits);
    to_opcodes(&edits, reference.len(), hypothesis.len())
}

/// Hits, substitutions, deletions and insertions of one or more aligned sentence pairs, with the
/// rates jiwer derives from them.
///
/// # Definitions (jiwer 4.0 / rapidfuzz 3.14, checked against `tests/fixtures/jiwer_fixture.json`)
///
/// * **Words** ([`words_default`], jiwer's `wer_default`): every run of two or more whitespace
///   characters becomes one space (`re.sub(r"\s\s+", " ", s)`), leading and trailing whitespace is
///   stripped, and the text is split on U+0020 only, dropping empty pieces. No lower-casing, no
///   punctuation removal. "Whitespace" is Python's `str.isspace`: Unicode `White_Space` plus
///   U+001C..U+001F. A single tab or no-break space *between* two words is therefore part of a word,
///   exactly as in jiwer.
/// * **Characters** ([`chars_default`], jiwer's `cer_default`): leading and trailing whitespace is
///   stripped and every Unicode scalar value is one unit; inner spaces count as characters and runs of
///   spaces are *not* collapsed.
/// * **Alignment** ([`align`]): rapidfuzz's `Levenshtein.opcodes(reference, hypothesis)`, which jiwer
///   uses. Among the optimal alignments it picks one by a fixed rule (common prefix and suffix removed
///   first, Hyyrö's traceback from the end preferring deletion, then insertion, then the diagonal,
///   and Hirschberg's split at the first optimal reference position for big inputs), and this module
///   reproduces that rule, so hits, substitutions, deletions and insertions match jiwer one for one.
///   One exception: long, nearly equal sequences whose full matrix would exceed 2^25 cells (where
///   rapidfuzz keeps a narrow band) are split further with Hirschberg; the alignment is still
///   optimal, but the S/D/I split of tied alignments may differ from rapidfuzz's there.
/// * **Rates** ([`EditCounts`]): corpus-level, from summed counts: WER = (S + D + I) / (H + S + D),
///   MER = (S + D + I) / (H + S + D + I), WIP = (H / N_ref) · (H / N_hyp) (0 without hypothesis
///   words), WIL = 1 − WIP; CER is the WER formula over characters. Empty references inside a corpus
///   are allowed (their hypothesis units count as insertions), as in jiwer 4. When the *whole*
///   reference side is empty the rates are undefined: jiwer 4 then reports the insertion count as
///   "WER" (jiwer 3.0 raised); here the rate methods return an error instead.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EditCounts {
    /// Units equal in reference and hypothesis.
    pub hits: usize,
    /// Reference units replaced by another unit.
    pub substitutions: usize,
    /// Reference units missing from the hypothesis.
    pub deletions: usize,
    /// Hypothesis units with no reference counterpart.
    pub insertions: usize,
    /// Reference units (H + S + D).
    pub reference_len: usize,
    /// Hypothesis units (H + S + I).
    pub hypothesis_len: usize,
}

impl EditCounts {
    /// Counts of one alignment (from [`align`]).
    pub fn from_alignment(chunks: &[AlignmentChunk]) -> Self {
        let mut c = EditCounts::default();
        for ch in chunks {
            let (r, h) = (ch.ref_end - ch.ref_start, ch.hyp_end - ch.hyp_start);
            match ch.op {
                EditOp::Equal => c.hits += r,
                EditOp::Substitute => c.substitutions += r,
                EditOp::Delete => c.deletions += r,
                EditOp::Insert => c.insertions += h,
            }
            c.reference_len += r;
            c.hypothesis_len += h;
        }
        c
    }

    /// Adds another sentence's counts (corpus-level sums, as jiwer does over a list of sentences).
    pub fn add(&mut self, other: &EditCounts) {
        self.hits += other.hits;
        self.substitutions += other.substitutions;
        self.deletions += other.deletions;
        self.insertions += other.insertions;
        self.reference_len += other.reference_len;
        self.hypothesis_len += other.hypothesis_len;
    }

    /// S + D + I.
    pub fn errors(&self) -> usize {
        self.substitutions + self.deletions + self.insertions
    }

    fn ensure_reference(&self, what: &str) -> Result<()> {
        ensure!(
            self.reference_len > 0,
            "{what} is undefined: the reference is empty ({} insertions against no reference units; \
             jiwer 4 would report the insertion count, jiwer 3.0 raised)",
            self.insertions
        );
        Ok(())
    }

    /// Error rate (S + D + I) / (H + S + D): WER over words, CER over characters. Errors when there
    /// are no reference units.
    pub fn error_rate(&self) -> Result<f64> {
        self.ensure_reference("the error rate")?;
        Ok(self.errors() as f64 / (self.hits + self.substitutions + self.deletions) as f64)
    }

    /// Match error rate (S + D + I) / (H + S + D + I). Errors when there are no reference units.
    pub fn mer(&self) -> Result<f64> {
        self.ensure_reference("MER")?;
        Ok(self.errors() as f64 / (self.hits + self.errors()) as f64)
    }

    /// Word information preserved (H / N_ref) · (H / N_hyp), 0 when the hypothesis is empty.
    /// Errors when there are no reference units.
    pub fn wip(&self) -> Result<f64> {
        self.ensure_reference("WIP")?;
        if self.hypothesis_len == 0 {
            return Ok(0.0);
        }
        let h = self.hits as f64;
        Ok((h / self.reference_len as f64) * (h / self.hypothesis_len as f64))
    }

    /// Word information lost, 1 − WIP. Errors when there are no reference units.
    pub fn wil(&self) -> Result<f64> {
        Ok(1.0 - self.wip()?)
    }
}

/// The result of [`process_words`] or [`process_characters`]: summed counts and each pair's alignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlignmentOutput {
    /// Counts summed over all sentence pairs.
    pub counts: EditCounts,
    /// The alignment of each sentence pair, in input order.
    pub alignments: Vec<Vec<AlignmentChunk>>,
}

fn process<T: PartialEq, S: AsRef<str>>(
    references: &[S],
    hypotheses: &[S],
    units: impl Fn(&str) -> Vec<T>,
) -> Result<AlignmentOutput> {
    ensure!(
        references.len() == hypotheses.len(),
        "{} reference sentences but {} hypothesis sentences",
        references.len(),
        hypotheses.len()
    );
    let mut counts = EditCounts::default();
    let mut alignments = Vec::with_capacity(references.len());
    for (r, h) in references.iter().zip(hypotheses) {
        let chunks = align(&units(r.as_ref()), &units(h.as_ref()));
        counts.add(&EditCounts::from_alignment(&chunks));
        alignments.push(chunks);
    }
    Ok(AlignmentOutput { counts, alignments })
}

/// jiwer's `process_words` with its default transform: word counts and alignments of sentence pairs.
/// Errors only when the two lists differ in length; empty references are allowed here (the rates on
/// [`EditCounts`] error when the whole reference side is empty).
pub fn process_words<S: AsRef<str>>(references: &[S], hypotheses: &[S]) -> Result<AlignmentOutput> {
    process(references, hypotheses, words_default)
}

/// jiwer's `process_characters` with its default transform: character counts and alignments.
pub fn process_characters<S: AsRef<str>>(
    references: &[S],
    hypotheses: &[S],
) -> Result<AlignmentOutput> {
    process(references, hypotheses, chars_default)
}

/// Corpus-level word error rate, as `jiwer.wer(references, hypotheses)`. Errors when the lists differ
/// in length or all references are empty.
pub fn wer<S: AsRef<str>>(references: &[S], hypotheses: &[S]) -> Result<f64> {
    process_words(references, hypotheses)?.counts.error_rate()
}

/// Corpus-level character error rate, as `jiwer.cer(references, hypotheses)`. Errors when the lists
/// differ in length or all references are empty.
pub fn cer<S: AsRef<str>>(references: &[S], hypotheses: &[S]) -> Result<f64> {
    process_characters(references, hypotheses)?
        .counts
        .error_rate()
}

/// Splits language-tagged segments `(text, lang)` into language-tagged words, each segment with
/// [`words_default`]. The words are exactly those of [`words_default`] applied to the segments joined
/// by spaces, so per-language counts add up to the utterance's WER counts.
pub fn tagged_words<'a>(segments: &[(&str, &'a str)]) -> Vec<(String, &'a str)> {
    segments
        .iter()
        .flat_map(|&(text, lang)| words_default(text).into_iter().map(move |w| (w, lang)))
        .collect()
}

/// Word error counts of one language.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LanguageCounts {
    /// Reference words of this language.
    pub reference_words: usize,
    /// Reference words of this language recognised correctly.
    pub hits: usize,
    /// Reference words of this language substituted.
    pub substitutions: usize,
    /// Reference words of this language deleted.
    pub deletions: usize,
    /// Inserted hypothesis words the model tagged with this language.
    pub insertions: usize,
}

impl LanguageCounts {
    /// S + D + I attributed to this language.
    pub fn errors(&self) -> usize {
        self.substitutions + self.deletions + self.insertions
    }

    /// errors / reference words; `None` when the language has no reference words (it can still
    /// collect insertions).
    pub fn wer(&self) -> Option<f64> {
        (self.reference_words > 0).then(|| self.errors() as f64 / self.reference_words as f64)
    }

    fn add(&mut self, o: &LanguageCounts) {
        self.reference_words += o.reference_words;
        self.hits += o.hits;
        self.substitutions += o.substitutions;
        self.deletions += o.deletions;
        self.insertions += o.insertions;
    }
}

/// Agreement count for an accuracy: `correct` out of `total`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Agreement {
    /// Items whose languages agree.
    pub correct: usize,
    /// Items compared.
    pub total: usize,
}

impl Agreement {
    /// correct / total; `None` when nothing was compared.
    pub fn accuracy(&self) -> Option<f64> {
        (self.total > 0).then(|| self.correct as f64 / self.total as f64)
    }

    fn add(&mut self, o: &Agreement) {
        self.correct += o.correct;
        self.total += o.total;
    }
}

/// Per-language word counts and word-level LID agreement of one utterance (see [`language_scores`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanguageScores {
    /// The word counts of the utterance (same as [`process_words`] on the joined text).
    pub counts: EditCounts,
    /// Counts per language.
    pub per_language: BTreeMap<String, LanguageCounts>,
    /// Over aligned word pairs (hits and substitutions): does the hypothesis word's language equal
    /// the reference word's?
    pub word_lid: Agreement,
}

/// Per-language WER attribution and word-level LID of one utterance.
///
/// Reference and hypothesis words (with their languages) are aligned with [`align`], the same
/// alignment as the WER. Hits, substitutions and deletions are attributed to the **reference** word's
/// language; insertions to the **inserted hypothesis word's predicted** language. WER of a language =
/// (S + D + I attributed to it) / (reference words of that language), so the per-language error
/// counts add up to the utterance's S + D + I. Word-level LID compares languages over the aligned
/// pairs (hits and substitutions).
pub fn language_scores<W: AsRef<str>, L: AsRef<str>>(
    reference: &[(W, L)],
    hypothesis: &[(W, L)],
) -> LanguageScores {
    let ref_words: Vec<&str> = reference.iter().map(|(w, _)| w.as_ref()).collect();
    let hyp_words: Vec<&str> = hypothesis.iter().map(|(w, _)| w.as_ref()).collect();
    let chunks = align(&ref_words, &hyp_words);
    let mut per_language: BTreeMap<String, LanguageCounts> = BTreeMap::new();
    fn entry<'m>(
        map: &'m mut BTreeMap<String, LanguageCounts>,
        lang: &str,
    ) -> &'m mut LanguageCounts {
        map.entry(lang.to_string()).or_default()
    }
    let mut word_lid = Agreement::default();
    for ch in &chunks {
        match ch.op {
            EditOp::Insert => {
                for (_, lang) in &hypothesis[ch.hyp_start..ch.hyp_end] {
                    entry(&mut per_language, lang.as_ref()).insertions += 1;
                }
            }
            EditOp::Delete => {
                for (_, lang) in &reference[ch.ref_start..ch.ref_end] {
                    let e = entry(&mut per_language, lang.as_ref());
                    e.reference_words += 1;
                    e.deletions += 1;
                }
            }
            EditOp::Equal | EditOp::Substitute => {
                for (r, h) in ch.pairs() {
                    let (rl, hl) = (reference[r].1.as_ref(), hypothesis[h].1.as_ref());
                    let e = entry(&mut per_language, rl);
                    e.reference_words += 1;
                    if ch.op == EditOp::Equal {
                        e.hits += 1;
                    } else {
                        e.substitutions += 1;
                    }
                    word_lid.total += 1;
                    word_lid.correct += usize::from(rl == hl);
                }
            }
        }
    }
    LanguageScores {
        counts: EditCounts::from_alignment(&chunks),
        per_language,
        word_lid,
    }
}

/// Token-level LID agreement: reference and hypothesis token ids (each with its language) are aligned
/// by Levenshtein on the ids ([`align`]); over the aligned pairs (hits and substitutions) count those
/// whose languages agree.
pub fn token_lid<L: AsRef<str>>(reference: &[(u32, L)], hypothesis: &[(u32, L)]) -> Agreement {
    let ref_ids: Vec<u32> = reference.iter().map(|t| t.0).collect();
    let hyp_ids: Vec<u32> = hypothesis.iter().map(|t| t.0).collect();
    let mut agreement = Agreement::default();
    for ch in align(&ref_ids, &hyp_ids) {
        for (r, h) in ch.pairs() {
            agreement.total += 1;
            agreement.correct += usize::from(reference[r].1.as_ref() == hypothesis[h].1.as_ref());
        }
    }
    agreement
}

/// One evaluated utterance, as [`EvalAccumulator::add`] takes it.
#[derive(Debug, Clone, Copy)]
pub struct Utterance<'a> {
    /// Reference transcript as `(text, lang)` segments (a plain transcript is one segment).
    pub reference: &'a [(&'a str, &'a str)],
    /// Hypothesis as `(text, predicted lang)` segments or words.
    pub hypothesis: &'a [(&'a str, &'a str)],
    /// Reference token ids with languages, for token-level LID (`None`: not measured).
    pub reference_tokens: Option<&'a [(u32, &'a str)]>,
    /// Hypothesis token ids with predicted languages, for token-level LID.
    pub hypothesis_tokens: Option<&'a [(u32, &'a str)]>,
    /// Reference utterance language, for utterance-level LID (`None`: not measured).
    pub reference_language: Option<&'a str>,
    /// Predicted utterance language.
    pub predicted_language: Option<&'a str>,
    /// Audio duration in seconds.
    pub audio_seconds: f64,
    /// Processing (wall-clock) seconds spent on this utterance.
    pub processing_seconds: f64,
}

/// The text jiwer sees for a segmented transcript: segment texts trimmed, empty ones dropped, joined
/// by single spaces (as the manifest's `Text::to_plain`).
pub fn joined_text(segments: &[(&str, &str)]) -> String {
    segments
        .iter()
        .map(|(t, _)| t.trim())
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Accumulates utterances one by one into corpus-level scores ([`EvalAccumulator::summary`]).
#[derive(Debug, Clone, Default)]
pub struct EvalAccumulator {
    utterances: usize,
    words: EditCounts,
    chars: EditCounts,
    per_language: BTreeMap<String, LanguageCounts>,
    word_lid: Agreement,
    token_lid: Agreement,
    utterance_lid: Agreement,
    audio_seconds: f64,
    processing_seconds: f64,
}

impl EvalAccumulator {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one utterance. Errors (leaving the accumulator unchanged) on negative or non-finite
    /// durations, or when only one side of the token or utterance languages is given.
    pub fn add(&mut self, u: &Utterance<'_>) -> Result<()> {
        for (name, v) in [
            ("audio_seconds", u.audio_seconds),
            ("processing_seconds", u.processing_seconds),
        ] {
            ensure!(
                v.is_finite() && v >= 0.0,
                "{name} must be finite and >= 0, got {v}"
            );
        }
        let token_lid = match (u.reference_tokens, u.hypothesis_tokens) {
            (Some(r), Some(h)) => Some(token_lid(r, h)),
            (None, None) => None,
            _ => bail!("token-level LID needs both reference and hypothesis tokens, or neither"),
        };
        let utterance_lid = match (u.reference_language, u.predicted_language) {
            (Some(r), Some(p)) => Some(Agreement {
                correct: usize::from(r == p),
                total: 1,
            }),
            (None, None) => None,
            _ => bail!(
                "utterance-level LID needs both reference and predicted languages, or neither"
            ),
        };
        let scores = language_scores(&tagged_words(u.reference), &tagged_words(u.hypothesis));
        let chars = align(
            &chars_default(&joined_text(u.reference)),
            &chars_default(&joined_text(u.hypothesis)),
        );

        self.utterances += 1;
        self.words.add(&scores.counts);
        self.chars.add(&EditCounts::from_alignment(&chars));
        for (lang, c) in &scores.per_language {
            self.per_language.entry(lang.clone()).or_default().add(c);
        }
        self.word_lid.add(&scores.word_lid);
        if let Some(t) = token_lid {
            self.token_lid.add(&t);
        }
        if let Some(a) = utterance_lid {
            self.utterance_lid.add(&a);
        }
        self.audio_seconds += u.audio_seconds;
        self.processing_seconds += u.processing_seconds;
        Ok(())
    }

    /// Corpus-level scores. Errors when no reference word was seen (WER undefined).
    pub fn summary(&self) -> Result<EvalSummary> {
        let wer = self.words.error_rate()?;
        let cer = self.chars.error_rate()?;
        Ok(EvalSummary {
            utterances: self.utterances,
            wer,
            cer,
            mer: self.words.mer()?,
            wil: self.words.wil()?,
            wip: self.words.wip()?,
            words: self.words,
            chars: self.chars,
            per_language: self
                .per_language
                .iter()
                .map(|(lang, c)| {
                    let score = LanguageScore {
                        wer: c.wer(),
                        counts: *c,
                    };
                    (lang.clone(), score)
                })
                .collect(),
            word_lid_accuracy: self.word_lid.accuracy(),
            word_lid: self.word_lid,
            token_lid_accuracy: self.token_lid.accuracy(),
            token_lid: self.token_lid,
            utterance_lid_accuracy: self.utterance_lid.accuracy(),
            utterance_lid: self.utterance_lid,
            audio_seconds: self.audio_seconds,
            processing_seconds: self.processing_seconds,
            rtfx: (self.processing_seconds > 0.0)
                .then(|| self.audio_seconds / self.processing_seconds),
        })
    }
}

/// WER of one language in the summary.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LanguageScore {
    /// errors / reference words of the language; `null` when it has none.
    pub wer: Option<f64>,
    /// The counts behind it.
    #[serde(flatten)]
    pub counts: LanguageCounts,
}

/// Corpus-level evaluation scores (`mezcla eval --json` prints this).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalSummary {
    /// Utterances evaluated.
    pub utterances: usize,
    /// Corpus word error rate (jiwer's `wer`).
    pub wer: f64,
    /// Corpus character error rate (jiwer's `cer`).
    pub cer: f64,
    /// Corpus match error rate (jiwer's `mer`).
    pub mer: f64,
    /// Corpus word information lost (jiwer's `wil`).
    pub wil: f64,
    /// Corpus word information preserved (jiwer's `wip`).
    pub wip: f64,
    /// Word counts.
    pub words: EditCounts,
    /// Character counts.
    pub chars: EditCounts,
    /// WER per language (see [`language_scores`] for the attribution).
    pub per_language: BTreeMap<String, LanguageScore>,
    /// Word-level LID accuracy over aligned word pairs; `null` when there were none.
    pub word_lid_accuracy: Option<f64>,
    /// Counts behind `word_lid_accuracy`.
    pub word_lid: Agreement,
    /// Token-level LID accuracy over aligned token pairs; `null` when not measured.
    pub token_lid_accuracy: Option<f64>,
    /// Counts behind `token_lid_accuracy`.
    pub token_lid: Agreement,
    /// Utterance-level LID accuracy; `null` when not measured.
    pub utterance_lid_accuracy: Option<f64>,
    /// Counts behind `utterance_lid_accuracy`.
    pub utterance_lid: Agreement,
    /// Total audio seconds.
    pub audio_seconds: f64,
    /// Total processing seconds.
    pub processing_seconds: f64,
    /// Inverse real-time factor: audio seconds / processing seconds; `null` when no processing time.
    pub rtfx: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utt<'a>(
        reference: &'a [(&'a str, &'a str)],
        hypothesis: &'a [(&'a str, &'a str)],
    ) -> Utterance<'a> {
        Utterance {
            reference,
            hypothesis,
            reference_tokens: None,
            hypothesis_tokens: None,
            reference_language: None,
            predicted_language: None,
            audio_seconds: 1.0,
            processing_seconds: 0.25,
        }
    }

    #[test]
    fn jiwer_word_and_char_transforms() {
        assert_eq!(words_default("  Hola   Mundo  "), ["Hola", "Mundo"]);
        // A single tab or no-break space between words does not split (jiwer splits on " " only)...
        assert_eq!(words_default("a\tb"), ["a\tb"]);
        assert_eq!(words_default("a\u{a0}b"), ["a\u{a0}b"]);
        // ...but a run of two whitespace characters becomes a space.
        assert_eq!(words_default("a \tb"), ["a", "b"]);
        assert_eq!(words_default("a\u{1f}\u{1f}b"), ["a", "b"]);
        assert_eq!(words_default("\u{1c}a b\u{1d}"), ["a", "b"]);
        assert!(words_default(" \t ").is_empty());
        assert_eq!(chars_default(" a  ñ "), ['a', ' ', ' ', 'ñ']);
        assert_eq!(chars_default("नमस्ते").len(), 6);
    }

    #[test]
    fn alignment_follows_rapidfuzz_example() {
        let a: Vec<char> = "qabxcd".chars().collect();
        let b: Vec<char> = "abycdf".chars().collect();
        let ops: Vec<(EditOp, usize, usize, usize, usize)> = align(&a, &b)
            .iter()
            .map(|c| (c.op, c.ref_start, c.ref_end, c.hyp_start, c.hyp_end))
            .collect();
        assert_eq!(
            ops,
            [
                (EditOp::Delete, 0, 1, 0, 0),
                (EditOp::Equal, 1, 3, 0, 2),
                (EditOp::Substitute, 3, 4, 2, 3),
                (EditOp::Equal, 4, 6, 3, 5),
                (EditOp::Insert, 6, 6, 5, 6),
            ]
        );
        assert!(align::<u32>(&[], &[]).is_empty());
    }

    #[test]
    fn long_nearly_equal_sequences_stay_in_memory() {
        // 12k units with three substitutions: rapidfuzz's banded case, split by Hirschberg here.
        let a: Vec<u32> = (0..12_000u32)
            .map(|i| i.wrapping_mul(2_654_435_761) % 3)
            .collect();
        let mut b = a.clone();
        for i in [5, 6_000, 11_990] {
            b[i] = 7;
        }
        let c = EditCounts::from_alignment(&align(&a, &b));
        assert_eq!(
            (c.hits, c.substitutions, c.deletions, c.insertions),
            (11_997, 3, 0, 0)
        );
        b.remove(3_000);
        let c = EditCounts::from_alignment(&align(&a, &b));
        assert_eq!(c.errors(), 4);
        assert_eq!((c.reference_len, c.hypothesis_len), (12_000, 11_999));
    }

    #[test]
    fn per_language_attribution() {
        let reference = [
            ("I", "en"),
            ("want", "en"),
            ("el", "es"),
            ("libro", "es"),
            ("rojo", "es"),
        ];
        let hypothesis = [
            ("I", "en"),
            ("wand", "en"),
            ("el", "es"),
            ("libro", "en"),
            ("accha", "hi"),
        ];
        // I=I, want->wand (S, en), el=el, libro=libro (hit, es; LID wrong), rojo->accha (S, es).
        let s = language_scores(&reference, &hypothesis);
        assert_eq!(s.counts.substitutions, 2);
        let en = s.per_language["en"];
        assert_eq!((en.reference_words, en.hits, en.substitutions), (2, 1, 1));
        assert_eq!(en.wer(), Some(0.5));
        let es = s.per_language["es"];
        assert_eq!((es.reference_words, es.hits, es.substitutions), (3, 2, 1));
        // hi has no reference words: no entry unless it collects insertions.
        assert!(!s.per_language.contains_key("hi"));
        assert_eq!(
            s.word_lid,
            Agreement {
                correct: 3,
                total: 5
            }
        );

        // Deletions go to the reference word's language, insertions to the predicted language.
        let reference = [("uno", "es"), ("dos", "es"), ("tres", "es"), ("go", "en")];
        let hypothesis = [("uno", "es"), ("tres", "es"), ("go", "en"), ("yaar", "hi")];
        let s = language_scores(&reference, &hypothesis);
        let es = s.per_language["es"];
        assert_eq!((es.reference_words, es.hits, es.deletions), (3, 2, 1));
        let hi = s.per_language["hi"];
        assert_eq!((hi.reference_words, hi.insertions), (0, 1));
        assert_eq!(hi.wer(), None);
        let total: usize = s.per_language.values().map(LanguageCounts::errors).sum();
        assert_eq!(total, s.counts.errors());
        assert_eq!(s.word_lid.accuracy(), Some(1.0));
    }

    #[test]
    fn tagged_words_equal_words_of_joined_text() {
        let segments = [
            ("  hola\tamigo ", "es"),
            ("\u{1c}", "en"),
            ("see\u{a0}you  later\u{1f}", "en"),
            ("", "hi"),
            ("\tफिर मिलेंगे", "hi"),
        ];
        let tagged = tagged_words(&segments);
        let words: Vec<String> = tagged.iter().map(|(w, _)| w.clone()).collect();
        assert_eq!(words, words_default(&joined_text(&segments)));
        assert_eq!(tagged[0], ("hola\tamigo".to_string(), "es"));
        assert_eq!(tagged.last().map(|t| t.1), Some("hi"));
    }

    #[test]
    fn token_lid_aligns_ids() {
        let reference = [(1, "en"), (2, "en"), (3, "es")];
        let hypothesis = [(1, "en"), (5, "es"), (3, "es"), (9, "en")];
        // 1=1 (agree), 2->5 (en vs es), 3=3 (agree), 9 inserted (not a pair).
        let a = token_lid(&reference, &hypothesis);
        assert_eq!(
            a,
            Agreement {
                correct: 2,
                total: 3
            }
        );
        assert_eq!(token_lid::<&str>(&[], &[(4, "en")]).accuracy(), None);
    }

    #[test]
    fn empty_reference_is_an_error() {
        let err = wer(&[""], &["hola"]).expect_err("empty reference");
        assert!(err.to_string().contains("reference is empty"), "{err}");
        assert!(cer(&["  "], &[""]).is_err());
        assert!(wer(&["a"], &["a", "b"]).is_err());
        // Inside a corpus an empty reference only adds insertions.
        assert_eq!(wer(&["", "a b"], &["x", "a b"]).ok(), Some(0.5));
        let mut acc = EvalAccumulator::new();
        assert!(acc.summary().is_err());
        acc.add(&utt(&[("", "en")], &[("hi", "en")])).unwrap();
        assert!(acc.summary().is_err());
    }

    #[test]
    fn accumulator_summary() {
        let mut acc = EvalAccumulator::new();
        let r1 = [("quiero ir", "es"), ("to the park", "en")];
        let h1 = [
            ("quiero", "es"),
            ("irr", "es"),
            ("to", "en"),
            ("the", "en"),
            ("park", "en"),
        ];
        let rt1 = [(10, "es"), (11, "es"), (20, "en")];
        let ht1 = [(10, "es"), (12, "es"), (20, "es")];
        acc.add(&Utterance {
            reference_tokens: Some(&rt1),
            hypothesis_tokens: Some(&ht1),
            reference_language: Some("es"),
            predicted_language: Some("es"),
            audio_seconds: 3.0,
            processing_seconds: 0.5,
            ..utt(&r1, &h1)
        })
        .unwrap();
        let r2 = [("मैं घर", "hi")];
        let h2 = [("मैं", "hi")];
        acc.add(&Utterance {
            reference_language: Some("hi"),
            predicted_language: Some("en"),
            audio_seconds: 1.0,
            processing_seconds: 0.5,
            ..utt(&r2, &h2)
        })
        .unwrap();

        // Bad inputs are refused and leave the accumulator unchanged.
        assert!(acc
            .add(&Utterance {
                audio_seconds: -1.0,
                ..utt(&r2, &h2)
            })
            .is_err());
        assert!(acc
            .add(&Utterance {
                reference_language: Some("hi"),
                ..utt(&r2, &h2)
            })
            .is_err());
        assert!(acc
            .add(&Utterance {
                processing_seconds: f64::NAN,
                ..utt(&r2, &h2)
            })
            .is_err());

        let s = acc.summary().unwrap();
        assert_eq!(s.utterances, 2);
        // Words: 1 substitution (ir -> irr) + 1 deletion (घर) over 7 reference words.
        assert_eq!(s.words.reference_len, 7);
        assert_eq!(s.words.errors(), 2);
        assert_eq!(s.wer, 2.0 / 7.0);
        // Characters: "quiero ir to the park" -> "quiero irr to the park" (1 insertion, 21 chars),
        // "मैं घर" -> "मैं" (3 deletions, 6 chars).
        assert_eq!(s.chars.reference_len, 27);
        assert_eq!(s.cer, 4.0 / 27.0);
        assert_eq!(s.per_language["es"].wer, Some(0.5));
        assert_eq!(s.per_language["en"].wer, Some(0.0));
        assert_eq!(s.per_language["hi"].wer, Some(0.5));
        assert_eq!(s.word_lid_accuracy, Some(1.0));
        assert_eq!(s.token_lid_accuracy, Some(2.0 / 3.0));
        assert_eq!(s.utterance_lid_accuracy, Some(0.5));
        assert_eq!(s.rtfx, Some(4.0));

        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["per_language"]["hi"]["deletions"], 1);
        assert_eq!(json["utterance_lid"]["total"], 2);
        assert_eq!(json["words"]["substitutions"], 1);
        assert_eq!(json["rtfx"], 4.0);
    }
}
