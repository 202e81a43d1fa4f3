//! Exact equality with the Python `sentencepiece` library on committed fixtures (ids, pieces, decoded text).

mod common;

use common::{fixture, gz_jsonl, MODELS};
use mezcla_tokenizer::SentencePieceModel;

fn ids_of(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn strs_of(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_str().expect("str").to_string())
        .collect()
}

#[test]
fn encode_and_decode_match_reference() {
    let mut total = 0;
    for name in MODELS {
        let model = SentencePieceModel::load(fixture(&format!("{name}.model"))).expect("load");
        let cases = gz_jsonl(&format!("encode_{name}.jsonl.gz"));
        let mut mismatches = Vec::new();
        for c in &cases {
            if let Some(text) = c.get("text") {
                let text = text.as_str().unwrap();
                let toks = model.encode(text);
                let ids: Vec<u32> = toks.iter().map(|t| t.id).collect();
                let pieces: Vec<String> = toks.iter().map(|t| t.piece.clone()).collect();
                let want_ids = ids_of(&c["ids"]);
                assert_eq!(
                    model.encode_ids(text),
                    want_ids,
                    "{name}: encode_ids({text:?})"
                );
                let want_pieces = strs_of(&c["pieces"]);
                if ids != want_ids || pieces != want_pieces {
                    mismatches.push(format!(
                        "{text:?}\n  got  {pieces:?} {ids:?}\n  want {want_pieces:?} {want_ids:?}"
                    ));
                }
                let decoded = model.decode(&want_ids).unwrap();
                if decoded != c["decoded"].as_str().unwrap() {
                    mismatches.push(format!(
                        "decode {want_ids:?}: got {decoded:?} want {:?}",
                        c["decoded"]
                    ));
                }
            } else {
                let ids = ids_of(&c["decode_ids"]);
                let decoded = model.decode(&ids).unwrap();
                if decoded != c["decoded"].as_str().unwrap() {
                    mismatches.push(format!(
                        "decode {ids:?}: got {decoded:?} want {:?}",
                        c["decoded"]
                    ));
                }
                let pieces: Vec<String> = ids
                    .iter()
                    .map(|&i| model.id_to_piece(i).unwrap().to_string())
                    .collect();
                assert_eq!(pieces, strs_of(&c["id_pieces"]), "{name}");
            }
            total += 1;
        }
        assert!(
            mismatches.is_empty(),
            "{name}: {} of {} cases differ:\n{}",
            mismatches.len(),
            cases.len(),
            mismatches
                .iter()
                .take(8)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(cases.len() > 450, "{name}: too few fixture cases");
    }
    assert!(total > 8000);
}

#[test]
fn models_round_trip_through_writer() {
    for name in MODELS {
        let model = SentencePieceModel::load(fixture(&format!("{name}.model"))).unwrap();
        let again = SentencePieceModel::from_bytes(&model.to_bytes(), name).unwrap();
        assert_eq!(model.pieces(), again.pieces());
        assert_eq!(again.to_bytes(), model.to_bytes());
        let text = "Hello wörld — नमस्ते niño ＦＵＬＬ";
        assert_eq!(model.encode(text), again.encode(text));
    }
}

#[test]
fn more_sentences_ids_match_reference() {
    let mut total = 0;
    for name in MODELS {
        let path = format!("extra_ids_{name}.txt.gz");
        if !fixture(&path).exists() {
            continue;
        }
        let model = SentencePieceModel::load(fixture(&format!("{name}.model"))).unwrap();
        let lang = &name[..2];
        let texts = common::gz_lines(&format!("extra_{lang}.txt.gz"));
        let ids = common::gz_lines(&path);
        assert_eq!(texts.len(), ids.len());
        for (t, want) in texts.iter().zip(&ids) {
            let want: Vec<u32> = want
                .split_whitespace()
                .map(|x| x.parse().unwrap())
                .collect();
            assert_eq!(model.encode_ids(t), want, "{name}: {t:?}");
        }
        total += texts.len();
    }
    assert!(total >= 8000, "{total}");
}
