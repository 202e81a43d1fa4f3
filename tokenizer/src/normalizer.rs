//! SentencePiece normalization: precompiled charsmap, whitespace handling and `▁` escaping, byte for byte.

use std::borrow::Cow;

use crate::proto::{Fields, Value};
use crate::trie::{DoubleArray, Trie};

/// U+2581, the meta symbol that stands for a space inside pieces.
pub const SPACE_SYMBOL: &str = "\u{2581}";
const SPACE_BYTES: &[u8] = SPACE_SYMBOL.as_bytes();
const REPLACEMENT: &[u8] = "\u{fffd}".as_bytes();

/// A normalizer spec as stored in a model (`NormalizerSpec`).
#[derive(Debug, Clone, PartialEq)]
pub struct NormalizerSpec {
    /// Rule name, e.g. `nmt_nfkc`, `identity`.
    pub name: Option<String>,
    /// The precompiled charsmap (trie size, darts-clone trie, NUL-separated replacement strings).
    pub precompiled_charsmap: Vec<u8>,
    pub add_dummy_prefix: bool,
    pub remove_extra_whitespaces: bool,
    pub escape_whitespaces: bool,
    /// Every field as read, so that writing keeps fields this crate does not interpret.
    pub fields: Fields,
}

impl NormalizerSpec {
    /// Parses a `NormalizerSpec` message.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let fields = Fields::parse(bytes).map_err(|e| format!("normalizer_spec: {e}"))?;
        let ctx = |e: String| format!("normalizer_spec: {e}");
        Ok(NormalizerSpec {
            name: fields.string(1).map_err(ctx)?,
            precompiled_charsmap: fields
                .bytes(2)
                .map_err(ctx)?
                .map(<[u8]>::to_vec)
                .unwrap_or_default(),
            add_dummy_prefix: fields.bool(3, true).map_err(ctx)?,
            remove_extra_whitespaces: fields.bool(4, true).map_err(ctx)?,
            escape_whitespaces: fields.bool(5, true).map_err(ctx)?,
            fields,
        })
    }

    /// A spec with the given rule name and charsmap and the default whitespace options.
    pub fn new(name: &str, precompiled_charsmap: Vec<u8>) -> Self {
        let mut s = NormalizerSpec {
            name: Some(name.to_string()),
            precompiled_charsmap,
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
            fields: Fields::default(),
        };
        s.sync_fields();
        s
    }

    /// Writes the typed values back into `fields` (all five known fields are written explicitly).
    pub fn sync_fields(&mut self) {
        if let Some(n) = &self.name {
            self.fields.set(1, Value::Bytes(n.as_bytes().to_vec()));
        }
        self.fields
            .set(2, Value::Bytes(self.precompiled_charsmap.clone()));
        self.fields
            .set(3, Value::Varint(self.add_dummy_prefix as u64));
        self.fields
            .set(4, Value::Varint(self.remove_extra_whitespaces as u64));
        self.fields
            .set(5, Value::Varint(self.escape_whitespaces as u64));
    }

    /// Serialized message.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.fields.to_bytes()
    }
}

#[derive(Debug, Clone)]
struct CharsMap {
    trie: DoubleArray,
    normalized: Vec<u8>,
}

impl CharsMap {
    fn parse(blob: &[u8]) -> Result<Self, String> {
        if blob.len() <= 4 {
            return Err("precompiled charsmap is broken (too short)".into());
        }
        let size = u32::from_le_bytes([blob[0], blob[1], blob[2], blob[3]]) as usize;
        if size >= blob.len() {
            return Err("precompiled charsmap: trie size exceeds the blob".into());
        }
        let rest = &blob[4..];
        if size > rest.len() {
            return Err("precompiled charsmap: trie size exceeds the blob".into());
        }
        Ok(CharsMap {
            trie: DoubleArray::from_bytes(&rest[..size]),
            normalized: rest[size..].to_vec(),
        })
    }

    /// The replacement at `value`: bytes up to the next NUL.
    fn replacement(&self, value: u32) -> &[u8] {
        let start = (value as usize).min(self.normalized.len());
        let tail = &self.normalized[start..];
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        &tail[..end]
    }
}

/// Length and validity of the UTF-8 character at the start of `s` (SentencePiece's `IsValidDecodeUTF8`).
pub(crate) fn decode_utf8_len(s: &[u8]) -> (usize, bool) {
    let b0 = s[0];
    let trail = |i: usize| s.get(i).is_some_and(|&b| b & 0xc0 == 0x80);
    let valid_cp = |c: u32| c < 0xd800 || (0xe000..=0x10ffff).contains(&c);
    if b0 < 0x80 {
        return (1, true);
    }
    if s.len() >= 2 && b0 & 0xe0 == 0xc0 {
        let cp = (u32::from(b0 & 0x1f) << 6) | u32::from(s[1] & 0x3f);
        if trail(1) && cp >= 0x80 && valid_cp(cp) {
            return (2, true);
        }
    } else if s.len() >= 3 && b0 & 0xf0 == 0xe0 {
        let cp =
            (u32::from(b0 & 0x0f) << 12) | (u32::from(s[1] & 0x3f) << 6) | u32::from(s[2] & 0x3f);
        if trail(1) && trail(2) && cp >= 0x800 && valid_cp(cp) {
            return (3, true);
        }
    } else if s.len() >= 4 && b0 & 0xf8 == 0xf0 {
        let cp = (u32::from(b0 & 0x07) << 18)
            | (u32::from(s[1] & 0x3f) << 12)
            | (u32::from(s[2] & 0x3f) << 6)
            | u32::from(s[3] & 0x3f);
        if trail(1) && trail(2) && trail(3) && cp >= 0x10000 && valid_cp(cp) {
            return (4, true);
        }
    }
    (1, false)
}

