//! Transcripts as text with language tags, JSON lines, SRT and WebVTT; and the audio inputs of a command.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::decode::{Transcript, Word};

/// Output formats of `mezcla transcribe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Text with a language tag at each change: `[en] I told her [es] que no quería ir`.
    Text,
    /// One JSON object per file.
    Json,
    /// SubRip subtitles.
    Srt,
    /// WebVTT subtitles.
    Vtt,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Text => "txt",
            Format::Json => "json",
            Format::Srt => "srt",
            Format::Vtt => "vtt",
        }
    }
}

/// The JSON object of one file: `audio_filepath`, `text`, `lang`, `words`, `token_ids`.
pub fn json_line(audio: &str, t: &Transcript) -> serde_json::Value {
    json!({
        "audio_filepath": audio,
        "text": t.text,
        "lang": t.lang,
        "words": t.words,
        "token_ids": t.token_ids(),
    })
}

/// Groups words into subtitle cues of at most `max_seconds` and `max_chars`, breaking at long pauses.
fn cues(words: &[Word], max_seconds: f64, max_chars: usize) -> Vec<&[Word]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=words.len() {
        let split = i == words.len() || {
            let chars: usize = words[start..=i]
                .iter()
                .map(|w| w.word.chars().count() + 1)
                .sum();
            words[i].end - words[start].start > max_seconds
                || chars > max_chars
                || words[i].start - words[i - 1].end > 1.0
        };
        if split {
            out.push(&words[start..i]);
            start = i;
        }
    }
    out.into_iter().filter(|c| !c.is_empty()).collect()
}

fn tagged(words: &[Word]) -> String {
    Transcript {
        text: String::new(),
        lang: String::new(),
        words: words.to_vec(),
        tokens: Vec::new(),
    }
    .tagged_text()
}

fn timestamp(seconds: f64, sep: char) -> String {
    let ms = (seconds.max(0.0) * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}{sep}{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// SubRip subtitles, one cue per phrase, with language tags.
pub fn srt(t: &Transcript) -> String {
    let mut out = String::new();
    for (i, c) in cues(&t.words, 6.0, 60).iter().enumerate() {
        out.push_str(&format!(
            "{}\n{} --> {}\n{}\n\n",
            i + 1,
            timestamp(c[0].start, ','),
            timestamp(c[c.len() - 1].end, ','),
            tagged(c)
        ));
    }
    out
}

/// WebVTT subtitles, one cue per phrase, with language tags.
pub fn vtt(t: &Transcript) -> String {
    let mut out = String::from("WEBVTT\n\n");
    for c in cues(&t.words, 6.0, 60) {
        out.push_str(&format!(
            "{} --> {}\n{}\n\n",
            timestamp(c[0].start, '.'),
            timestamp(c[c.len() - 1].end, '.'),
            tagged(c)
        ));
    }
    out
}

/// One file's output in the given format.
pub fn render(format: Format, audio: &str, t: &Transcript) -> String {
    match format {
        Format::Text => t.tagged_text(),
        Format::Json => json_line(audio, t).to_string(),
        Format::Srt => srt(t),
        Format::Vtt => vtt(t),
    }
}

/// Expands the command's inputs: files as given, folders to their `.wav` files (recursively, sorted).
pub fn expand_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let mut found = Vec::new();
            let mut stack = vec![p.clone()];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d)
                    .with_context(|| format!("{}: cannot list", d.display()))?
                {
                    let path = e?.path();
                    if path.is_dir() {
                        stack.push(path);
                    } else if path
                        .extension()
                        .is_some_and(|x| x.eq_ignore_ascii_case("wav"))
                    {
                        found.push(path);
                    }
                }
            }
            if found.is_empty() {
                bail!("{}: no .wav files in this folder", p.display());
            }
            found.sort();
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Where each file's output goes when `--output` is a folder: `<folder>/<stem>.<ext>`.
pub fn output_file(folder: &Path, audio: &Path, format: Format) -> PathBuf {
    let stem = audio
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "audio".into());
    folder.join(format!("{stem}.{}", format.extension()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(word: &str, lang: &str, start: f64, end: f64) -> Word {
        Word {
            word: word.into(),
            lang: lang.into(),
            start,
            end,
        }
    }

    fn sample() -> Transcript {
        Transcript {
            text: "i told her que no quería ir".into(),
            lang: "en".into(),
            words: vec![
                w("i", "en", 0.1, 0.2),
                w("told", "en", 0.3, 0.6),
                w("her", "en", 0.7, 0.9),
                w("que", "es", 1.0, 1.2),
                w("no", "es", 1.3, 1.4),
                w("quería", "es", 1.5, 1.9),
                w("ir", "es", 4.0, 4.2),
            ],
            tokens: vec![],
        }
    }

    #[test]
    fn text_tags_each_language_run() {
        assert_eq!(
            sample().tagged_text(),
            "[en] i told her [es] que no quería ir"
        );
    }

    #[test]
    fn subtitles_break_at_pauses_and_carry_tags() {
        let s = srt(&sample());
        assert_eq!(
            s,
            "1\n00:00:00,100 --> 00:00:01,900\n[en] i told her [es] que no quería\n\n2\n00:00:04,000 --> 00:00:04,200\n[es] ir\n\n"
        );
        let v = vtt(&sample());
        assert!(
            v.starts_with("WEBVTT\n\n00:00:00.100 --> 00:00:01.900\n"),
            "{v}"
        );
        assert_eq!(timestamp(3725.0456, ','), "01:02:05,046");
    }

    #[test]
    fn json_has_the_documented_fields() {
        let j = json_line("a.wav", &sample());
        let keys: Vec<&String> = j.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["audio_filepath", "text", "lang", "words", "token_ids"]
        );
        assert_eq!(j["words"][3]["lang"], "es");
        assert_eq!(j["words"][3]["start"], 1.0);
    }
}
