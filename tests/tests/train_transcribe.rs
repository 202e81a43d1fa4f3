//! End-to-end: train the `tiny` Conformer-CTC on the example utterances until it transcribes them with the right
//! language tags, then transcribe, identify languages and evaluate with it; and check that a resumed run ends
//! exactly where an uninterrupted one does.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use mezcla_tests::{example_manifest_arg, examples, fails, ok, run, words_and_langs};
use serde_json::Value;

const STEPS: u64 = 180;

fn write_config(dir: &Path, out: &str, steps: u64, every: u64) -> PathBuf {
    let cfg = format!(
        r#"out_dir = "{out}"
tokenizer = "tok"
train_manifests = ["{en}", "{es}", "cs/manifest.json"]
val_manifests = ["cs/manifest.json"]
model = "tiny"
seed = 1
max_steps = {steps}

[batch]
max_duration = 40.0
buckets = 2

[optim]
lr = 2e-3
schedule = "noam"
warmup_steps = 50
dropout = 0.0

[eval]
every = {every}
keep_best = 1
average_last = 1
"#,
        en = examples("en").join("manifest.json").display(),
        es = examples("es").join("manifest.json").display(),
    );
    let path = dir.join(format!("{out}.toml"));
    std::fs::write(&path, cfg).unwrap();
    path
}

/// The tokenizer and a small code-switched set mixed from the examples (4–7 s samples), in `dir`.
fn prepare(dir: &Path) {
    let (en, es) = (example_manifest_arg("en"), example_manifest_arg("es"));
    let cs = dir.join("cs").display().to_string();
    ok(&[
        "datagen",
        "cs",
        "--manifest",
        &en,
        "--manifest",
        &es,
        "--out",
        &cs,
        "--hours",
        "0.012",
        "--min-duration",
        "4",
        "--max-duration",
        "7",
        "--seed",
        "3",
        "--prefer-unused",
    ]);
    tokenizer(dir);
}

fn tokenizer(dir: &Path) {
    let en = format!("en={}", examples("en").join("sentences.txt").display());
    let es = format!("es={}", examples("es").join("sentences.txt").display());
    let out = dir.join("tok").display().to_string();
    ok(&[
        "tokenizer",
        "train",
        "--input",
        &en,
        "--input",
        &es,
        "--vocab-size",
        "40",
        "--soft-vocab-limit",
        "--out",
        &out,
    ]);
}

/// One trained model shared by the tests of this file (training takes a minute).
fn trained() -> &'static (tempfile::TempDir, PathBuf) {
    static MODEL: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path());
        let cfg = write_config(dir.path(), "run", STEPS, 90);
        let summary: Value =
            serde_json::from_str(&ok(&["train", "--config", cfg.to_str().unwrap(), "--json"]))
                .unwrap();
        assert_eq!(summary["steps"], STEPS);
        let model = dir.path().join("run/model");
        (dir, model)
    })
}

fn references() -> Vec<(PathBuf, String, String)> {
    let mut out = Vec::new();
    for lang in ["en", "es"] {
        let text = std::fs::read_to_string(examples(lang).join("manifest.json")).unwrap();
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            out.push((
                examples(lang).join(v["audio_filepath"].as_str().unwrap()),
                v["text"].as_str().unwrap().to_string(),
                lang.to_string(),
            ));
        }
    }
    out
}

