//! The `mezcla` binary: parses the command line and reports any error as one line with a non-zero exit.

use clap::Parser;

fn main() {
    let cli = mezcla_asr::cli::Cli::parse();
    let tensor_work = !matches!(
        cli.command,
        mezcla_asr::cli::Command::Datagen(_) | mezcla_asr::cli::Command::Tokenizer(_)
    );
    if tensor_work {
        keep_freed_memory();
    }
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

/// Tells glibc's allocator to keep freed memory instead of returning it to the kernel. A training step or a
/// forward pass frees and reallocates the same tensor sizes (many above glibc's 32 MB mmap ceiling) every time;
/// by default each one is a fresh `mmap` whose pages fault in again and whose `munmap` shoots down the TLB of
/// every core. Measured on 16 `small` training steps (2 cores): 61.6 s by default, 53.6 s with these settings.
/// Must run before any thread starts; the datagen and tokenizer commands, which are multi-threaded on small
/// buffers, keep the defaults.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // SAFETY: mallopt only changes allocator parameters; it is called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}
