//! Command-line definitions; each subcommand lives in its own module and only parses and dispatches.

use clap::{Parser, Subcommand};

pub mod datagen;
pub mod tokenizer;

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
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Datagen(args) => datagen::run(args),
        Command::Tokenizer(args) => tokenizer::run(args),
    }
}