#[test]
fn the_trained_model_transcribes_the_examples_with_their_languages() {
    let (dir, model) = trained();
    let model_s = model.to_str().unwrap();
    assert!(model.join("config.json").is_file() && model.join("model.safetensors").is_file());
    assert!(model.join("tokenizer").is_dir());
    let run_dir = dir.path().join("run");
    assert!(std::fs::read_to_string(run_dir.join("curve.svg"))
        .unwrap()
        .starts_with("<svg"));
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    assert!(run_dir.join("checkpoints").is_dir());
    assert_eq!(metrics.lines().count() as u64, STEPS);
    let last: Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    assert!(last["val_wer"].is_number());

    let refs = references();
    let args: Vec<String> = ["transcribe", "--model", model_s, "--format", "json"]
        .iter()
        .map(|s| s.to_string())
        .chain(refs.iter().map(|r| r.0.display().to_string()))
        .collect();
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let out = ok(&args);
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), refs.len());
    for (line, (path, text, lang)) in lines.iter().zip(&refs) {
        assert_eq!(line["audio_filepath"], path.display().to_string());
        assert_eq!(line["text"], text.as_str(), "{}", path.display());
        assert_eq!(line["lang"], lang.as_str());
        for w in line["words"].as_array().unwrap() {
            assert_eq!(w["lang"], lang.as_str(), "{}: {w}", path.display());
            assert!(w["start"].as_f64().unwrap() < w["end"].as_f64().unwrap());
        }
        assert!(!line["token_ids"].as_array().unwrap().is_empty());
    }

    // Code-switched samples: every word carries the language of the segment it came from.
    let cs_manifest = std::fs::read_to_string(dir.path().join("cs/manifest.json")).unwrap();
    for line in cs_manifest.lines() {
        let entry: Value = serde_json::from_str(line).unwrap();
        let wav = dir
            .path()
            .join("cs")
            .join(entry["audio_filepath"].as_str().unwrap());
        let got: Value = serde_json::from_str(
            ok(&[
                "transcribe",
                "--model",
                model_s,
                "--format",
                "json",
                wav.to_str().unwrap(),
            ])
            .trim(),
        )
        .unwrap();
        let mut want: Vec<(String, String)> = Vec::new();
        for seg in entry["text"].as_array().unwrap() {
            for w in seg["str"].as_str().unwrap().split(' ') {
                want.push((w.to_string(), seg["lang"].as_str().unwrap().to_string()));
            }
        }
        let words = words_and_langs(&got);
        assert_eq!(words, want, "{}", wav.display());
    }
    let first_cs = dir.path().join("cs/audio/0.wav");
    let tagged = ok(&["transcribe", "--model", model_s, first_cs.to_str().unwrap()]);
    assert!(
        tagged.contains("[en] ") && tagged.contains("[es] "),
        "{tagged}"
    );

    // Text format shows the language runs.
    let one = refs[0].0.to_str().unwrap();
    assert_eq!(
        ok(&["transcribe", "--model", model_s, one]).trim(),
        format!("[en] {}", refs[0].1)
    );
    let srt = ok(&["transcribe", "--model", model_s, "--format", "srt", one]);
    assert!(
        srt.starts_with("1\n00:00:0") && srt.contains(" --> ") && srt.contains("[en] "),
        "{srt}"
    );
    let vtt = ok(&["transcribe", "--model", model_s, "--format", "vtt", one]);
    assert!(vtt.starts_with("WEBVTT\n\n"), "{vtt}");

    // A folder input and --output folder: one file per WAV.
    let outdir = dir.path().join("texts/");
    ok(&[
        "transcribe",
        "--model",
        model_s,
        examples("es").join("audio").to_str().unwrap(),
        "--output",
        outdir.to_str().unwrap(),
    ]);
    let got = std::fs::read_to_string(outdir.join("es_000002.txt")).unwrap();
    assert_eq!(got.trim(), format!("[es] {}", refs[7].1));
}

