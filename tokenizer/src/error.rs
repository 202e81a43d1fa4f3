//! Error type of the tokenizer crate: every failure names what went wrong in one line.

use std::path::PathBuf;

/// Errors from loading, encoding, decoding, training and saving tokenizers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `.model` file (or its bytes) is not a valid SentencePiece ModelProto.
    #[error("{path}: not a valid SentencePiece model: {reason}")]
    BadModel { path: String, reason: String },
    /// Reading or writing a file failed.
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    /// A language that the tokenizer does not have.
    #[error("unknown language {lang:?} (the tokenizer has: {known})")]
    UnknownLanguage { lang: String, known: String },
    /// An id outside the vocabulary.
    #[error("id {id} is out of range (vocabulary size {vocab_size})")]
    IdOutOfRange { id: i64, vocab_size: usize },
    /// Training could not proceed (empty corpus, vocabulary too large, bad option).
    #[error("training failed: {0}")]
    Train(String),
    /// A concatenated tokenizer folder or NeMo config is malformed.
    #[error("{path}: {reason}")]
    BadConfig { path: String, reason: String },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, err: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            err,
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;
