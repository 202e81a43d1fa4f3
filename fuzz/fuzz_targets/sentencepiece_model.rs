//! Fuzz target for the `.model` parser: any bytes give a model or an error; loaded models encode and decode.

// Run: `cd fuzz && mkdir -p corpus/sentencepiece_model && cp ../tokenizer/tests/fixtures/*identity.model
// corpus/sentencepiece_model/ && cargo +nightly fuzz run sentencepiece_model corpus/sentencepiece_model --
// -max_total_time=120 -max_len=8192`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mezcla_tokenizer::SentencePieceModel;

fuzz_target!(|data: &[u8]| {
    if let Ok(model) = SentencePieceModel::from_bytes(data, "fuzz.model") {
        for text in ["Hello wörld", "  नमस्ते  दुनिया ", "ＦＵＬＬ 😀 \u{fffd}", ""] {
            let tokens = model.encode(text);
            let ids: Vec<u32> = tokens.iter().map(|t| t.id).collect();
            assert_eq!(ids, model.encode_ids(text));
            let _ = model.decode(&ids);
        }
        let n = model.vocab_size() as u32;
        let _ = model.decode(&[0, n / 2, n.saturating_sub(1)]);
        let again = SentencePieceModel::from_bytes(&model.to_bytes(), "again").expect("written model re-loads");
        let key = |m: &SentencePieceModel| -> Vec<(String, u32, mezcla_tokenizer::PieceType)> {
            m.pieces().iter().map(|p| (p.piece.clone(), p.score.to_bits(), p.kind)).collect()
        };
        assert_eq!(key(&again), key(&model));
    }
});
