//! NeMo JSON-lines manifests: one utterance a line, text as a string or as `{"str", "lang"}` segments.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One language-tagged piece of a transcript, as NeMo's aggregate-tokenizer manifests write it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub str: String,
    pub lang: String,
}

/// A transcript: plain text, or a list of language-tagged segments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Text {
    Plain(String),
    Segments(Vec<Segment>),
}

impl Text {
    /// The transcript as one string (segments joined by single spaces).
    pub fn to_plain(&self) -> String {
        match self {
            Text::Plain(s) => s.clone(),
            Text::Segments(segs) => segs
                .iter()
                .map(|s| s.str.trim())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" "),
        }
    }

    /// The transcript as segments; plain text takes `lang` (the entry's `lang` field) when there is one.
    pub fn to_segments(&self, lang: Option<&str>) -> Option<Vec<Segment>> {
        match self {
            Text::Segments(segs) => Some(segs.clone()),
            Text::Plain(s) => lang.map(|l| {
                vec![Segment {
                    str: s.clone(),
                    lang: l.to_string(),
                }]
            }),
        }
    }
}

/// One manifest line. Fields mezcla does not know are kept in `extra` and written back unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub audio_filepath: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A manifest problem, located by file and (1-based) line.
#[derive(Debug, thiserror::Error)]
pub struct ManifestError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl ManifestError {
    pub fn new(path: &Path, line: Option<usize>, message: impl Into<String>) -> Self {
        Self {
            path: path.to_path_buf(),
            line,
            message: message.into(),
        }
    }
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.path.display(), line, self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

/// A manifest read from disk: its entries, the line each came from, and the folder paths resolve against.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub path: PathBuf,
    pub entries: Vec<Entry>,
    /// 1-based line number of each entry in the file.
    pub lines: Vec<usize>,
}

impl Manifest {
    /// Reads a manifest; blank lines are allowed, anything else that is not a valid entry is an error.
    pub fn read(path: &Path) -> Result<Self, ManifestError> {
        let content = std::fs::read_to_string(path)
            .map_err(|e| ManifestError::new(path, None, format!("cannot read manifest: {e}")))?;
        Self::parse(path, &content)
    }

    /// Parses manifest text; `path` is used for error messages and to resolve relative audio paths.
    pub fn parse(path: &Path, content: &str) -> Result<Self, ManifestError> {
        let mut entries = Vec::new();
        let mut lines = Vec::new();
        for (i, line) in content.lines().enumerate() {
            let line_no = i + 1;
            if line.trim().is_empty() {
                continue;
            }
            let entry =
                parse_entry(line).map_err(|msg| ManifestError::new(path, Some(line_no), msg))?;
            entries.push(entry);
            lines.push(line_no);
        }
        Ok(Self {
            path: path.to_path_buf(),
            entries,
            lines,
        })
    }

    /// The folder that relative `audio_filepath`s are relative to.
    pub fn base_dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// The audio path of entry `i`, resolved against the manifest's folder when relative.
    pub fn audio_path(&self, i: usize) -> PathBuf {
        resolve(&self.base_dir(), &self.entries[i].audio_filepath)
    }

    /// An error about entry `i`, located at its line.
    pub fn error_at(&self, i: usize, message: impl Into<String>) -> ManifestError {
        ManifestError::new(&self.path, Some(self.lines[i]), message)
    }

    /// Writes the entries as JSON lines, atomically.
    pub fn write(path: &Path, entries: &[Entry]) -> std::io::Result<()> {
        let mut out = String::new();
        for e in entries {
            out.push_str(&to_line(e));
            out.push('\n');
        }
        crate::atomic::write_atomic(path, out.as_bytes())
    }
}

