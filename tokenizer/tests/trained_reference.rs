//! The reference library's ids on mezcla-trained models (fixture) equal mezcla's; training is deterministic.

mod common;

use common::{gz_jsonl, gz_lines};
use mezcla_tokenizer::train::{train, TrainOptions};
use mezcla_tokenizer::{ModelType, SentencePieceModel};
use std::collections::HashMap;

#[test]
fn reference_library_agrees_on_mezcla_trained_models() {
    let cases = gz_jsonl("trained_reference.jsonl.gz");
    let mut models: HashMap<String, SentencePieceModel> = HashMap::new();
    let mut checked = 0;
    for c in &cases {
        let run = c["run"].as_str().unwrap().to_string();
        if c.get("text").is_none() {
            let corpus = gz_lines(&format!("corpus_{}.txt.gz", c["lang"].as_str().unwrap()));
            let opts = TrainOptions {
                model_type: if c["model_type"] == "bpe" {
                    ModelType::Bpe
                } else {
                    ModelType::Unigram
                },
                vocab_size: c["vocab_size"].as_u64().unwrap() as usize,
                byte_fallback: c["byte_fallback"].as_bool().unwrap(),
                ..TrainOptions::default()
            };
            let model = train(&corpus, &opts).unwrap();
            // Deterministic: a second run writes the same bytes.
            assert_eq!(
                train(&corpus, &opts).unwrap().to_bytes(),
                model.to_bytes(),
                "{run}"
            );
            assert_eq!(model.vocab_size() as u64, c["piece_size"].as_u64().unwrap());
            let sample: Vec<&str> = (0..model.vocab_size())
                .step_by(37)
                .map(|i| model.id_to_piece(i as u32).unwrap())
                .collect();
            assert_eq!(
                serde_json::to_value(sample).unwrap(),
                c["pieces_sample"],
                "{run}"
            );
            models.insert(run, model);
            continue;
        }
        let m = &models[&run];
        let text = c["text"].as_str().unwrap();
        let want: Vec<u32> = c["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(m.encode_ids(text), want, "{run}: {text:?}");
        assert_eq!(
            m.decode(&want).unwrap(),
            c["decoded"].as_str().unwrap(),
            "{run}"
        );
        checked += 1;
    }
    assert_eq!(models.len(), 3);
    assert!(checked >= 1200, "{checked}");
}
