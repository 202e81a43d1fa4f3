//! Helpers shared by the tokenizer's integration tests: fixture paths and gzip readers.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn gz_lines(name: &str) -> Vec<String> {
    let f = std::fs::File::open(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    BufReader::new(flate2::read::GzDecoder::new(f))
        .lines()
        .map(|l| l.expect("utf-8 line"))
        .collect()
}

pub fn gz_jsonl(name: &str) -> Vec<serde_json::Value> {
    gz_lines(name)
        .iter()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

pub const MODELS: &[&str] = &[
    "en_unigram_4000",
    "en_bpe_1000_bf",
    "en_unigram_300_identity",
    "es_unigram_1000_bf",
    "es_bpe_500_cf",
    "hi_unigram_64_identity",
    "hi_bpe_400_bf_identity",
    "hi_unigram_250",
    "es_char_identity",
    "en_word_2000_identity",
];