/// Resolves `p` against `base` unless it is absolute.
pub fn resolve(base: &Path, p: &str) -> PathBuf {
    let path = Path::new(p);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// One entry as a JSON line (no trailing newline), non-ASCII text kept as UTF-8.
pub fn to_line(entry: &Entry) -> String {
    serde_json::to_string(entry).expect("a manifest entry always serialises")
}

fn parse_entry(line: &str) -> Result<Entry, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(obj) = &value else {
        return Err("expected a JSON object".into());
    };
    match obj.get("audio_filepath") {
        None => return Err("missing field `audio_filepath`".into()),
        Some(Value::String(_)) => {}
        Some(_) => return Err("field `audio_filepath` must be a string".into()),
    }
    match obj.get("duration") {
        None | Some(Value::Number(_)) => {}
        Some(_) => return Err("field `duration` must be a number".into()),
    }
    if let Some(Value::Number(n)) = obj.get("duration") {
        let d = n.as_f64().unwrap_or(f64::NAN);
        if !(d.is_finite() && d >= 0.0) {
            return Err(format!(
                "field `duration` must be a non-negative number, got {n}"
            ));
        }
    }
    match obj.get("text") {
        None | Some(Value::String(_)) => {}
        Some(Value::Array(items)) => {
            for (k, item) in items.iter().enumerate() {
                let ok = matches!(item, Value::Object(o)
                    if matches!(o.get("str"), Some(Value::String(_)))
                        && matches!(o.get("lang"), Some(Value::String(_))));
                if !ok {
                    return Err(format!(
                        "field `text`: segment {k} must be an object with string fields `str` and `lang`"
                    ));
                }
            }
        }
        Some(_) => {
            return Err(
                "field `text` must be a string or a list of {\"str\", \"lang\"} segments".into(),
            )
        }
    }
    match obj.get("lang") {
        None | Some(Value::String(_)) => {}
        Some(_) => return Err("field `lang` must be a string".into()),
    }
    serde_json::from_value(value).map_err(|e| format!("invalid entry: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_text_forms_and_unknown_fields() {
        let content = concat!(
            r#"{"audio_filepath": "a.wav", "duration": 1.5, "text": "hola qué tal", "lang": "es", "speaker": 7, "nested": {"k": [1, 2]}}"#,
            "\n\n",
            r#"{"audio_filepath": "/abs/b.wav", "duration": 2.0, "text": [{"str": "I told her", "lang": "en"}, {"str": "que no", "lang": "es"}]}"#,
            "\n",
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        std::fs::write(&path, content).unwrap();
        let m = Manifest::read(&path).unwrap();
        assert_eq!(m.entries.len(), 2);
        assert_eq!(m.lines, vec![1, 3]);
        assert_eq!(m.entries[0].text, Some(Text::Plain("hola qué tal".into())));
        assert_eq!(m.entries[0].extra["speaker"], 7);
        assert_eq!(m.audio_path(0), dir.path().join("a.wav"));
        assert_eq!(m.audio_path(1), PathBuf::from("/abs/b.wav"));
        let segs = m.entries[1].text.as_ref().unwrap();
        assert_eq!(segs.to_plain(), "I told her que no");
        assert_eq!(
            m.entries[0]
                .text
                .as_ref()
                .unwrap()
                .to_segments(Some("es"))
                .unwrap()[0]
                .lang,
            "es"
        );

        let out = dir.path().join("out.json");
        Manifest::write(&out, &m.entries).unwrap();
        let written = std::fs::read_to_string(&out).unwrap();
        assert!(written.contains("qué"), "UTF-8 is written as is: {written}");
        let back = Manifest::read(&out).unwrap();
        assert_eq!(back.entries, m.entries);
        let first: Value = serde_json::from_str(written.lines().next().unwrap()).unwrap();
        assert_eq!(first["nested"]["k"][1], 2);
    }

    #[test]
    fn errors_name_file_and_line() {
        let path = Path::new("/data/train.json");
        let cases = [
            (
                "{\"audio_filepath\": \"a.wav\"}\n{not json",
                2,
                "invalid JSON",
            ),
            ("[1, 2]", 1, "expected a JSON object"),
            ("{\"duration\": 1}", 1, "missing field `audio_filepath`"),
            (
                "{\"audio_filepath\": 3}",
                1,
                "`audio_filepath` must be a string",
            ),
            (
                "{\"audio_filepath\": \"a\", \"duration\": \"x\"}",
                1,
                "`duration` must be a number",
            ),
            (
                "{\"audio_filepath\": \"a\", \"duration\": -1}",
                1,
                "non-negative",
            ),
            (
                "{\"audio_filepath\": \"a\", \"text\": 5}",
                1,
                "field `text` must be",
            ),
            (
                "\n\n{\"audio_filepath\": \"a\", \"text\": [{\"str\": \"x\"}]}",
                3,
                "segment 0",
            ),
            (
                "{\"audio_filepath\": \"a\", \"lang\": 1}",
                1,
                "`lang` must be a string",
            ),
        ];
        for (content, line, needle) in cases {
            let err = Manifest::parse(path, content).unwrap_err();
            let msg = err.to_string();
            assert_eq!(err.line, Some(line), "{msg}");
            assert!(
                msg.starts_with(&format!("/data/train.json:{line}: ")),
                "{msg}"
            );
            assert!(msg.contains(needle), "{msg} should mention {needle}");
            assert!(!msg.contains('\n'), "one line: {msg}");
        }
    }

    #[test]
    fn missing_file_is_named() {
        let err = Manifest::read(Path::new("/nonexistent/m.json")).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("/nonexistent/m.json: cannot read manifest"));
    }
}