#[test]
fn lid_and_eval_report_languages_and_scores() {
    let (_dir, model) = trained();
    let model_s = model.to_str().unwrap();
    let es = examples("es").join("audio/es_000003.wav");
    let v: Value = serde_json::from_str(
        ok(&["lid", "--model", model_s, "--json", es.to_str().unwrap()]).trim(),
    )
    .unwrap();
    assert_eq!(v["lang"], "es");
    assert_eq!(v["share"], 1.0);
    assert!(v["words"]
        .as_array()
        .unwrap()
        .iter()
        .all(|w| w["lang"] == "es"));

    for lang in ["en", "es"] {
        let manifest = examples(lang).join("manifest.json");
        let s: Value = serde_json::from_str(
            ok(&[
                "eval",
                "--model",
                model_s,
                "--manifest",
                manifest.to_str().unwrap(),
                "--json",
            ])
            .trim(),
        )
        .unwrap();
        assert_eq!(s["utterances"], 6);
        assert_eq!(s["wer"], 0.0, "{lang}: {s}");
        assert_eq!(s["cer"], 0.0);
        assert_eq!(s["utterance_lid_accuracy"], 1.0);
        assert_eq!(s["token_lid_accuracy"], 1.0);
        assert_eq!(s["per_language"][lang]["wer"], 0.0);
        assert!(s["rtfx"].as_f64().unwrap() > 1.0);
    }
}

#[test]
fn a_bad_file_is_reported_and_the_others_are_transcribed() {
    let (dir, model) = trained();
    let bad = dir.path().join("bad.wav");
    std::fs::write(&bad, b"RIFF....WAVEnot really").unwrap();
    let good = examples("en").join("audio/en_000002.wav");
    let out = run(&[
        "transcribe",
        "--model",
        model.to_str().unwrap(),
        bad.to_str().unwrap(),
        good.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("we are going to the beach tomorrow"),
        "{stdout}"
    );
    assert!(
        stderr.contains("bad.wav") && stderr.contains("1 of 2 files"),
        "{stderr}"
    );
}

#[test]
fn a_resumed_run_ends_exactly_where_an_uninterrupted_one_does() {
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path());
    let straight = write_config(dir.path(), "straight", 12, 6);
    ok(&["train", "--config", straight.to_str().unwrap()]);
    // The same run stopped at step 6, then continued to 12.
    let first = write_config(dir.path(), "resumed", 6, 6);
    ok(&["train", "--config", first.to_str().unwrap()]);
    let err = fails(&["train", "--config", first.to_str().unwrap()]);
    assert!(err.contains("--resume"), "{err}");
    let resumed = write_config(dir.path(), "resumed", 12, 6);
    ok(&["train", "--config", resumed.to_str().unwrap(), "--resume"]);
    let a = std::fs::read(dir.path().join("straight/model/model.safetensors")).unwrap();
    let b = std::fs::read(dir.path().join("resumed/model/model.safetensors")).unwrap();
    assert!(
        a == b,
        "the resumed run's weights differ from the uninterrupted run's"
    );
    let ma = std::fs::read_to_string(dir.path().join("straight/metrics.jsonl")).unwrap();
    let mb = std::fs::read_to_string(dir.path().join("resumed/metrics.jsonl")).unwrap();
    let losses = |m: &str| -> Vec<f64> {
        m.lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["loss"]
                    .as_f64()
                    .unwrap()
            })
            .collect()
    };
    assert_eq!(losses(&ma), losses(&mb));
}

