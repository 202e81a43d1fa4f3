//! SentencePiece `.model` files in Rust and the concatenated tokenizer whose ids carry their language.

mod aggregate;
mod error;
mod model;
mod normalizer;
pub mod proto;
pub mod train;
mod trie;

pub use aggregate::{ConcatTokenizer, Segment, TextAndLang, WordAndLang, CONCAT_CONFIG_FILE};
pub use error::{Error, Result};
pub use model::{byte_piece, ModelType, Piece, PieceType, SentencePieceModel, SpecialPiece, Token};
pub use normalizer::{NormalizerSpec, SPACE_SYMBOL};

use std::io::Write;
use std::path::Path;

/// Writes a file atomically: a temporary file in the same folder, then a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}
