//! Exact equality with NeMo's AggregateTokenizer on a committed fixture (ids, text, per-token langs, words, LID).

mod common;

use common::{fixture, gz_jsonl};
use mezcla_tokenizer::{ConcatTokenizer, Segment, SentencePieceModel};
use std::collections::HashMap;

fn build(members: &serde_json::Value) -> ConcatTokenizer {
    let parts = members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let lang = m[0].as_str().unwrap().to_string();
            let model =
                SentencePieceModel::load(fixture(&format!("{}.model", m[1].as_str().unwrap())))
                    .unwrap();
            (lang, model)
        })
        .collect();
    ConcatTokenizer::new(parts).unwrap()
}

#[test]
fn aggregate_matches_nemo() {
    let cases = gz_jsonl("nemo_agg.jsonl.gz");
    let mut toks: HashMap<String, ConcatTokenizer> = HashMap::new();
    let mut checked = 0;
    for c in &cases {
        let combo = c["combo"].as_str().unwrap().to_string();
        if let Some(members) = c.get("members") {
            let t = build(members);
            assert_eq!(t.vocab_size() as u64, c["vocab_size"].as_u64().unwrap());
            assert_eq!(t.blank_id() as u64, c["vocab_size"].as_u64().unwrap());
            let offsets: Vec<u64> = t
                .langs()
                .iter()
                .map(|l| u64::from(t.offset(l).unwrap()))
                .collect();
            let want: Vec<u64> = c["offsets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            assert_eq!(offsets, want);
            toks.insert(combo, t);
            continue;
        }
        let t = &toks[&combo];
        let ids: Vec<u32> = c["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        if let Some(segs) = c.get("segments") {
            let segs: Vec<Segment> = serde_json::from_value(segs.clone()).unwrap();
            assert_eq!(t.encode_segments(&segs).unwrap(), ids, "{segs:?}");
        }
        assert_eq!(
            serde_json::to_value(t.ids_to_tokens(&ids).unwrap()).unwrap(),
            c["tokens"]
        );
        assert_eq!(t.ids_to_text(&ids).unwrap(), c["text"].as_str().unwrap());
        assert_eq!(
            serde_json::to_value(t.ids_to_langs(&ids).unwrap()).unwrap(),
            c["langs"]
        );
        assert_eq!(
            t.ids_to_lang(&ids).unwrap(),
            c["lang"].as_str().unwrap(),
            "{ids:?}"
        );
        assert_eq!(
            serde_json::to_value(t.ids_to_text_and_langs(&ids).unwrap()).unwrap(),
            c["text_and_langs"]
        );
        assert_eq!(
            serde_json::to_value(t.ids_to_words_and_langs(&ids).unwrap()).unwrap(),
            c["words_and_langs"]
        );
        checked += 1;
    }
    assert_eq!(toks.len(), 2);
    assert!(checked >= 800, "{checked}");
}
