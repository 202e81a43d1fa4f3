//! The concatenated tokenizer: offsets, blank, LID with NeMo's tie rule, save/load, NeMo config, N languages.

mod common;

use common::fixture;
use mezcla_tokenizer::{ConcatTokenizer, Segment, SentencePieceModel};

fn model(name: &str) -> SentencePieceModel {
    SentencePieceModel::load(fixture(&format!("{name}.model"))).unwrap()
}

fn three() -> ConcatTokenizer {
    ConcatTokenizer::new(vec![
        ("en".into(), model("en_unigram_4000")),
        ("es".into(), model("es_unigram_1000_bf")),
        ("hi".into(), model("hi_unigram_250")),
    ])
    .unwrap()
}

#[test]
fn offsets_and_blank() {
    let t = three();
    assert_eq!(t.langs(), ["en", "es", "hi"]);
    assert_eq!(t.offset("en").unwrap(), 0);
    assert_eq!(t.offset("es").unwrap(), 4000);
    assert_eq!(t.offset("hi").unwrap(), 5000);
    assert_eq!(t.vocab_size(), 5250);
    assert_eq!(t.blank_id(), 5250);
    assert_eq!(t.id_to_lang(3999).unwrap(), "en");
    assert_eq!(t.id_to_lang(4000).unwrap(), "es");
    assert_eq!(t.id_to_lang(5249).unwrap(), "hi");
    assert!(t.id_to_lang(5250).is_err(), "the blank has no language");
    assert_eq!(t.id_to_piece(4000).unwrap(), "<unk>");
    let es = t.encode("hola amigo", "es").unwrap();
    let local = model("es_unigram_1000_bf").encode_ids("hola amigo");
    assert_eq!(es, local.iter().map(|i| i + 4000).collect::<Vec<_>>());
    let e = t.encode("x", "fr").unwrap_err().to_string();
    assert!(e.contains("unknown language \"fr\""), "{e}");
}

#[test]
fn lid_majority_and_ties() {
    let t = three();
    // en=10, es=4010, hi=5010 (any ids in each range)
    assert_eq!(t.ids_to_lang(&[]).unwrap(), "");
    assert_eq!(t.ids_to_lang(&[4010, 10, 10]).unwrap(), "en");
    // tie: the language whose first token came first wins
    assert_eq!(t.ids_to_lang(&[4010, 10, 10, 4010]).unwrap(), "es");
    assert_eq!(t.ids_to_lang(&[10, 4010, 4010, 10]).unwrap(), "en");
    assert_eq!(t.ids_to_lang(&[5010, 4010, 10]).unwrap(), "hi");
    assert_eq!(
        t.ids_to_langs(&[10, 4010, 5010]).unwrap(),
        ["en", "es", "hi"]
    );
}

#[test]
fn segments_words_and_decode() {
    let t = three();
    let segs = vec![
        Segment {
            text: "I really like".into(),
            lang: "en".into(),
        },
        Segment {
            text: "la comida española".into(),
            lang: "es".into(),
        },
        Segment {
            text: "बहुत अच्छा".into(),
            lang: "hi".into(),
        },
    ];
    let ids = t.encode_segments(&segs).unwrap();
    let words = t.ids_to_words_and_langs(&ids).unwrap();
    let got: Vec<(String, String)> = words.into_iter().map(|w| (w.word, w.lang)).collect();
    let want: Vec<(String, String)> = [
        ("I", "en"),
        ("really", "en"),
        ("like", "en"),
        ("la", "es"),
        ("comida", "es"),
        ("española", "es"),
        ("बहुत", "hi"),
        ("अच्छा", "hi"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(got, want);
    assert_eq!(
        t.decode(&ids).unwrap(),
        "I really like la comida española बहुत अच्छा"
    );
    assert_eq!(
        t.ids_to_text(&ids).unwrap(),
        " I really like la comida española बहुत अच्छा"
    );
    let langs = t.ids_to_langs(&ids).unwrap();
    let count = |l: &str| langs.iter().filter(|x| **x == l).count();
    let majority = ["en", "es", "hi"]
        .into_iter()
        .max_by_key(|l| (count(l), std::cmp::Reverse(*l)))
        .unwrap();
    assert_eq!(t.ids_to_lang(&ids).unwrap(), majority);
}

#[test]
fn save_load_single_and_nemo_config() {
    let dir = tempfile::tempdir().unwrap();
    let t = three();
    t.save(dir.path().join("agg")).unwrap();
    let back = ConcatTokenizer::load(dir.path().join("agg")).unwrap();
    assert_eq!(back.langs(), t.langs());
    let ids = t.encode("qué tal", "es").unwrap();
    assert_eq!(back.encode("qué tal", "es").unwrap(), ids);

    // A single .model works as a one-language tokenizer named after the file.
    let single = ConcatTokenizer::load(fixture("en_unigram_4000.model")).unwrap();
    assert_eq!(single.langs(), ["en_unigram_4000"]);
    assert_eq!(single.blank_id(), 4000);

    // NeMo agg config: `dir` with tokenizer.model, and `model_path` with a nemo: prefix, in mapping order.
    for (lang, name) in [("es", "es_unigram_1000_bf"), ("en", "en_unigram_4000")] {
        std::fs::create_dir_all(dir.path().join(format!("tok_{lang}"))).unwrap();
        std::fs::copy(
            fixture(&format!("{name}.model")),
            dir.path().join(format!("tok_{lang}/tokenizer.model")),
        )
        .unwrap();
    }
    std::fs::copy(
        fixture("hi_unigram_250.model"),
        dir.path().join("abc123_tokenizer.model"),
    )
    .unwrap();
    let yaml = "model:\n  tokenizer:\n    type: agg\n    langs:\n      es:\n        dir: tok_es\n        type: bpe\n      \
                en:\n        dir: tok_en\n        type: bpe\n      hi:\n        dir: somewhere\n        type: bpe\n        \
                model_path: nemo:abc123_tokenizer.model\n";
    std::fs::write(dir.path().join("model_config.yaml"), yaml).unwrap();
    let nemo = ConcatTokenizer::load(dir.path().join("model_config.yaml")).unwrap();
    assert_eq!(nemo.langs(), ["es", "en", "hi"]);
    assert_eq!(nemo.offset("en").unwrap(), 1000);
    assert_eq!(nemo.offset("hi").unwrap(), 5000);
    let bad = "tokenizer:\n  type: bpe\n  dir: x\n";
    std::fs::write(dir.path().join("bad.yaml"), bad).unwrap();
    let e = ConcatTokenizer::load(dir.path().join("bad.yaml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected \"agg\""), "{e}");
}

#[test]
fn any_number_of_languages() {
    let names = [
        "en_unigram_300_identity",
        "hi_unigram_64_identity",
        "hi_bpe_400_bf_identity",
        "es_bpe_500_cf",
    ];
    let parts: Vec<(String, SentencePieceModel)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (format!("l{i}"), model(n)))
        .collect();
    let t = ConcatTokenizer::new(parts).unwrap();
    assert_eq!(t.vocab_size(), 300 + 64 + 400 + 500);
    assert_eq!(t.offset("l3").unwrap(), 764);
    let ids = t.encode("hola", "l3").unwrap();
    assert!(ids.iter().all(|&i| (764..1264).contains(&i)));
    assert!(ConcatTokenizer::new(vec![
        ("a".into(), model("hi_unigram_64_identity")),
        ("a".into(), model("hi_unigram_64_identity"))
    ])
    .is_err());
}
