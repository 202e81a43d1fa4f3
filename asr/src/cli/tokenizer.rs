//! `mezcla tokenizer`: train, concatenate, inspect and run SentencePiece / concatenated tokenizers.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use mezcla_datagen::manifest::Manifest;
use mezcla_tokenizer::train::{self, NormalizationRule, TrainOptions};
use mezcla_tokenizer::{ConcatTokenizer, ModelType, Segment, SentencePieceModel};
use serde_json::json;

#[derive(Debug, Args)]
pub struct TokenizerArgs {
    /// Print JSON instead of text (one object per line when reading stdin).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: TokenizerCommand,
}

#[derive(Debug, Subcommand)]
pub enum TokenizerCommand {
    /// Train SentencePiece models: one from a text file, one per language (LANG=FILE), or one per language of a
    /// manifest whose text is `{"str","lang"}` segments; several languages give a concatenated tokenizer folder.
    Train(TrainArgs),
    /// Stack per-language models (LANG=MODEL, in id order) into a concatenated tokenizer folder.
    Concat(ConcatArgs),
    /// Encode text into ids, pieces and per-token languages (text from the argument, or one line at a time from
    /// stdin).
    Encode(EncodeArgs),
    /// Decode ids into text, per-token and per-word languages (ids from the argument, or one list a line from
    /// stdin; ids separated by spaces or commas, or a JSON list).
    Decode(DecodeArgs),
    /// Describe a tokenizer: languages, id ranges, blank id, model types.
    Info(InfoArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModelTypeArg {
    Unigram,
    Bpe,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum NormalizationArg {
    NmtNfkc,
    NmtNfkcCf,
    Identity,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Text corpus, one sentence a line: PATH (one model) or LANG=PATH (repeat per language).
    #[arg(long = "input", value_name = "[LANG=]PATH")]
    pub inputs: Vec<String>,
    /// A NeMo manifest; each segment's text goes to its language's corpus (plain text uses the line's `lang`).
    #[arg(long, conflicts_with = "inputs")]
    pub manifest: Option<PathBuf>,
    /// Output: a `.model` file for one unnamed corpus, otherwise a concatenated tokenizer folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Languages in id order (comma-separated); default: order of --input, or of first appearance in the manifest.
    #[arg(long, value_delimiter = ',')]
    pub languages: Vec<String>,
    /// Vocabulary size per language: N, or LANG=N (repeatable) to set languages apart.
    #[arg(long = "vocab-size", value_name = "[LANG=]N", default_values_t = vec!["1024".to_string()])]
    pub vocab_size: Vec<String>,
    /// Segmentation model to train.
    #[arg(long, value_enum, default_value_t = ModelTypeArg::Unigram)]
    pub model_type: ModelTypeArg,
    /// Fraction of characters (by frequency) kept in the alphabet.
    #[arg(long, default_value_t = 0.9995)]
    pub character_coverage: f64,
    /// Encode unknown characters as UTF-8 byte pieces.
    #[arg(long)]
    pub byte_fallback: bool,
    /// Normalization rule stored in the model (nmt-nfkc is SentencePiece's default).
    #[arg(long, value_enum, default_value_t = NormalizationArg::NmtNfkc)]
    pub normalization: NormalizationArg,
    /// Symbols always kept whole (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub user_defined_symbols: Vec<String>,
    /// Sample at most this many sentences per language (0: all).
    #[arg(long, default_value_t = 0)]
    pub input_sentence_size: usize,
    /// Seed for sentence sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Allow a smaller vocabulary than asked when the corpus is too small.
    #[arg(long)]
    pub soft_vocab_limit: bool,
}

#[derive(Debug, Args)]
pub struct ConcatArgs {
    /// LANG=MODEL per language, in id order (MODEL: a `.model` file).
    #[arg(required = true, value_name = "LANG=MODEL")]
    pub models: Vec<String>,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct EncodeArgs {
    /// A concatenated tokenizer folder, a `.model` file, a folder with tokenizer.model, or a NeMo agg config.
    #[arg(long)]
    pub tokenizer: PathBuf,
    /// Language of the text (may be omitted for a one-language tokenizer; with a bare `.model` file it names the
    /// model's language, by default the file name).
    #[arg(long)]
    pub lang: Option<String>,
    /// The input is a JSON list of {"str","lang"} segments, each encoded in its language.
    #[arg(long)]
    pub segments: bool,
    /// Text to encode; without it, each line of stdin is encoded.
    pub text: Option<String>,
}

#[derive(Debug, Args)]
pub struct DecodeArgs {
    /// A concatenated tokenizer folder, a `.model` file, a folder with tokenizer.model, or a NeMo agg config.
    #[arg(long)]
    pub tokenizer: PathBuf,
    /// Ids ("5 17 3", "5,17,3" or "[5,17,3]"); without them, each line of stdin is one list.
    pub ids: Option<String>,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// A concatenated tokenizer folder, a `.model` file, a folder with tokenizer.model, or a NeMo agg config.
    #[arg(long)]
    pub tokenizer: PathBuf,
}

/// Runs `mezcla tokenizer ...`.
pub fn run(args: TokenizerArgs) -> Result<()> {
    let json = args.json;
    match args.command {
        TokenizerCommand::Train(a) => train_cmd(a, json),
        TokenizerCommand::Concat(a) => concat_cmd(a, json),
        TokenizerCommand::Encode(a) => encode_cmd(a, json),
        TokenizerCommand::Decode(a) => decode_cmd(a, json),
        TokenizerCommand::Info(a) => info_cmd(a, json),
    }
}

fn split_kv(s: &str, what: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => bail!("expected {what} as LANG=VALUE, got {s:?}"),
    }
}

fn load(path: &Path) -> Result<ConcatTokenizer> {
    Ok(ConcatTokenizer::load(path)?)
}

/// Loads a tokenizer; a bare `.model` file takes its language from `--lang` when given (else its file name).
fn load_with_lang(path: &Path, lang: &Option<String>) -> Result<ConcatTokenizer> {
    let is_model_file = path.is_file()
        && !matches!(
            path.extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("yaml" | "yml" | "json")
        );
    match lang {
        Some(l) if is_model_file => Ok(ConcatTokenizer::new(vec![(
            l.clone(),
            SentencePieceModel::load(path)?,
        )])?),
        _ => load(path),
    }
}

fn train_options(a: &TrainArgs, vocab: usize) -> TrainOptions {
    TrainOptions {
        model_type: match a.model_type {
            ModelTypeArg::Unigram => ModelType::Unigram,
            ModelTypeArg::Bpe => ModelType::Bpe,
        },
        vocab_size: vocab,
        character_coverage: a.character_coverage,
        byte_fallback: a.byte_fallback,
        normalization: match a.normalization {
            NormalizationArg::NmtNfkc => NormalizationRule::NmtNfkc,
            NormalizationArg::NmtNfkcCf => NormalizationRule::NmtNfkcCf,
            NormalizationArg::Identity => NormalizationRule::Identity,
        },
        user_defined_symbols: a.user_defined_symbols.clone(),
        input_sentence_size: a.input_sentence_size,
        seed: a.seed,
        hard_vocab_limit: !a.soft_vocab_limit,
        ..TrainOptions::default()
    }
}

fn vocab_sizes(a: &TrainArgs) -> Result<(usize, BTreeMap<String, usize>)> {
    let mut default = 1024;
    let mut per = BTreeMap::new();
    for v in &a.vocab_size {
        let parse = |n: &str| n.parse::<usize>().ok().filter(|&n| n > 0);
        if let Some((lang, n)) = v.split_once('=') {
            let n =
                parse(n).with_context(|| format!("--vocab-size {v:?}: not a positive number"))?;
            per.insert(lang.to_string(), n);
        } else {
            default =
                parse(v).with_context(|| format!("--vocab-size {v:?}: not a positive number"))?;
        }
    }
    Ok((default, per))
}

fn read_lines(path: &Path) -> Result<Vec<String>> {
    let f = std::fs::File::open(path)
        .with_context(|| format!("{}: cannot open corpus", path.display()))?;
    let mut lines = Vec::new();
    for l in std::io::BufReader::new(f).lines() {
        lines.push(
            l.with_context(|| format!("{}: cannot read corpus (not UTF-8?)", path.display()))?,
        );
    }
    Ok(lines)
}

fn train_cmd(a: TrainArgs, json: bool) -> Result<()> {
    let (default_vocab, per_lang) = vocab_sizes(&a)?;
    // Gather (lang, sentences, source) per language.
    let mut corpora: Vec<(String, Vec<String>, String)> = Vec::new();
    let mut single = false;
    if let Some(m) = &a.manifest {
        let manifest = Manifest::read(m)?;
        for (i, e) in manifest.entries.iter().enumerate() {
            let Some(text) = &e.text else { continue };
            let segs = text.to_segments(e.lang.as_deref()).ok_or_else(|| {
                manifest.error_at(i, "plain-text transcript without a `lang` field")
            })?;
            for s in segs {
                match corpora.iter_mut().find(|c| c.0 == s.lang) {
                    Some(c) => c.1.push(s.str),
                    None => corpora.push((s.lang.clone(), vec![s.str], m.display().to_string())),
                }
            }
        }
        if corpora.is_empty() {
            bail!(
                "{}: the manifest has no transcripts to train on",
                m.display()
            );
        }
    } else {
        if a.inputs.is_empty() {
            bail!("give --input PATH, --input LANG=PATH (repeatable) or --manifest PATH");
        }
        for inp in &a.inputs {
            let (lang, path) = match inp.split_once('=') {
                Some((l, p)) if !l.is_empty() && !Path::new(inp).exists() => {
                    (l.to_string(), PathBuf::from(p))
                }
                _ => {
                    if a.inputs.len() > 1 {
                        bail!("with several --input, name each language: --input LANG=PATH (got {inp:?})");
                    }
                    single = true;
                    let stem = Path::new(inp)
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .unwrap_or("default");
                    (stem.to_string(), PathBuf::from(inp))
                }
            };
            if corpora.iter().any(|c| c.0 == lang) {
                bail!("language {lang:?} is given twice");
            }
            corpora.push((lang, read_lines(&path)?, path.display().to_string()));
        }
    }
    if !a.languages.is_empty() {
        let mut ordered = Vec::new();
        for l in &a.languages {
            let i = corpora.iter().position(|c| &c.0 == l).with_context(|| {
                format!(
                    "unknown language {l:?} in --languages (the corpus has: {})",
                    names(&corpora)
                )
            })?;
            ordered.push(corpora.remove(i));
        }
        corpora = ordered;
    }
    for l in per_lang.keys() {
        if !corpora.iter().any(|c| &c.0 == l) {
            bail!(
                "unknown language {l:?} in --vocab-size (the corpus has: {})",
                names(&corpora)
            );
        }
    }
    let mut parts = Vec::new();
    let mut report = Vec::new();
    for (lang, sentences, source) in corpora {
        let vocab = per_lang.get(&lang).copied().unwrap_or(default_vocab);
        let t0 = Instant::now();
        let model = train::train(&sentences, &train_options(&a, vocab))
            .with_context(|| format!("{source} ({lang})"))?;
        let secs = t0.elapsed().as_secs_f64();
        report.push(json!({"lang": lang, "vocab_size": model.vocab_size(), "sentences": sentences.len(),
            "model_type": model.model_type().to_string(), "seconds": (secs * 1000.0).round() / 1000.0}));
        parts.push((lang, model));
    }
    if single {
        let (_, model) = parts.pop().expect("one corpus");
        if let Some(parent) = a.out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("{}: cannot create folder", parent.display()))?;
        }
        model.save(&a.out)?;
    } else {
        ConcatTokenizer::new(parts)?.save(&a.out)?;
    }
    if json {
        println!(
            "{}",
            json!({"out": a.out.display().to_string(), "single_model": single, "languages": report})
        );
    } else {
        for r in &report {
            println!(
                "{}: {} pieces ({}, {} sentences, {:.2} s)",
                r["lang"].as_str().unwrap_or(""),
                r["vocab_size"],
                r["model_type"].as_str().unwrap_or(""),
                r["sentences"],
                r["seconds"].as_f64().unwrap_or(0.0)
            );
        }
        println!("wrote {}", a.out.display());
    }
    Ok(())
}

fn names(corpora: &[(String, Vec<String>, String)]) -> String {
    corpora
        .iter()
        .map(|c| c.0.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn concat_cmd(a: ConcatArgs, json: bool) -> Result<()> {
    let mut parts = Vec::new();
    for m in &a.models {
        let (lang, path) = split_kv(m, "a model")?;
        parts.push((lang, SentencePieceModel::load(&path)?));
    }
    let tok = ConcatTokenizer::new(parts)?;
    tok.save(&a.out)?;
    if json {
        println!("{}", info_json(&tok, &a.out));
    } else {
        println!(
            "wrote {} ({} languages, vocab {}, blank {})",
            a.out.display(),
            tok.langs().len(),
            tok.vocab_size(),
            tok.blank_id()
        );
    }
    Ok(())
}

fn pick_lang(tok: &ConcatTokenizer, lang: &Option<String>) -> Result<String> {
    match lang {
        Some(l) => {
            tok.lang_index(l)?;
            Ok(l.clone())
        }
        None if tok.langs().len() == 1 => Ok(tok.langs()[0].clone()),
        None => bail!(
            "--lang is required: the tokenizer has {} languages ({})",
            tok.langs().len(),
            tok.langs().join(", ")
        ),
    }
}

fn encode_one(
    tok: &ConcatTokenizer,
    a: &EncodeArgs,
    lang: &Option<String>,
    input: &str,
    json: bool,
) -> Result<String> {
    let mut ids = Vec::new();
    let mut pieces = Vec::new();
    if a.segments {
        let segs: Vec<Segment> = serde_json::from_str(input).with_context(|| {
            format!("expected a JSON list of {{\"str\",\"lang\"}} segments, got {input:?}")
        })?;
        for s in &segs {
            for (id, p) in tok.encode_pieces(&s.text, &s.lang)? {
                ids.push(id);
                pieces.push(p);
            }
        }
    } else {
        let lang = pick_lang(tok, lang)?;
        for (id, p) in tok.encode_pieces(input, &lang)? {
            ids.push(id);
            pieces.push(p);
        }
    }
    let langs = tok.ids_to_langs(&ids)?;
    Ok(if json {
        json!({"ids": ids, "pieces": pieces, "langs": langs}).to_string()
    } else {
        ids.iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    })
}

fn encode_cmd(a: EncodeArgs, json: bool) -> Result<()> {
    let tok = if a.segments {
        load(&a.tokenizer)?
    } else {
        load_with_lang(&a.tokenizer, &a.lang)?
    };
    if !a.segments {
        pick_lang(&tok, &a.lang)?;
    }
    let out = std::io::stdout();
    let mut out = out.lock();
    match &a.text {
        Some(t) => writeln!(out, "{}", encode_one(&tok, &a, &a.lang, t, json)?)?,
        None => {
            for (n, line) in std::io::stdin().lock().lines().enumerate() {
                let line = line.with_context(|| format!("stdin line {}: not UTF-8", n + 1))?;
                let s = encode_one(&tok, &a, &a.lang, &line, json)
                    .with_context(|| format!("stdin line {}", n + 1))?;
                writeln!(out, "{s}")?;
            }
        }
    }
    Ok(())
}

fn parse_ids(s: &str) -> Result<Vec<u32>> {
    let t = s.trim();
    let t = t
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(t);
    t.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|x| !x.is_empty())
        .map(|x| {
            x.parse::<u32>()
                .with_context(|| format!("{x:?} is not an id (a non-negative integer)"))
        })
        .collect()
}

fn decode_one(tok: &ConcatTokenizer, input: &str, json: bool) -> Result<String> {
    let ids = parse_ids(input)?;
    for &id in &ids {
        if id == tok.blank_id() {
            bail!(
                "id {id} is the blank (vocabulary size {}); remove blanks before decoding",
                tok.vocab_size()
            );
        }
    }
    let text = tok.decode(&ids)?;
    let langs = tok.ids_to_langs(&ids)?;
    let words = tok.ids_to_words_and_langs(&ids)?;
    let lang = tok.ids_to_lang(&ids)?;
    Ok(if json {
        json!({"text": text, "lang": lang, "pieces": tok.ids_to_tokens(&ids)?, "langs": langs, "words": words})
            .to_string()
    } else {
        let words: Vec<String> = words
            .iter()
            .map(|w| format!("{}[{}]", w.word, w.lang))
            .collect();
        format!("{text}\t{lang}\t{}", words.join(" "))
    })
}

fn decode_cmd(a: DecodeArgs, json: bool) -> Result<()> {
    let tok = load(&a.tokenizer)?;
    let out = std::io::stdout();
    let mut out = out.lock();
    match &a.ids {
        Some(ids) => writeln!(out, "{}", decode_one(&tok, ids, json)?)?,
        None => {
            for (n, line) in std::io::stdin().lock().lines().enumerate() {
                let line = line.with_context(|| format!("stdin line {}: not UTF-8", n + 1))?;
                let s = decode_one(&tok, &line, json)
                    .with_context(|| format!("stdin line {}", n + 1))?;
                writeln!(out, "{s}")?;
            }
        }
    }
    Ok(())
}

fn info_json(tok: &ConcatTokenizer, path: &Path) -> serde_json::Value {
    let langs: Vec<serde_json::Value> = tok
        .langs()
        .iter()
        .zip(tok.models())
        .map(|(l, m)| {
            let offset = tok.offset(l).unwrap_or(0);
            json!({"lang": l, "offset": offset, "vocab_size": m.vocab_size(),
                   "ids": [offset, offset + m.vocab_size() as u32 - 1],
                   "model_type": m.model_type().to_string(), "normalizer": m.normalizer_name(),
                   "byte_fallback": m.byte_fallback(), "unk_id": offset + m.unk_id()})
        })
        .collect();
    json!({"tokenizer": path.display().to_string(), "vocab_size": tok.vocab_size(), "blank_id": tok.blank_id(),
           "languages": langs})
}

fn info_cmd(a: InfoArgs, json: bool) -> Result<()> {
    let tok = load(&a.tokenizer)?;
    let info = info_json(&tok, &a.tokenizer);
    if json {
        println!("{info}");
    } else {
        println!("tokenizer: {}", a.tokenizer.display());
        println!(
            "vocab size: {} (blank id {})",
            tok.vocab_size(),
            tok.blank_id()
        );
        for l in info["languages"].as_array().into_iter().flatten() {
            println!(
                "  {}: ids {}..={} ({} pieces, {}, normalizer {}, byte fallback {})",
                l["lang"].as_str().unwrap_or(""),
                l["ids"][0],
                l["ids"][1],
                l["vocab_size"],
                l["model_type"].as_str().unwrap_or(""),
                l["normalizer"].as_str().unwrap_or("none"),
                l["byte_fallback"]
            );
        }
    }
    Ok(())
}
