//! Benchmark helper for `bench/tokenizer.py`: timed encoding, id dumps and timed training.

use std::io::Write;
use std::time::Instant;

use mezcla_tokenizer::train::{train, TrainOptions};
use mezcla_tokenizer::{ModelType, SentencePieceModel};

fn die(msg: String) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1);
}

fn lines(path: &str) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| die(format!("{path}: {e}")));
    text.lines().map(str::to_string).collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("encode") if args.len() == 4 => {
            let model = SentencePieceModel::load(&args[2]).unwrap_or_else(|e| die(e.to_string()));
            let lines = lines(&args[3]);
            let t0 = Instant::now();
            let mut tokens = 0usize;
            let mut checksum = 0u64;
            for l in &lines {
                let ids = model.encode_ids(l);
                tokens += ids.len();
                checksum = ids.iter().fold(checksum, |c, &i| {
                    c.wrapping_mul(31).wrapping_add(u64::from(i))
                });
            }
            let secs = t0.elapsed().as_secs_f64();
            println!(
                "{{\"seconds\": {secs}, \"lines\": {}, \"tokens\": {tokens}, \"checksum\": {checksum}}}",
                lines.len()
            );
        }
        Some("ids") if args.len() == 4 => {
            let model = SentencePieceModel::load(&args[2]).unwrap_or_else(|e| die(e.to_string()));
            let out = std::io::stdout();
            let mut out = out.lock();
            for l in lines(&args[3]) {
                let ids: Vec<String> = model.encode_ids(&l).iter().map(|i| i.to_string()).collect();
                writeln!(out, "{}", ids.join(" ")).unwrap_or_else(|e| die(e.to_string()));
            }
        }
        Some("train") if args.len() == 6 || args.len() == 7 => {
            let model_type = match args[2].as_str() {
                "unigram" => ModelType::Unigram,
                "bpe" => ModelType::Bpe,
                t => die(format!("unknown model type {t}")),
            };
            let vocab_size = args[3]
                .parse()
                .unwrap_or_else(|_| die(format!("bad vocab size {}", args[3])));
            let byte_fallback = args.get(6).is_some_and(|a| a == "byte_fallback");
            let corpus = lines(&args[4]);
            let t0 = Instant::now();
            let opts = TrainOptions {
                model_type,
                vocab_size,
                byte_fallback,
                ..TrainOptions::default()
            };
            let model = train(&corpus, &opts).unwrap_or_else(|e| die(e.to_string()));
            let secs = t0.elapsed().as_secs_f64();
            model.save(&args[5]).unwrap_or_else(|e| die(e.to_string()));
            println!(
                "{{\"seconds\": {secs}, \"vocab_size\": {}}}",
                model.vocab_size()
            );
        }
        _ => {
            eprintln!("usage: tokenizer_bench encode|ids MODEL TEXT | train unigram|bpe VOCAB CORPUS OUT [byte_fallback]");
            std::process::exit(2);
        }
    }
}