/// `init_from`: a run that starts from a trained model starts at that model's loss, not at a random model's; a
/// model of another shape is refused with the weight named, and so is an RNN-T model.
#[test]
fn a_run_started_from_a_trained_model_continues_from_its_weights() {
    let (dir, model) = trained();
    let first_loss = |run: &Path| -> f64 {
        let m = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
        let line: Value = serde_json::from_str(m.lines().next().unwrap()).unwrap();
        line["loss"].as_f64().unwrap()
    };
    let scratch = first_loss(&dir.path().join("run"));
    let base = std::fs::read_to_string(write_config(dir.path(), "from_trained", 2, 2)).unwrap();
    let cfg = dir.path().join("from_trained.toml");
    let text = base.replace(
        "model = \"tiny\"",
        &format!("init_from = \"{}\"", model.display()),
    );
    std::fs::write(&cfg, text.replace("lr = 2e-3", "lr = 1e-5")).unwrap();
    ok(&["train", "--config", cfg.to_str().unwrap()]);
    let continued = first_loss(&dir.path().join("from_trained"));
    assert!(
        continued < 0.2 * scratch,
        "the first loss from the trained model is {continued}, from scratch {scratch}"
    );

    // A run named `name` whose `model = "tiny"` line becomes `model_lines`, expected to be refused in one line
    // mentioning init_from and `why`.
    let refused = |name: &str, model_lines: String, why: &str| {
        let path = dir.path().join(format!("{name}.toml"));
        let text = base
            .replace(
                "out_dir = \"from_trained\"",
                &format!("out_dir = \"{name}\""),
            )
            .replace("model = \"tiny\"", &model_lines);
        std::fs::write(&path, text).unwrap();
        let err = fails(&["train", "--config", path.to_str().unwrap()]);
        assert!(
            err.contains("init_from") && err.contains(why) && err.lines().count() == 1,
            "{err}"
        );
    };
    refused(
        "other_shape",
        format!("model = \"small\"\ninit_from = \"{}\"", model.display()),
        "has shape",
    );
    // An RNN-T checkpoint cannot start a (CTC) run.
    let rnnt =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../asr/tests/fixtures/nemo/agg_rnnt.nemo");
    refused(
        "from_rnnt",
        format!("init_from = \"{}\"", rnnt.display()),
        "RNN-T",
    );
}

#[test]
fn intermediate_ctc_losses_are_trained_and_logged() {
    let (dir, _) = trained();
    // Two batches per update, so that the logged losses are means over the accumulated batches.
    let base = std::fs::read_to_string(write_config(dir.path(), "interctc", 3, 3))
        .unwrap()
        .replace("buckets = 2", "buckets = 2\naccumulate = 2");
    let cfg = dir.path().join("interctc.toml");
    std::fs::write(
        &cfg,
        format!("{base}\n[interctc]\nloss_weights = [0.3]\napply_at_layers = [0]\n"),
    )
    .unwrap();
    ok(&["train", "--config", cfg.to_str().unwrap()]);
    let metrics = std::fs::read_to_string(dir.path().join("interctc/metrics.jsonl")).unwrap();
    let lines: Vec<Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for line in &lines {
        // The optimised loss is NeMo's weighted sum of the final and the layer-0 CTC losses.
        let total = line["loss"].as_f64().unwrap();
        let final_loss = line["final_loss"].as_f64().unwrap();
        let inter = line["inter_ctc_loss"]["l0"].as_f64().unwrap();
        assert!(
            (total - (0.7 * final_loss + 0.3 * inter)).abs() <= 1e-3 * total,
            "{line}"
        );
        assert!((final_loss - inter).abs() > 1e-3, "{line}");
    }

    // A layer the model does not have, and weights that leave nothing to the final loss: one-line errors.
    for (section, needle) in [
        (
            "loss_weights = [0.3]\napply_at_layers = [2]",
            "apply_at_layers has 2",
        ),
        (
            "loss_weights = [0.5, 0.5]\napply_at_layers = [0, 1]",
            "sum to 1",
        ),
        (
            "loss_weights = [0.3]\napply_at_layers = [0, 1]",
            "apply_at_layers has 2",
        ),
    ] {
        let bad = dir.path().join("interctc_bad.toml");
        let text = base.replace("out_dir = \"interctc\"", "out_dir = \"interctc_bad\"");
        std::fs::write(&bad, format!("{text}\n[interctc]\n{section}\n")).unwrap();
        let err = fails(&["train", "--config", bad.to_str().unwrap()]);
        assert!(
            err.contains("interctc") && err.contains(needle) && err.lines().count() == 1,
            "{section}: {err}"
        );
    }
}

