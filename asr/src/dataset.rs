//! Labelled utterances from NeMo manifests: audio path, duration, language-tagged reference and token ids.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use mezcla_datagen::manifest::{Manifest, Text};
use mezcla_tokenizer::{ConcatTokenizer, Segment};

/// One labelled utterance.
#[derive(Debug, Clone)]
pub struct Utterance {
    pub audio: PathBuf,
    pub duration: f64,
    /// Reference as `(text, lang)` segments.
    pub segments: Vec<(String, String)>,
    /// Token ids of the reference (each segment encoded with its language's model, then concatenated).
    pub ids: Vec<u32>,
    /// `file:line` of the manifest entry, for messages.
    pub origin: String,
}

impl Utterance {
    /// The reference language of the utterance: majority of its tokens (NeMo's rule).
    pub fn language<'a>(&self, tok: &'a ConcatTokenizer) -> Result<&'a str> {
        Ok(tok.ids_to_lang(&self.ids)?)
    }

    /// Reference tokens with their languages.
    pub fn tagged_ids<'a>(&self, tok: &'a ConcatTokenizer) -> Result<Vec<(u32, &'a str)>> {
        self.ids
            .iter()
            .map(|&id| Ok((id, tok.id_to_lang(id)?)))
            .collect()
    }
}

/// Reads a manifest whose text is segments, or a string with `lang` (or a string alone when the tokenizer
/// has one language). Each entry needs `duration`; errors name the file and line.
pub fn load(path: &Path, tok: &ConcatTokenizer) -> Result<Vec<Utterance>> {
    let m = Manifest::read(path)?;
    let mut out = Vec::with_capacity(m.entries.len());
    for (i, e) in m.entries.iter().enumerate() {
        let origin = format!("{}:{}", path.display(), m.lines[i]);
        let Some(duration) = e.duration else {
            return Err(m.error_at(i, "missing field `duration`").into());
        };
        let text = e
            .text
            .as_ref()
            .ok_or_else(|| m.error_at(i, "missing field `text`"))?;
        let lang = e.lang.clone().or_else(|| match tok.langs() {
            [only] => Some(only.clone()),
            _ => None,
        });
        let segments: Vec<(String, String)> = match text {
            Text::Segments(s) => s.iter().map(|s| (s.str.clone(), s.lang.clone())).collect(),
            Text::Plain(s) => match lang {
                Some(l) => vec![(s.clone(), l)],
                None => {
                    return Err(m
                        .error_at(
                            i,
                            "the text has no language: add a `lang` field or give `text` as {\"str\", \"lang\"} segments",
                        )
                        .into())
                }
            },
        };
        let segs: Vec<Segment> = segments
            .iter()
            .map(|(t, l)| Segment {
                text: t.clone(),
                lang: l.clone(),
            })
            .collect();
        let ids = tok
            .encode_segments(&segs)
            .map_err(|e| m.error_at(i, e.to_string()))?;
        out.push(Utterance {
            audio: m.audio_path(i),
            duration,
            segments,
            ids,
            origin,
        });
    }
    if out.is_empty() {
        bail!("{}: the manifest has no entries", path.display());
    }
    Ok(out)
}
