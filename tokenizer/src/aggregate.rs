//! The concatenated tokenizer (NeMo's AggregateTokenizer): per-language models in one vocabulary, shared blank at id V.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::SentencePieceModel;
use crate::normalizer::SPACE_SYMBOL;

/// Name of the JSON file that lists the languages of a saved concatenated tokenizer.
pub const CONCAT_CONFIG_FILE: &str = "concat_tokenizer.json";

/// One span of a code-switched text: `{"str": ..., "lang": ...}` as in NeMo manifests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    #[serde(rename = "str")]
    pub text: String,
    pub lang: String,
}

/// Per-token display text and language (NeMo's `ids_to_text_and_langs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextAndLang {
    pub char: String,
    pub lang: String,
}

/// A word and its majority language (NeMo's `ids_to_words_and_langs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WordAndLang {
    pub word: String,
    pub lang: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct ConcatConfig {
    format: String,
    languages: Vec<ConcatEntry>,
    #[serde(default)]
    vocab_size: Option<usize>,
    #[serde(default)]
    blank_id: Option<usize>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ConcatEntry {
    lang: String,
    model: String,
    #[serde(default)]
    offset: Option<usize>,
    #[serde(default)]
    vocab_size: Option<usize>,
}

const FORMAT: &str = "mezcla-concat-tokenizer/1";

/// Python's `str.strip()` (Unicode whitespace plus the ASCII separators U+001C..U+001F).
fn py_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

/// A stack of per-language SentencePiece models with offset ids.
#[derive(Debug, Clone)]
pub struct ConcatTokenizer {
    langs: Vec<String>,
    models: Vec<SentencePieceModel>,
    offsets: Vec<u32>,
    vocab_size: u32,
}

impl ConcatTokenizer {
    /// Builds the tokenizer from an ordered list of `(language, model)`; offsets are cumulative vocab sizes.
    pub fn new(parts: Vec<(String, SentencePieceModel)>) -> Result<Self> {
        if parts.is_empty() {
            return Err(Error::BadConfig {
                path: "<tokenizer>".into(),
                reason: "no languages given".into(),
            });
        }
        let mut langs = Vec::new();
        let mut models = Vec::new();
        let mut offsets = Vec::new();
        let mut offset: u64 = 0;
        for (lang, model) in parts {
            if lang.is_empty() || langs.contains(&lang) {
                return Err(Error::BadConfig {
                    path: "<tokenizer>".into(),
                    reason: format!("language {lang:?} is empty or given twice"),
                });
            }
            offsets.push(offset as u32);
            offset += model.vocab_size() as u64;
            langs.push(lang);
            models.push(model);
        }
        if offset >= u64::from(u32::MAX) {
            return Err(Error::BadConfig {
                path: "<tokenizer>".into(),
                reason: "vocabulary too large".into(),
            });
        }
        Ok(ConcatTokenizer {
            langs,
            models,
            offsets,
            vocab_size: offset as u32,
        })
    }

    /// Loads a tokenizer from a path: a concatenated folder (with `concat_tokenizer.json`), a single `.model` file
    /// (one language, named after the file or, for `tokenizer.model`, its folder), a folder holding
    /// `tokenizer.model`, or a NeMo config (`.yaml`/`.json`) with `type: agg` and a `langs` mapping.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.is_dir() {
            if path.join(CONCAT_CONFIG_FILE).is_file() {
                return Self::load_folder(path);
            }
            let single = path.join("tokenizer.model");
            if single.is_file() {
                return Self::load_single(&single);
            }
            return Err(Error::BadConfig {
                path: path.display().to_string(),
                reason: format!("folder has neither {CONCAT_CONFIG_FILE} nor tokenizer.model"),
            });
        }
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        match ext.as_str() {
            "yaml" | "yml" | "json" => Self::from_nemo_config(path),
            _ => Self::load_single(path),
        }
    }

    fn load_single(path: &Path) -> Result<Self> {
        let model = SentencePieceModel::load(path)?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("default");
        let lang = if stem == "tokenizer" {
            path.parent()
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str())
                .unwrap_or("default")
                .to_string()
        } else {
            stem.to_string()
        };
        Self::new(vec![(lang, model)])
    }

    fn load_folder(dir: &Path) -> Result<Self> {
        let cfg_path = dir.join(CONCAT_CONFIG_FILE);
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
        Self::from_saved_files(&cfg_path.display().to_string(), &text, |name| {
            let path = dir.join(name);
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            SentencePieceModel::from_bytes(&bytes, &path.display().to_string())
        })
    }

    /// Builds a tokenizer from the files of a saved folder held in memory (an embedded model, say): `config` is
    /// the text of `concat_tokenizer.json` (`config_name` names it in errors) and `model_bytes` returns the bytes
    /// of each `.model` file it lists.
    pub fn from_memory<'a>(
        config_name: &str,
        config: &str,
        model_bytes: impl Fn(&str) -> Option<&'a [u8]>,
    ) -> Result<Self> {
        Self::from_saved_files(config_name, config, |name| {
            let bytes = model_bytes(name).ok_or_else(|| Error::BadConfig {
                path: config_name.to_string(),
                reason: format!("lists {name:?}, which is not there"),
            })?;
            SentencePieceModel::from_bytes(bytes, name)
        })
    }

    fn from_saved_files(
        cfg_name: &str,
        text: &str,
        load_model: impl Fn(&str) -> Result<SentencePieceModel>,
    ) -> Result<Self> {
        let bad = |reason: String| Error::BadConfig {
            path: cfg_name.to_string(),
            reason,
        };
        let cfg: ConcatConfig = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        if cfg.format != FORMAT {
            return Err(bad(format!(
                "unsupported format {:?} (expected {FORMAT:?})",
                cfg.format
            )));
        }
        let mut parts = Vec::new();
        for e in &cfg.languages {
            parts.push((e.lang.clone(), load_model(&e.model)?));
        }
        let tok = Self::new(parts).map_err(|e| bad(e.to_string()))?;
        for (i, e) in cfg.languages.iter().enumerate() {
            if e.offset.is_some_and(|o| o != tok.offsets[i] as usize)
                || e.vocab_size
                    .is_some_and(|v| v != tok.models[i].vocab_size())
            {
                return Err(bad(format!(
                    "model of language {:?} does not match the recorded vocabulary",
                    e.lang
                )));
            }
        }
        Ok(tok)
    }

    /// Loads NeMo's aggregate tokenizer config: a model config with a `tokenizer` section, or the section itself
    /// (`type: agg`, `langs: {en: {dir: ..., type: bpe[, model_path: ...]}, ...}`); relative paths are resolved
    /// against the config's folder, and `nemo:` artifact prefixes are dropped.
    pub fn from_nemo_config(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bad = |reason: String| Error::BadConfig {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let root: serde_yaml::Value =
            serde_yaml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let section = match root.get("tokenizer") {
            Some(t) => t,
            None => match root.get("model").and_then(|m| m.get("tokenizer")) {
                Some(t) => t,
                None => &root,
            },
        };
        let kind = section.get("type").and_then(|t| t.as_str()).unwrap_or("");
        if !kind.eq_ignore_ascii_case("agg") {
            return Err(bad(format!("tokenizer type is {kind:?}, expected \"agg\"")));
        }
        let langs = section
            .get("langs")
            .and_then(|l| l.as_mapping())
            .ok_or_else(|| bad("no `langs` mapping in the agg tokenizer config".into()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &str| -> PathBuf {
            let p = p.strip_prefix("nemo:").unwrap_or(p);
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let mut parts = Vec::new();
        for (k, v) in langs {
            let lang = match k {
                serde_yaml::Value::String(s) => s.clone(),
                other => serde_yaml::to_string(other)
                    .map_err(|e| bad(e.to_string()))?
                    .trim()
                    .to_string(),
            };
            let t = v.get("type").and_then(|t| t.as_str()).unwrap_or("bpe");
            if !t.eq_ignore_ascii_case("bpe") {
                return Err(bad(format!("language {lang:?} has tokenizer type {t:?}; only SentencePiece (bpe) is supported")));
            }
            let model_path = match (
                v.get("model_path").and_then(|m| m.as_str()),
                v.get("dir").and_then(|d| d.as_str()),
            ) {
                (Some(m), _) => resolve(m),
                (None, Some(d)) => resolve(d).join("tokenizer.model"),
                (None, None) => {
                    return Err(bad(format!(
                        "language {lang:?} has neither `dir` nor `model_path`"
                    )))
                }
            };
            parts.push((lang, SentencePieceModel::load(&model_path)?));
        }
        Self::new(parts).map_err(|e| bad(e.to_string()))
    }

    /// Saves the tokenizer as a folder: `NN_<lang>.model` per language, each written atomically, then
    /// `concat_tokenizer.json` (also atomically) last, so a folder is complete once its config exists; loading
    /// checks each model against the offsets and sizes the config records.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut entries = Vec::new();
        for (i, (lang, model)) in self.langs.iter().zip(&self.models).enumerate() {
            let safe: String = lang
                .chars()
                .map(|c| {
                    if c.is_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let file = format!("{i:02}_{safe}.model");
            model.save(dir.join(&file))?;
            entries.push(ConcatEntry {
                lang: lang.clone(),
                model: file,
                offset: Some(self.offsets[i] as usize),
                vocab_size: Some(model.vocab_size()),
            });
        }
        let cfg = ConcatConfig {
            format: FORMAT.into(),
            languages: entries,
            vocab_size: Some(self.vocab_size as usize),
            blank_id: Some(self.blank_id() as usize),
        };
        let json = serde_json::to_string_pretty(&cfg).expect("config serializes") + "\n";
        crate::write_atomic(&dir.join(CONCAT_CONFIG_FILE), json.as_bytes())
    }

    /// Total vocabulary size V (sum of the sub-vocabularies), without the blank.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size as usize
    }

    /// The CTC/RNN-T blank id: V, shared by all languages.
    pub fn blank_id(&self) -> u32 {
        self.vocab_size
    }

    /// Languages in id order.
    pub fn langs(&self) -> &[String] {
        &self.langs
    }

    /// The sub-models in language order.
    pub fn models(&self) -> &[SentencePieceModel] {
        &self.models
    }

    /// Index of a language.
    pub fn lang_index(&self, lang: &str) -> Result<usize> {
        self.langs
            .iter()
            .position(|l| l == lang)
            .ok_or_else(|| Error::UnknownLanguage {
                lang: lang.to_string(),
                known: self.langs.join(", "),
            })
    }

    /// First id of a language's range.
    pub fn offset(&self, lang: &str) -> Result<u32> {
        Ok(self.offsets[self.lang_index(lang)?])
    }

    /// The language index and local id that own a global id.
    pub fn owner(&self, id: u32) -> Result<(usize, u32)> {
        if id >= self.vocab_size {
            return Err(Error::IdOutOfRange {
                id: i64::from(id),
                vocab_size: self.vocab_size as usize,
            });
        }
        let i = self.offsets.partition_point(|&o| o <= id) - 1;
        Ok((i, id - self.offsets[i]))
    }

    /// Encodes text in one language (NeMo's `text_to_ids`).
    pub fn encode(&self, text: &str, lang: &str) -> Result<Vec<u32>> {
        let i = self.lang_index(lang)?;
        Ok(self.models[i]
            .encode_ids(text)
            .into_iter()
            .map(|id| id + self.offsets[i])
            .collect())
    }

    /// Encodes text in one language, returning (global id, piece) pairs.
    pub fn encode_pieces(&self, text: &str, lang: &str) -> Result<Vec<(u32, String)>> {
        let i = self.lang_index(lang)?;
        Ok(self.models[i]
            .encode(text)
            .into_iter()
            .map(|t| (t.id + self.offsets[i], t.piece))
            .collect())
    }

    /// Encodes code-switched segments: each separately in its language, concatenated (as NeMo's datasets do).
    pub fn encode_segments(&self, segments: &[Segment]) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        for s in segments {
            ids.extend(self.encode(&s.text, &s.lang)?);
        }
        Ok(ids)
    }

    /// The piece of a global id.
    pub fn id_to_piece(&self, id: u32) -> Result<&str> {
        let (i, local) = self.owner(id)?;
        Ok(self.models[i].id_to_piece(local).expect("owner range"))
    }

    /// The pieces of global ids (NeMo's `ids_to_tokens`).
    pub fn ids_to_tokens(&self, ids: &[u32]) -> Result<Vec<&str>> {
        ids.iter().map(|&id| self.id_to_piece(id)).collect()
    }

    /// The language of a global id.
    pub fn id_to_lang(&self, id: u32) -> Result<&str> {
        Ok(&self.langs[self.owner(id)?.0])
    }

    /// The language of every id.
    pub fn ids_to_langs(&self, ids: &[u32]) -> Result<Vec<&str>> {
        ids.iter().map(|&id| self.id_to_lang(id)).collect()
    }

    /// NeMo's `ids_to_text`: pieces concatenated, `▁` replaced by spaces, not stripped.
    pub fn ids_to_text(&self, ids: &[u32]) -> Result<String> {
        let mut s = String::new();
        for &id in ids {
            s.push_str(self.id_to_piece(id)?);
        }
        Ok(s.replace(SPACE_SYMBOL, " "))
    }

    /// SentencePiece decoding: each run of same-language ids decoded by its model (byte pieces become
    /// characters, control pieces vanish); only the text's start loses the whitespace of its leading pieces, so
    /// a run that starts a word begins with its space.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let mut out = String::new();
        let mut start = 0;
        while start < ids.len() {
            let (lang, _) = self.owner(ids[start])?;
            let mut end = start + 1;
            while end < ids.len() && self.owner(ids[end])?.0 == lang {
                end += 1;
            }
            let local: Vec<u32> = ids[start..end]
                .iter()
                .map(|&id| id - self.offsets[lang])
                .collect();
            // After the first language's run, a run keeps its leading whitespace, as NeMo's ids_to_text (which
            // joins the pieces) does: "▁▁an" after other text is "  an".
            let text = if out.is_empty() {
                self.models[lang].decode(&local)?
            } else {
                self.models[lang].decode_continuation(&local)?
            };
            out.push_str(&text);
            start = end;
        }
        Ok(out)
    }

    /// NeMo's `ids_to_text_and_langs`: per token, the stripped piece text and its language.
    pub fn ids_to_text_and_langs(&self, ids: &[u32]) -> Result<Vec<TextAndLang>> {
        ids.iter()
            .map(|&id| {
                let piece = self.id_to_piece(id)?.replace(SPACE_SYMBOL, " ");
                Ok(TextAndLang {
                    char: py_strip(&piece).to_string(),
                    lang: self.id_to_lang(id)?.to_string(),
                })
            })
            .collect()
    }

    /// NeMo's `ids_to_words_and_langs`: a word starts at each piece beginning with `▁`; its language is the
    /// majority language of its tokens.
    pub fn ids_to_words_and_langs(&self, ids: &[u32]) -> Result<Vec<WordAndLang>> {
        let mut out = Vec::new();
        let mut word: Vec<u32> = Vec::new();
        for &id in ids {
            if self.id_to_piece(id)?.starts_with(SPACE_SYMBOL) {
                if !word.is_empty() {
                    out.push(self.word(&word)?);
                }
                word.clear();
            }
            word.push(id);
        }
        if !word.is_empty() {
            out.push(self.word(&word)?);
        }
        Ok(out)
    }

    fn word(&self, ids: &[u32]) -> Result<WordAndLang> {
        Ok(WordAndLang {
            word: py_strip(&self.ids_to_text(ids)?).to_string(),
            lang: self.ids_to_lang(ids)?.to_string(),
        })
    }

    /// Utterance (or word) language by majority vote; on a tie the language whose first token came first wins;
    /// empty input gives `""` (NeMo's `ids_to_lang`).
    pub fn ids_to_lang(&self, ids: &[u32]) -> Result<&str> {
        let mut counts: Vec<(usize, usize)> = Vec::new(); // (lang index, count) in order of first appearance
        for &id in ids {
            let (l, _) = self.owner(id)?;
            match counts.iter_mut().find(|(i, _)| *i == l) {
                Some(c) => c.1 += 1,
                None => counts.push((l, 1)),
            }
        }
        let mut best: Option<(usize, usize)> = None;
        for &(l, c) in &counts {
            if best.is_none_or(|(_, bc)| c > bc) {
                best = Some((l, c));
            }
        }
        Ok(best.map_or("", |(l, _)| self.langs[l].as_str()))
    }
}