#[test]
fn training_config_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "out_dir = \"x\"\ntokenizer = \"tok\"\ntrain_manifests = []\nmodel = \"tiny\"\nmax_steps = 5\n").unwrap();
    let err = fails(&["train", "--config", cfg.to_str().unwrap()]);
    assert!(
        err.contains("bad.toml") && err.contains("train_manifests"),
        "{err}"
    );
    std::fs::write(&cfg, "out_dir = \"x\"\ntokenizer = \"tok\"\ntrain_manifests = [\"m.json\"]\nmodel = \"tiny\"\nmax_steps = 5\nbogus = 1\n").unwrap();
    let err = fails(&["train", "--config", cfg.to_str().unwrap()]);
    assert!(err.contains("bogus"), "{err}");
    let err = fails(&[
        "transcribe",
        "--model",
        dir.path().to_str().unwrap(),
        examples("en").join("audio/en_000001.wav").to_str().unwrap(),
    ]);
    assert!(err.contains("config.json"), "{err}");
}

#[test]
fn long_audio_is_transcribed_in_chunks_without_lost_or_doubled_words() {
    let (dir, model) = trained();
    // About 80 s: every example three times, 0.1 s of silence between them (as in the code-switched mixes).
    let mut samples: Vec<i16> = Vec::new();
    let mut words: Vec<String> = Vec::new();
    for _ in 0..3 {
        for (path, text, _) in references() {
            let audio = mezcla_datagen::audio::read_wav(&path).unwrap();
            samples.extend(audio.samples.iter().map(|s| (s * 32767.0) as i16));
            samples.extend(std::iter::repeat_n(0i16, 1600));
            words.extend(text.split(' ').map(str::to_string));
        }
    }
    let long = dir.path().join("long.wav");
    mezcla_datagen::audio::write_wav_i16(&long, &samples, 16000).unwrap();
    let words_of = |chunk: &str, overlap: &str| -> (Value, Vec<String>) {
        let out = ok(&[
            "transcribe",
            "--model",
            model.to_str().unwrap(),
            "--format",
            "json",
            "--chunk-seconds",
            chunk,
            "--overlap-seconds",
            overlap,
            long.to_str().unwrap(),
        ]);
        let v: Value = serde_json::from_str(out.trim()).unwrap();
        let words = v["words"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["word"].as_str().unwrap().to_string())
            .collect();
        (v, words)
    };
    // The whole file in one pass, and in 10 s chunks with 3 s of overlap (about 11 seams). The tiny model has
    // memorised 2-7 s inputs and stumbles where examples meet and where chunks cut its training contexts, so
    // words can be misspelt in either; what chunking must not do is lose or double whole stretches at the
    // seams (the exact merge is unit-tested in `mezcla_asr::model`).
    let (_, whole) = words_of("200", "0");
    let (v, got) = words_of("10", "3");
    let wer = mezcla_asr::metrics::wer(&[words.join(" ")], &[whole.join(" ")]).unwrap();
    assert!(wer < 0.6, "WER of the whole file {wer}: {whole:?}");
    let ratio = got.len() as f64 / whole.len() as f64;
    assert!(
        (0.85..=1.15).contains(&ratio),
        "{} words in chunks for {} in one pass: {got:?} / {whole:?}",
        got.len(),
        whole.len()
    );
    // Misspellings at the seams differ from run to run of the training; a lost or doubled stretch shows in the
    // word count above and in the anchors below.
    let chunked = mezcla_asr::metrics::wer(&[whole.join(" ")], &[got.join(" ")]).unwrap();
    assert!(
        chunked < 0.5,
        "chunked against one pass: WER {chunked}: {got:?} / {whole:?}"
    );
    // Words the model gets right all three times in one pass (and that occur only there): never doubled in the
    // chunked text, and at most one of the three misspelt there.
    let count = |ws: &[String], word: &str| ws.iter().filter(|w| *w == word).count();
    let mut anchors: Vec<&String> = words
        .iter()
        .filter(|w| count(&words, w) == 3 && count(&whole, w) == 3)
        .collect();
    anchors.sort();
    anchors.dedup();
    assert!(
        anchors.len() >= 5,
        "too few stable words in one pass: {whole:?}"
    );
    for anchor in anchors {
        assert!(
            (2..=3).contains(&count(&got, anchor)),
            "{anchor} in chunks: {got:?}"
        );
    }
    // Times increase through the file.
    let starts: Vec<f64> = v["words"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["start"].as_f64().unwrap())
        .collect();
    assert!(starts.windows(2).all(|p| p[0] < p[1]));
    assert!(*starts.last().unwrap() > 70.0);
}

