//! End-to-end tests of `mezcla tokenizer`: train, concat, encode, decode, info, --json, stdin and errors.

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;

use mezcla_tests::{fails, mezcla, ok, root};
use serde_json::Value;

fn fx(name: &str) -> String {
    root()
        .join("tokenizer/tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

fn with_stdin(args: &[&str], input: &str) -> String {
    let mut child = mezcla()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "mezcla {args:?} failed");
    String::from_utf8(out.stdout).unwrap()
}

const EN: &[&str] = &[
    "the cat sat on the mat",
    "the dog ate my homework",
    "a quick brown fox jumps over the lazy dog",
    "we will meet tomorrow at the station",
    "this is a small english corpus for testing",
];
const ES: &[&str] = &[
    "el gato se sentó en la alfombra",
    "mañana nos vemos en la estación",
    "qué tal estás amigo mío",
    "la comida española es muy rica",
    "el niño come una manzana",
];

#[test]
fn train_concat_encode_decode_info() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n).display().to_string();
    let en: String = EN
        .iter()
        .cycle()
        .take(200)
        .map(|s| format!("{s}\n"))
        .collect();
    let es: String = ES
        .iter()
        .cycle()
        .take(200)
        .map(|s| format!("{s}\n"))
        .collect();
    std::fs::write(d("en.txt"), en).unwrap();
    std::fs::write(d("es.txt"), es).unwrap();

    // One model from one file.
    let out = ok(&[
        "tokenizer",
        "train",
        "--input",
        &d("en.txt"),
        "--vocab-size",
        "50",
        "--out",
        &d("en.model"),
        "--json",
    ]);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["single_model"], true);
    assert_eq!(v["languages"][0]["vocab_size"], 50);
    // BPE per language into a concatenated folder.
    let out = ok(&[
        "tokenizer",
        "train",
        "--input",
        &format!("es={}", d("es.txt")),
        "--input",
        &format!("en={}", d("en.txt")),
        "--model-type",
        "bpe",
        "--vocab-size",
        "70",
        "--vocab-size",
        "en=80",
        "--out",
        &d("agg_bpe"),
    ]);
    assert!(out.contains("wrote"), "{out}");
    let info: Value = serde_json::from_str(
        ok(&["tokenizer", "info", "--tokenizer", &d("agg_bpe"), "--json"]).trim(),
    )
    .unwrap();
    assert_eq!(info["vocab_size"], 150);
    assert_eq!(info["blank_id"], 150);
    assert_eq!(info["languages"][0]["lang"], "es");
    assert_eq!(info["languages"][1]["offset"], 70);
    assert_eq!(info["languages"][1]["model_type"], "bpe");

    // Concat two single models; encode and decode through the folder.
    ok(&[
        "tokenizer",
        "concat",
        &format!("en={}", d("en.model")),
        &format!("es={}", fx("es_unigram_1000_bf.model")),
        "--out",
        &d("agg"),
    ]);
    let enc: Value = serde_json::from_str(
        ok(&[
            "tokenizer",
            "encode",
            "--tokenizer",
            &d("agg"),
            "--lang",
            "es",
            "--json",
            "qué tal amigo",
        ])
        .trim(),
    )
    .unwrap();
    let ids: Vec<u64> = enc["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    assert!(ids.iter().all(|&i| (50..1050).contains(&i)));
    assert!(enc["langs"].as_array().unwrap().iter().all(|l| l == "es"));
    assert_eq!(enc["pieces"].as_array().unwrap().len(), ids.len());
    let ids_s: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    let dec: Value = serde_json::from_str(
        ok(&[
            "tokenizer",
            "decode",
            "--tokenizer",
            &d("agg"),
            "--json",
            &ids_s.join(" "),
        ])
        .trim(),
    )
    .unwrap();
    assert_eq!(dec["text"], "qué tal amigo");
    assert_eq!(dec["lang"], "es");
    assert_eq!(dec["words"][2]["word"], "amigo");

    // Segments: each encoded in its language.
    let segs = r#"[{"str":"the cat","lang":"en"},{"str":"come una manzana","lang":"es"}]"#;
    let enc: Value = serde_json::from_str(
        ok(&[
            "tokenizer",
            "encode",
            "--tokenizer",
            &d("agg"),
            "--segments",
            "--json",
            segs,
        ])
        .trim(),
    )
    .unwrap();
    let langs: Vec<&str> = enc["langs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(langs.first(), Some(&"en"));
    assert_eq!(langs.last(), Some(&"es"));
    let ids: Vec<String> = enc["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.to_string())
        .collect();
    let plain = ok(&[
        "tokenizer",
        "decode",
        "--tokenizer",
        &d("agg"),
        &ids.join(","),
    ]);
    assert_eq!(
        plain.trim_end(),
        "the cat come una manzana\tes\tthe[en] cat[en] come[es] una[es] manzana[es]"
    );

    // stdin: one JSON object per line, for encode and decode.
    let out = with_stdin(
        &[
            "tokenizer",
            "encode",
            "--tokenizer",
            &d("agg"),
            "--lang",
            "en",
            "--json",
        ],
        "the cat\nthe dog ate\n",
    );
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2);
    let lists: String = lines.iter().map(|l| format!("{}\n", l["ids"])).collect();
    let out = with_stdin(
        &["tokenizer", "decode", "--tokenizer", &d("agg"), "--json"],
        &lists,
    );
    let texts: Vec<String> = json_lines(&out)
        .iter()
        .map(|l| l["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(texts, ["the cat", "the dog ate"]);
    // Plain encode prints ids.
    let out = with_stdin(
        &[
            "tokenizer",
            "encode",
            "--tokenizer",
            &fx("en_unigram_4000.model"),
        ],
        "Hello world\n",
    );
    assert_eq!(out.trim(), "1405 117 180");
    // A bare .model takes its language from --lang.
    let v: Value = serde_json::from_str(
        ok(&[
            "tokenizer",
            "encode",
            "--tokenizer",
            &fx("en_unigram_4000.model"),
            "--lang",
            "en",
            "--json",
            "Hi",
        ])
        .trim(),
    )
    .unwrap();
    assert_eq!(v["langs"][0], "en");
}

#[test]
fn train_from_manifest_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = String::new();
    for i in 0..150 {
        let seg = serde_json::json!([{"str": EN[i % EN.len()], "lang": "en"}, {"str": ES[(i * 3) % ES.len()], "lang": "es"}]);
        lines.push_str(&format!(
            "{}\n",
            serde_json::json!({"audio_filepath": format!("{i}.wav"), "duration": 1.0, "text": seg})
        ));
    }
    lines.push_str(&format!(
        "{}\n",
        serde_json::json!({"audio_filepath": "x.wav", "text": "hola otra vez", "lang": "es"})
    ));
    let m = dir.path().join("m.json");
    std::fs::write(&m, &lines).unwrap();
    let out_dir = dir.path().join("tok");
    let out = ok(&[
        "tokenizer",
        "train",
        "--manifest",
        m.to_str().unwrap(),
        "--vocab-size",
        "48",
        "--out",
        out_dir.to_str().unwrap(),
        "--json",
    ]);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["languages"][0]["lang"], "en");
    assert_eq!(v["languages"][1]["lang"], "es");
    assert_eq!(v["languages"][1]["sentences"], 151);
    let info: Value = serde_json::from_str(
        ok(&[
            "tokenizer",
            "info",
            "--tokenizer",
            out_dir.to_str().unwrap(),
            "--json",
        ])
        .trim(),
    )
    .unwrap();
    assert_eq!(info["blank_id"], 96);

    // A plain-text line without `lang` is an error naming the line.
    std::fs::write(
        &m,
        format!("{lines}{{\"audio_filepath\": \"y.wav\", \"text\": \"no language\"}}\n"),
    )
    .unwrap();
    let e = fails(&[
        "tokenizer",
        "train",
        "--manifest",
        m.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(e.contains("m.json:152") && e.contains("lang"), "{e}");
}

#[test]
fn errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| -> PathBuf { dir.path().join(n) };
    let agg = p("agg");
    ok(&[
        "tokenizer",
        "concat",
        &format!("en={}", fx("en_unigram_4000.model")),
        &format!("hi={}", fx("hi_unigram_250.model")),
        "--out",
        agg.to_str().unwrap(),
    ]);
    let e = fails(&[
        "tokenizer",
        "encode",
        "--tokenizer",
        agg.to_str().unwrap(),
        "--lang",
        "fr",
        "bonjour",
    ]);
    assert!(
        e.contains("unknown language \"fr\"") && e.contains("en, hi"),
        "{e}"
    );
    let e = fails(&[
        "tokenizer",
        "encode",
        "--tokenizer",
        agg.to_str().unwrap(),
        "hello",
    ]);
    assert!(e.contains("--lang is required"), "{e}");
    let e = fails(&[
        "tokenizer",
        "info",
        "--tokenizer",
        p("missing.model").to_str().unwrap(),
    ]);
    assert!(e.contains("missing.model"), "{e}");
    let bytes = std::fs::read(fx("en_unigram_4000.model")).unwrap();
    std::fs::write(p("trunc.model"), &bytes[..5000]).unwrap();
    let e = fails(&[
        "tokenizer",
        "info",
        "--tokenizer",
        p("trunc.model").to_str().unwrap(),
    ]);
    assert!(
        e.contains("trunc.model: not a valid SentencePiece model"),
        "{e}"
    );
    std::fs::write(p("wrong.model"), [0x08u8, 0x01]).unwrap();
    let e = fails(&[
        "tokenizer",
        "encode",
        "--tokenizer",
        p("wrong.model").to_str().unwrap(),
        "x",
    ]);
    assert!(e.contains("wrong.model") && e.contains("wire type"), "{e}");
    std::fs::write(p("empty.txt"), "\n\n").unwrap();
    let e = fails(&[
        "tokenizer",
        "train",
        "--input",
        p("empty.txt").to_str().unwrap(),
        "--out",
        p("e.model").to_str().unwrap(),
    ]);
    assert!(e.contains("empty.txt") && e.contains("empty"), "{e}");
    assert!(!p("e.model").exists());
    let e = fails(&[
        "tokenizer",
        "decode",
        "--tokenizer",
        agg.to_str().unwrap(),
        "4250",
    ]);
    assert!(e.contains("blank"), "{e}");
    let e = fails(&[
        "tokenizer",
        "decode",
        "--tokenizer",
        agg.to_str().unwrap(),
        "99999",
    ]);
    assert!(e.contains("out of range"), "{e}");
    let e = fails(&[
        "tokenizer",
        "decode",
        "--tokenizer",
        agg.to_str().unwrap(),
        "1 x 2",
    ]);
    assert!(e.contains("not an id"), "{e}");
}

#[test]
fn nemo_agg_config_as_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    for (lang, name) in [("en", "en_unigram_4000"), ("es", "es_unigram_1000_bf")] {
        let d = dir.path().join(lang);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(fx(&format!("{name}.model")), d.join("tokenizer.model")).unwrap();
    }
    let cfg = dir.path().join("model_config.yaml");
    std::fs::write(&cfg, "tokenizer:\n  type: agg\n  langs:\n    en: {dir: en, type: bpe}\n    es: {dir: es, type: bpe}\n")
        .unwrap();
    let info: Value = serde_json::from_str(
        ok(&[
            "tokenizer",
            "info",
            "--tokenizer",
            cfg.to_str().unwrap(),
            "--json",
        ])
        .trim(),
    )
    .unwrap();
    assert_eq!(info["vocab_size"], 5000);
    assert_eq!(info["languages"][1]["lang"], "es");
    assert_eq!(info["languages"][1]["offset"], 4000);
    let out = ok(&[
        "tokenizer",
        "encode",
        "--tokenizer",
        cfg.to_str().unwrap(),
        "--lang",
        "es",
        "qué tal",
    ]);
    assert_eq!(out.trim(), "4663 4749");
}
