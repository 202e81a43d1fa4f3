//! The `mezcla` binary: parses the command line and reports any error as one line with a non-zero exit.

use clap::Parser;

fn main() {
    let cli = mezcla_asr::cli::Cli::parse();
    if let Err(err) = mezcla_asr::cli::run(cli) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