#[test]
fn on_the_fly_mixing_spec_augment_accumulation_and_checkpoint_averaging() {
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path());
    let cfg = format!(
        r#"out_dir = "opts"
tokenizer = "tok"
train_manifests = ["{en}", "{es}"]
val_manifests = ["cs/manifest.json"]
model = "tiny"
seed = 2
max_steps = 6

[batch]
max_duration = 12.0
accumulate = 2

[optim]
warmup_steps = 2

[spec_augment]
freq_masks = 2
freq_width = 10
time_masks = 2
time_width = 0.05

[eval]
every = 2
keep_best = 1
average_last = 2

[cs_mixing]
manifests = {{ en = "{en}", es = "{es}" }}
batch_probability = 0.5
min_duration = 3.0
max_duration = 6.0
"#,
        en = examples("en").join("manifest.json").display(),
        es = examples("es").join("manifest.json").display(),
    );
    let path = dir.path().join("opts.toml");
    std::fs::write(&path, cfg).unwrap();
    ok(&["train", "--config", path.to_str().unwrap()]);
    let out = dir.path().join("opts");
    let metrics: Vec<Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(metrics.len(), 6);
    assert!(metrics
        .iter()
        .all(|m| m["loss"].as_f64().unwrap().is_finite()));
    assert_eq!(
        metrics.iter().filter(|m| m["val_wer"].is_number()).count(),
        3
    );
    // Checkpoints at 2, 4, 6: the best by validation WER and the last two (for averaging) are kept.
    let mut kept: Vec<String> = std::fs::read_dir(out.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    assert!(
        kept.contains(&"step-00000004".to_string()) && kept.contains(&"step-00000006".to_string()),
        "{kept:?}"
    );
    assert!(kept.len() <= 3, "{kept:?}");
    // The exported model is the mean of the last two checkpoints.
    let load = |p: PathBuf| candle_core::safetensors::load(p, &candle_core::Device::Cpu).unwrap();
    let a = load(out.join("checkpoints/step-00000004/model.safetensors"));
    let b = load(out.join("checkpoints/step-00000006/model.safetensors"));
    let m = load(out.join("model/model.safetensors"));
    let name = "encoder.layers.0.feed_forward1.linear1.weight";
    let want = ((&a[name] + &b[name]).unwrap() / 2.0).unwrap();
    let diff = max_abs_diff(&m[name], &want);
    assert!(diff < 1e-6, "{diff}");
    assert!(max_abs_diff(&a[name], &b[name]) > 0.0);
}

fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn an_int8_copy_of_a_model_is_smaller_and_transcribes_the_same() {
    let (dir, model) = trained();
    let model_s = model.to_str().unwrap();
    let int8 = dir.path().join("model-int8");
    let int8_s = int8.to_str().unwrap();
    let said = ok(&["convert", model_s, "--out", int8_s, "--weights", "int8"]);
    assert!(said.contains("Int8"), "{said}");
    let size = |d: &Path| {
        std::fs::metadata(d.join("model.safetensors"))
            .unwrap()
            .len()
    };
    assert!(
        size(&int8) * 2 < size(model),
        "{} vs {}",
        size(&int8),
        size(model)
    );
    let files: Vec<String> = references()
        .iter()
        .map(|r| r.0.display().to_string())
        .collect();
    let texts = |m: &str| -> Vec<String> {
        let mut args = vec!["transcribe", "--model", m, "--format", "json"];
        args.extend(files.iter().map(|s| s.as_str()));
        ok(&args)
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["text"].to_string())
            .collect()
    };
    assert_eq!(texts(int8_s), texts(model_s));

    // A folder needs --out and --weights; the output must be another folder.
    assert!(fails(&["convert", model_s, "--weights", "int8"]).contains("--out"));
    assert!(fails(&["convert", model_s, "--out", int8_s]).contains("--weights"));
    assert!(fails(&["convert", model_s, "--out", model_s, "--weights", "f16"]).contains("differ"));
}