/// SentencePiece's `OneCharLen`: the length a UTF-8 lead byte announces.
#[inline]
pub(crate) fn one_char_len(b: u8) -> usize {
    const T: [u8; 16] = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4];
    T[(b >> 4) as usize] as usize
}

/// A ready-to-run normalizer.
#[derive(Debug, Clone)]
pub struct Normalizer {
    charsmap: Option<CharsMap>,
    add_dummy_prefix: bool,
    remove_extra_whitespaces: bool,
    escape_whitespaces: bool,
    treat_whitespace_as_suffix: bool,
    /// User-defined symbols, which are never normalized.
    matcher: Option<Trie>,
}

impl Normalizer {
    /// Builds a normalizer from a spec; `user_defined` symbols pass through unchanged.
    pub fn new(
        spec: &NormalizerSpec,
        treat_whitespace_as_suffix: bool,
        user_defined: &[&str],
    ) -> Result<Self, String> {
        let charsmap = if spec.precompiled_charsmap.is_empty() {
            None
        } else {
            Some(CharsMap::parse(&spec.precompiled_charsmap)?)
        };
        let matcher = if user_defined.is_empty() {
            None
        } else {
            Some(Trie::new(user_defined.iter().map(|s| (s.as_bytes(), 0))))
        };
        Ok(Normalizer {
            charsmap,
            add_dummy_prefix: spec.add_dummy_prefix,
            remove_extra_whitespaces: spec.remove_extra_whitespaces,
            escape_whitespaces: spec.escape_whitespaces,
            treat_whitespace_as_suffix,
            matcher,
        })
    }

    /// Normalizes one prefix of `input`: (replacement, bytes consumed).
    fn normalize_prefix<'a>(&'a self, input: &'a [u8]) -> (Cow<'a, [u8]>, usize) {
        if let Some(m) = &self.matcher {
            let mut longest = 0;
            m.common_prefix_search(input, |l, _| longest = longest.max(l));
            if longest > 0 {
                return (Cow::Borrowed(&input[..longest]), longest);
            }
        }
        if let Some(cm) = &self.charsmap {
            let mut longest = 0;
            let mut value = 0;
            cm.trie.common_prefix_search(input, |l, v| {
                if longest == 0 || l > longest {
                    longest = l;
                    value = v;
                }
            });
            if longest > 0 {
                return (Cow::Borrowed(cm.replacement(value)), longest);
            }
        }
        let (len, valid) = decode_utf8_len(input);
        if valid {
            (Cow::Borrowed(&input[..len]), len)
        } else {
            (Cow::Borrowed(REPLACEMENT), 1)
        }
    }

    /// Normalizes a sentence into the string the model segments.
    pub fn normalize(&self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len() * 3 / 2 + 4);
        if input.is_empty() {
            return out;
        }
        let mut input = input;
        if self.remove_extra_whitespaces {
            while !input.is_empty() {
                let (p, n) = self.normalize_prefix(input);
                if &*p != b" " {
                    break;
                }
                input = &input[n..];
            }
        }
        if input.is_empty() {
            return out;
        }
        let ws: &[u8] = if self.escape_whitespaces {
            SPACE_BYTES
        } else {
            b" "
        };
        if !self.treat_whitespace_as_suffix && self.add_dummy_prefix {
            out.extend_from_slice(ws);
        }
        let mut is_prev_space = self.remove_extra_whitespaces;
        while !input.is_empty() {
            let (p, n) = self.normalize_prefix(input);
            let mut sp: &[u8] = &p;
            while is_prev_space && sp.first() == Some(&b' ') {
                sp = &sp[1..];
            }
            if !sp.is_empty() {
                for &b in sp {
                    if self.escape_whitespaces && b == b' ' {
                        out.extend_from_slice(SPACE_BYTES);
                    } else {
                        out.push(b);
                    }
                }
                is_prev_space = sp.last() == Some(&b' ');
            }
            input = &input[n..];
            if !self.remove_extra_whitespaces {
                is_prev_space = false;
            }
        }
        if self.remove_extra_whitespaces {
            while out.ends_with(ws) {
                out.truncate(out.len() - ws.len());
            }
        }
        if self.treat_whitespace_as_suffix && self.add_dummy_prefix {
            out.extend_from_slice(ws);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(add: bool, remove: bool) -> NormalizerSpec {
        let mut s = NormalizerSpec::new("identity", Vec::new());
        s.add_dummy_prefix = add;
        s.remove_extra_whitespaces = remove;
        s
    }

    #[test]
    fn whitespace_handling() {
        let n = Normalizer::new(&spec(true, true), false, &[]).unwrap();
        assert_eq!(String::from_utf8(n.normalize(b"  a  b ")).unwrap(), "▁a▁b");
        assert!(n.normalize(b"   ").is_empty());
        let n = Normalizer::new(&spec(false, false), false, &[]).unwrap();
        assert_eq!(String::from_utf8(n.normalize(b" a  b")).unwrap(), "▁a▁▁b");
        let n = Normalizer::new(&spec(true, true), true, &[]).unwrap();
        assert_eq!(String::from_utf8(n.normalize(b"a b")).unwrap(), "a▁b▁");
        let n = Normalizer::new(&spec(true, true), false, &[]).unwrap();
        assert_eq!(n.normalize(b"a\xffb"), "▁a\u{fffd}b".as_bytes());
    }
}
