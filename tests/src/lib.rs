//! Helpers shared by the end-to-end tests in `tests/tests/`, which drive the `mezcla` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// The committed example corpus of a language: `examples/<lang>` (WAVs, `manifest.json`, `sentences.txt`).
pub fn examples(lang: &str) -> PathBuf {
    root().join("examples").join(lang)
}

/// `LANG=PATH` of an example manifest, as `--manifest` takes it.
pub fn example_manifest_arg(lang: &str) -> String {
    format!("{lang}={}", examples(lang).join("manifest.json").display())
}

/// Path of the `mezcla` binary, built (or brought up to date) once per test process with the test's profile.
pub fn binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test knows its own path");
        // target/<profile>/deps/<test> -> target/<profile>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("tests run from target/<profile>/deps")
            .to_path_buf();
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .current_dir(root())
            .args(["build", "--quiet", "-p", "mezcla-asr", "--bin", "mezcla"]);
        if release {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "building the mezcla binary failed");
        profile_dir.join(format!("mezcla{}", std::env::consts::EXE_SUFFIX))
    })
}

/// A `mezcla` command ready for arguments.
pub fn mezcla() -> Command {
    let mut cmd = Command::new(binary());
    cmd.env("NO_COLOR", "1");
    cmd
}

/// Runs `mezcla ARGS` and returns its output, whatever the exit status.
pub fn run(args: &[&str]) -> Output {
    mezcla().args(args).output().expect("mezcla runs")
}

/// Runs `mezcla ARGS`, fails the test with its stderr unless it succeeds, and returns stdout.
pub fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "mezcla {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("stdout is UTF-8")
}

/// Runs `mezcla ARGS`, expects failure with a single `error: ...` line on stderr, and returns that line.
pub fn fails(args: &[&str]) -> String {
    let out = run(args);
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert!(
        !out.status.success(),
        "mezcla {} should fail but succeeded",
        args.join(" ")
    );
    assert!(
        stderr.starts_with("error:") && !stderr.contains('\n'),
        "one error line expected, got: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// The (word, language) pairs of one transcript of `mezcla transcribe --format json`.
pub fn words_and_langs(transcript: &serde_json::Value) -> Vec<(String, String)> {
    transcript["words"]
        .as_array()
        .expect("a transcript has words")
        .iter()
        .map(|w| {
            (
                w["word"].as_str().unwrap().to_string(),
                w["lang"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}
