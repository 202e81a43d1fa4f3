//! The default model built into the binary: the English–Spanish recipe's Conformer-CTC with its word LM.
//!
//! The files are those of `asr/default_model/` (a model folder, see its README.md), compiled in with
//! `include_bytes!`, so `mezcla transcribe file.wav` needs no `--model`, also after `cargo install`.

use std::sync::Arc;

use anyhow::{Context, Result};
use mezcla_tokenizer::ConcatTokenizer;

use crate::lm::NgramLm;
use crate::model::{AsrModel, ModelConfig};

const CONFIG: &str = include_str!("../default_model/config.json");
const WEIGHTS: &[u8] = include_bytes!("../default_model/model.safetensors");
const LM: &[u8] = include_bytes!("../default_model/lm.arpa.gz");
const TOKENIZER_CONFIG: &str = include_str!("../default_model/tokenizer/concat_tokenizer.json");
const TOKENIZER_MODELS: [(&str, &[u8]); 2] = [
    (
        "00_en.model",
        include_bytes!("../default_model/tokenizer/00_en.model"),
    ),
    (
        "01_es.model",
        include_bytes!("../default_model/tokenizer/01_es.model"),
    ),
];

/// Loads the built-in model and its LM.
pub fn load() -> Result<AsrModel> {
    let name = "built-in model";
    let config = ModelConfig::parse(CONFIG, &format!("{name} config.json"))?;
    let tokenizer = ConcatTokenizer::from_memory(
        &format!("{name} tokenizer/concat_tokenizer.json"),
        TOKENIZER_CONFIG,
        |file| {
            TOKENIZER_MODELS
                .iter()
                .find(|(n, _)| *n == file)
                .map(|(_, b)| *b)
        },
    )
    .with_context(|| format!("{name}: cannot load the tokenizer"))?;
    let lm = NgramLm::parse_arpa(
        std::io::BufReader::new(flate2::read::MultiGzDecoder::new(LM)),
        &format!("{name} lm.arpa.gz"),
    )?;
    let mut model = AsrModel::from_weights(
        config,
        tokenizer,
        WEIGHTS,
        &format!("{name} model.safetensors"),
    )?;
    model.lm = Some(Arc::new(lm));
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_model_loads_with_its_two_languages_and_its_lm() {
        let m = load().unwrap();
        assert_eq!(m.tokenizer.langs(), ["en", "es"]);
        assert_eq!(m.config.vocab_size, m.tokenizer.vocab_size());
        assert!(m.config.decoding.is_some() && m.lm.is_some());
        let total = WEIGHTS.len() + LM.len() + CONFIG.len();
        assert!(total <= 25 << 20, "{total} bytes");
    }
}