#[test]
fn a_word_language_model_is_trained_and_fused_into_the_beam_search() {
    let (dir, model) = trained();
    let model_s = model.to_str().unwrap();
    let (en, es) = (
        examples("en").join("manifest.json"),
        examples("es").join("manifest.json"),
    );
    // An LM of the examples' own transcripts (small text: the fallback discounts are needed).
    let lm = dir.path().join("examples.arpa");
    let lm_s = lm.to_str().unwrap();
    let err = fails(&[
        "lm",
        "train",
        "--manifest",
        en.to_str().unwrap(),
        es.to_str().unwrap(),
        "--out",
        lm_s,
    ]);
    assert!(err.contains("discount"), "{err}");
    assert!(!lm.exists(), "no half-written model");
    let report: Value = serde_json::from_str(&ok(&[
        "lm",
        "train",
        "--manifest",
        en.to_str().unwrap(),
        es.to_str().unwrap(),
        "--order",
        "3",
        "--discount-fallback",
        "--out",
        lm_s,
        "--json",
    ]))
    .unwrap();
    assert_eq!(report["sentences"], 12);
    assert_eq!(report["counts"].as_array().unwrap().len(), 3);
    let arpa = std::fs::read_to_string(&lm).unwrap();
    assert!(arpa.starts_with("\\data\\\nngram 1=") && arpa.trim_end().ends_with("\\end\\"));
    // Its own text is far more probable to it than other text.
    let ppl = |text: &Path| -> f64 {
        let v: Value = serde_json::from_str(&ok(&[
            "lm",
            "perplexity",
            "--lm",
            lm_s,
            "--text",
            text.to_str().unwrap(),
            "--json",
        ]))
        .unwrap();
        v["perplexity"].as_f64().unwrap()
    };
    let own = dir.path().join("own.txt");
    std::fs::write(
        &own,
        "i told her about the party\nmañana vamos a la playa\n",
    )
    .unwrap();
    let other = dir.path().join("other.txt");
    std::fs::write(
        &other,
        "the party told her about i\nplaya la a vamos mañana\n",
    )
    .unwrap();
    assert!(
        ppl(&own) * 3.0 < ppl(&other),
        "{} vs {}",
        ppl(&own),
        ppl(&other)
    );

    // With the LM, the examples still come out right, with their languages.
    for (manifest, lang) in [(&en, "en"), (&es, "es")] {
        let s: Value = serde_json::from_str(
            ok(&[
                "eval",
                "--model",
                model_s,
                "--manifest",
                manifest.to_str().unwrap(),
                "--lm",
                lm_s,
                "--json",
            ])
            .trim(),
        )
        .unwrap();
        assert_eq!(s["wer"], 0.0, "{lang}: {s}");
        assert_eq!(s["token_lid_accuracy"], 1.0, "{lang}: {s}");
    }
    // The LM decides: one that knows none of the words, weighted heavily, makes the decoder prefer fewer,
    // known-looking words over the acoustics' answer.
    let stranger = dir.path().join("stranger.txt");
    std::fs::write(&stranger, "zz yy xx\nxx yy zz\nyy zz xx\nzz zz yy\n").unwrap();
    let stranger_lm = dir.path().join("stranger.arpa.gz");
    ok(&[
        "lm",
        "train",
        "--text",
        stranger.to_str().unwrap(),
        "--discount-fallback",
        "--out",
        stranger_lm.to_str().unwrap(),
    ]);
    let wav = examples("en").join("audio/en_000001.wav");
    let plain = ok(&["transcribe", "--model", model_s, wav.to_str().unwrap()]);
    let fused = ok(&[
        "transcribe",
        "--model",
        model_s,
        "--lm",
        stranger_lm.to_str().unwrap(),
        "--lm-alpha",
        "3",
        "--lm-unk",
        "-30",
        wav.to_str().unwrap(),
    ]);
    assert!(plain.contains("i told her about the party"), "{plain}");
    assert_ne!(plain.trim(), fused.trim());
    assert!(
        fused.split_whitespace().count() < plain.split_whitespace().count(),
        "{fused}"
    );

    // A model folder can carry its LM and weights: it then decodes with them unless told --no-lm, and a
    // converted copy keeps them.
    let with_lm = dir.path().join("with_lm");
    ok(&[
        "convert",
        model_s,
        "--out",
        with_lm.to_str().unwrap(),
        "--weights",
        "f32",
        "--lm",
        stranger_lm.to_str().unwrap(),
        "--lm-alpha",
        "3",
        "--lm-unk",
        "-30",
    ]);
    assert!(with_lm.join("lm.arpa.gz").is_file());
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(with_lm.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["decoding"]["beam"], 32);
    assert_eq!(cfg["decoding"]["lm_alpha"], 3.0);
    let with_lm_s = with_lm.to_str().unwrap();
    assert_eq!(
        ok(&["transcribe", "--model", with_lm_s, wav.to_str().unwrap()]),
        fused
    );
    assert_eq!(
        ok(&[
            "transcribe",
            "--model",
            with_lm_s,
            "--no-lm",
            wav.to_str().unwrap()
        ]),
        plain
    );
    let int8 = dir.path().join("with_lm_int8");
    ok(&[
        "convert",
        with_lm_s,
        "--out",
        int8.to_str().unwrap(),
        "--weights",
        "int8",
    ]);
    assert!(int8.join("lm.arpa.gz").is_file());
    let err = fails(&[
        "transcribe",
        "--model",
        model_s,
        "--lm-alpha",
        "0.3",
        wav.to_str().unwrap(),
    ]);
    assert!(err.contains("--lm"), "{err}");

    // Errors: one line, naming the file (and line).
    let err = fails(&[
        "transcribe",
        "--model",
        model_s,
        "--lm",
        lm_s,
        "--beam",
        "1",
        wav.to_str().unwrap(),
    ]);
    assert!(err.contains("--beam"), "{err}");
    let bad = dir.path().join("bad.arpa");
    std::fs::write(
        &bad,
        "\\data\\\nngram 1=2\n\n\\1-grams:\n-1.0\t<s>\nbroken line here\n\\end\\\n",
    )
    .unwrap();
    let err = fails(&[
        "transcribe",
        "--model",
        model_s,
        "--lm",
        bad.to_str().unwrap(),
        wav.to_str().unwrap(),
    ]);
    assert!(err.contains("bad.arpa:6"), "{err}");
    let reserved = dir.path().join("reserved.json");
    std::fs::write(
        &reserved,
        "{\"audio_filepath\":\"a.wav\",\"text\":\"hola\"}\n{\"audio_filepath\":\"b.wav\",\"text\":\"a </s> b\"}\n",
    )
    .unwrap();
    let err = fails(&[
        "lm",
        "train",
        "--manifest",
        reserved.to_str().unwrap(),
        "--out",
        lm_s,
    ]);
    assert!(err.contains("reserved.json:2:"), "{err}");
    let err = fails(&[
        "lm",
        "perplexity",
        "--lm",
        dir.path().join("missing.arpa").to_str().unwrap(),
        "--text",
        own.to_str().unwrap(),
    ]);
    assert!(err.contains("missing.arpa"), "{err}");
}
