//! The `mezcla` binary: parses the command line and reports any error as one line with a non-zero exit.

use clap::Parser;

fn main() {
    let cli = mezcla_asr::cli::Cli::parse();
    if let Err(err) = mezcla_asr::cli::run(cli) {
        // Some library errors carry a backtrace after their message; the user gets the message line.
        let text = format!("{err:#}");
        eprintln!(
            "error: {}",
            text.lines().next().unwrap_or("unknown error").trim_end()
        );
        std::process::exit(1);
    }
}
