//! Command-line definitions; each subcommand lives in its own module and only parses and dispatches.

use clap::{Parser, Subcommand};

pub mod convert;
pub mod datagen;
pub mod lm;
pub mod tokenizer;
pub mod train;
pub mod transcribe;

/// mezcla: speech recognition for code-switched speech, with a language on every word.
#[derive(Debug, Parser)]
#[command(name = "mezcla", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build datasets: code-switched mixes of monolingual corpora, and TTS corpora from text.
    Datagen(datagen::DatagenArgs),
    /// SentencePiece and concatenated (per-language) tokenizers: train, concat, encode, decode, info.
    Tokenizer(tokenizer::TokenizerArgs),
    /// Transcribe audio with a language tag on every word (text, JSON, SRT or WebVTT).
    Transcribe(transcribe::TranscribeArgs),
    /// Identify the language of each file and of each word.
    Lid(transcribe::LidArgs),
    /// Train a Conformer-CTC model from a TOML config (resumable).
    Train(train::TrainArgs),
    /// Score a model on a manifest: WER, CER, WER per language, LID accuracy, RTFx.
    Eval(train::EvalArgs),
    /// Word n-gram language models for beam-search decoding: train, perplexity.
    Lm(lm::LmArgs),
    /// Convert a NeMo `.nemo` checkpoint (Conformer CTC, RNN-T or hybrid) into a mezcla model folder, or a
    /// model folder into one with other weight storage.
    Convert(convert::ConvertArgs),
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Datagen(args) => datagen::run(args),
        Command::Tokenizer(args) => tokenizer::run(args),
        Command::Transcribe(args) => transcribe::run_transcribe(args),
        Command::Lid(args) => transcribe::run_lid(args),
        Command::Train(args) => train::run_train(args),
        Command::Eval(args) => train::run_eval(args),
        Command::Lm(args) => lm::run(args),
        Command::Convert(args) => convert::run(args),
    }
}
