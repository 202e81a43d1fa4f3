//! End-to-end tests of `mezcla datagen cs` on the example corpora: output format, determinism, resume, shards, errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mezcla_datagen::audio::{read_wav, read_wav_at};
use mezcla_datagen::cs::synth::trim_zeros;
use mezcla_tests::{example_manifest_arg, fails, mezcla, ok, root};
use serde_json::Value;

fn en() -> String {
    example_manifest_arg("en")
}
fn es() -> String {
    example_manifest_arg("es")
}

/// `datagen cs` on both example corpora into `out`, with extra arguments.
fn cs(out: &Path, extra: &[&str]) -> String {
    let (en, es) = (en(), es());
    let out = out.display().to_string();
    let mut args = vec![
        "datagen",
        "cs",
        "--manifest",
        &en,
        "--manifest",
        &es,
        "--out",
        &out,
    ];
    args.extend_from_slice(extra);
    ok(&args)
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every file under `dir` except progress logs, with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                if p.file_name().unwrap() != ".progress" {
                    stack.push(p);
                }
            } else {
                files.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    files
}

#[test]
fn output_has_nemo_fields_and_segment_times_match_the_audio() {
    let dir = tempfile::tempdir().unwrap();
    cs(dir.path(), &["--hours", "0.03", "--seed", "5"]);
    let manifest = lines(&dir.path().join("manifest.json"));
    assert!(!manifest.is_empty());
    let plan = lines(&dir.path().join("plan.json"));
    assert_eq!(plan.len(), manifest.len());
    let mut total_planned = 0.0;
    for (k, (m, p)) in manifest.iter().zip(&plan).enumerate() {
        let keys: Vec<&String> = m.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "audio_filepath",
                "duration",
                "text",
                "language_ids",
                "original_texts",
                "original_paths",
                "original_durations",
                "segment_times"
            ]
        );
        assert_eq!(m["audio_filepath"], format!("audio/{k}.wav"));
        assert_eq!(p["uid"], k);
        let planned: f64 = p["total_duration"].as_f64().unwrap();
        assert!((16.0..=19.0).contains(&planned), "{planned}");
        total_planned += planned;
        let audio = read_wav(&dir.path().join(m["audio_filepath"].as_str().unwrap())).unwrap();
        assert_eq!(audio.sample_rate, 16000);
        assert!((m["duration"].as_f64().unwrap() - audio.duration()).abs() < 1e-9);
        let ints: Vec<i32> = audio
            .samples
            .iter()
            .map(|s| (s * 32768.0).round() as i32)
            .collect();

        let text = m["text"].as_array().unwrap();
        let times = m["segment_times"].as_array().unwrap();
        let paths = m["original_paths"].as_array().unwrap();
        assert_eq!(text.len(), times.len());
        assert_eq!(text.len(), paths.len());
        let mut prev_end = 0usize;
        for (i, seg) in text.iter().enumerate() {
            assert_eq!(seg["str"], m["original_texts"][i]);
            assert_eq!(seg["lang"], m["language_ids"][i]);
            let start = (times[i][0].as_f64().unwrap() * 16000.0).round() as usize;
            let end = (times[i][1].as_f64().unwrap() * 16000.0).round() as usize;
            // Pauses: 20 ms before the first segment, 100 ms between segments, silence only.
            let pause = if i == 0 { 320 } else { 1600 };
            assert_eq!(start, prev_end + pause, "segment {i} of sample {k}");
            assert!(ints[prev_end..start].iter().all(|&v| v == 0));
            // The segment is its source, resampled and trimmed, peak-normalised to exactly 15000.
            let source = read_wav_at(Path::new(paths[i].as_str().unwrap()), 16000).unwrap();
            assert_eq!(end - start, trim_zeros(&source.samples).len());
            let peak = ints[start..end].iter().map(|v| v.abs()).max().unwrap();
            assert_eq!(peak, 15000, "segment {i} of sample {k}");
            prev_end = end;
        }
        assert_eq!(ints.len(), prev_end + 320, "20 ms of silence at the end");
        assert!(ints[prev_end..].iter().all(|&v| v == 0));
    }
    assert!(total_planned >= 0.03 * 3600.0);
}

#[test]
fn the_same_seed_gives_identical_output_and_another_seed_does_not() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let c = tempfile::tempdir().unwrap();
    cs(a.path(), &["--hours", "0.05", "--seed", "11"]);
    cs(
        b.path(),
        &["--hours", "0.05", "--seed", "11", "--jobs", "1"],
    );
    cs(c.path(), &["--hours", "0.05", "--seed", "12"]);
    let (sa, sb, sc) = (snapshot(a.path()), snapshot(b.path()), snapshot(c.path()));
    assert!(sa.len() > 5);
    assert_eq!(
        sa, sb,
        "output does not depend on the number of threads or the run"
    );
    assert_ne!(
        sa[Path::new("manifest.json")],
        sc[Path::new("manifest.json")]
    );
}

#[test]
fn an_interrupted_run_resumes_to_the_same_result() {
    let full = tempfile::tempdir().unwrap();
    cs(full.path(), &["--hours", "0.1", "--seed", "2"]);
    let want = snapshot(full.path());

    // Damage a finished copy the way a killed run leaves it: no manifest, missing WAVs, a half-written
    // progress line and a leftover temporary WAV.
    let dir = tempfile::tempdir().unwrap();
    cs(dir.path(), &["--hours", "0.1", "--seed", "2"]);
    std::fs::remove_file(dir.path().join("manifest.json")).unwrap();
    for uid in [1, 4, 7] {
        std::fs::remove_file(dir.path().join(format!("audio/{uid}.wav"))).unwrap();
    }
    let log = dir.path().join(".progress/all.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::write(&log, &text[..text.len() - 40]).unwrap();
    std::fs::write(dir.path().join("audio/.9.wav.x1y2z3.tmp"), b"RIFF").unwrap();
    let summary: Value = serde_json::from_str(&cs(
        dir.path(),
        &["--hours", "0.1", "--seed", "2", "--json"],
    ))
    .unwrap();
    assert!(summary["resumed"].as_u64().unwrap() > 0);
    assert!(
        summary["synthesized"].as_u64().unwrap() >= 4,
        "3 deleted WAVs and the cut line: {summary}"
    );
    assert_eq!(snapshot(dir.path()), want);
}

#[test]
fn a_killed_process_leaves_only_whole_files_and_resumes() {
    let hours = "0.8";
    let full = tempfile::tempdir().unwrap();
    cs(full.path(), &["--hours", hours, "--seed", "4"]);
    let want = snapshot(full.path());

    let dir = tempfile::tempdir().unwrap();
    let (en, es) = (en(), es());
    let mut child = mezcla()
        .args([
            "datagen",
            "cs",
            "--manifest",
            &en,
            "--manifest",
            &es,
            "--hours",
            hours,
            "--seed",
            "4",
            "--jobs",
            "1",
        ])
        .arg("--out")
        .arg(dir.path())
        .spawn()
        .unwrap();
    let log = dir.path().join(".progress/all.jsonl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_to_string(&log)
        .map(|t| t.lines().count())
        .unwrap_or(0)
        < 3
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Whatever was there at the kill: every visible WAV is complete.
    for e in std::fs::read_dir(dir.path().join("audio")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if !name.starts_with('.') {
            read_wav(&p).unwrap_or_else(|err| panic!("truncated WAV after kill: {err}"));
        }
    }
    assert!(
        !dir.path().join("manifest.json").exists(),
        "the run was killed before it could finish"
    );
    cs(dir.path(), &["--hours", hours, "--seed", "4"]);
    assert_eq!(snapshot(dir.path()), want);
}

#[test]
fn shards_add_up_to_the_whole_job() {
    let full = tempfile::tempdir().unwrap();
    cs(full.path(), &["--hours", "0.08", "--seed", "9"]);
    let dir = tempfile::tempdir().unwrap();
    cs(
        dir.path(),
        &["--hours", "0.08", "--seed", "9", "--shard", "1/3"],
    );
    cs(
        dir.path(),
        &["--hours", "0.08", "--seed", "9", "--shard", "3/3"],
    );
    let part = lines(&dir.path().join("manifest-1-of-3.json"));
    assert!(part.iter().all(|l| {
        let uid: u64 = l["audio_filepath"].as_str().unwrap()[6..]
            .trim_end_matches(".wav")
            .parse()
            .unwrap();
        uid.is_multiple_of(3)
    }));
    cs(
        dir.path(),
        &["--hours", "0.08", "--seed", "9", "--shard", "2/3"],
    );
    let summary: Value = serde_json::from_str(&cs(
        dir.path(),
        &["--hours", "0.08", "--seed", "9", "--json"],
    ))
    .unwrap();
    assert_eq!(
        summary["synthesized"], 0,
        "every sample was made by a shard: {summary}"
    );
    let merged = std::fs::read(dir.path().join("manifest.json")).unwrap();
    assert_eq!(
        merged,
        std::fs::read(full.path().join("manifest.json")).unwrap()
    );
}

#[test]
fn the_two_steps_run_separately_and_accept_a_nemo_intermediate_manifest() {
    let full = tempfile::tempdir().unwrap();
    cs(full.path(), &["--hours", "0.03", "--seed", "6"]);
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("elsewhere/plan.json");
    let plan_s = plan.display().to_string();
    let out = cs(
        dir.path().join("out").as_path(),
        &[
            "--hours", "0.03", "--seed", "6", "--step", "plan", "--plan", &plan_s,
        ],
    );
    assert!(out.contains("planned"), "{out}");
    assert!(!dir.path().join("out/manifest.json").exists());
    // A NeMo intermediate manifest with paths relative to its folder, as a user might write it.
    let nemo = dir.path().join("elsewhere/nemo.json");
    let text = std::fs::read_to_string(&plan).unwrap();
    let examples = root().join("examples").display().to_string();
    std::fs::create_dir_all(dir.path().join("elsewhere/examples")).unwrap();
    for lang in ["en", "es"] {
        std::os::unix::fs::symlink(
            root().join("examples").join(lang),
            dir.path().join("elsewhere/examples").join(lang),
        )
        .unwrap();
    }
    std::fs::write(&nemo, text.replace(&format!("{examples}/"), "examples/")).unwrap();
    let out = dir.path().join("out2");
    ok(&[
        "datagen",
        "cs",
        "--step",
        "audio",
        "--plan",
        nemo.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let got = lines(&out.join("manifest.json"));
    let want = lines(&full.path().join("manifest.json"));
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g["text"], w["text"]);
        assert_eq!(g["segment_times"], w["segment_times"]);
        assert_eq!(g["duration"], w["duration"]);
    }
}

#[test]
fn db_norm_pauses_and_sample_rate_are_settable() {
    let dir = tempfile::tempdir().unwrap();
    cs(
        dir.path(),
        &[
            "--hours",
            "0.01",
            "--db-norm",
            "--pause-start",
            "0",
            "--pause-join",
            "250",
            "--pause-end",
            "50",
            "--sample-rate",
            "8000",
        ],
    );
    let m = &lines(&dir.path().join("manifest.json"))[0];
    let audio = read_wav(&dir.path().join(m["audio_filepath"].as_str().unwrap())).unwrap();
    assert_eq!(audio.sample_rate, 8000);
    let times = m["segment_times"].as_array().unwrap();
    assert_eq!(times[0][0].as_f64().unwrap(), 0.0);
    let gap = times[1][0].as_f64().unwrap() - times[0][1].as_f64().unwrap();
    assert!((gap - 0.25).abs() < 1e-9, "{gap}");
    assert!((audio.duration() - times.last().unwrap()[1].as_f64().unwrap() - 0.05).abs() < 1e-9);
    // Each segment sits at -25 dBFS RMS.
    for t in times {
        let (s, e) = (
            (t[0].as_f64().unwrap() * 8000.0).round() as usize,
            (t[1].as_f64().unwrap() * 8000.0).round() as usize,
        );
        let x = &audio.samples[s..e];
        let rms = (x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / x.len() as f64).sqrt();
        assert!(
            (20.0 * rms.log10() + 25.0).abs() < 0.1,
            "{}",
            20.0 * rms.log10()
        );
    }
}

#[test]
fn bad_inputs_stop_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("out").display().to_string();
    let (en, es) = (en(), es());

    let err = fails(&[
        "datagen",
        "cs",
        "--manifest",
        "en=/no/such/manifest.json",
        "--manifest",
        &es,
        "--out",
        &out,
    ]);
    assert!(err.contains("/no/such/manifest.json"), "{err}");

    let broken = d.join("broken.json");
    let good_line = std::fs::read_to_string(root().join("examples/en/manifest.json")).unwrap();
    let first = good_line.lines().next().unwrap().replace(
        "audio/",
        &format!("{}/examples/en/audio/", root().display()),
    );
    std::fs::write(
        &broken,
        format!("{first}\n{{\"audio_filepath\": \"x.wav\", \"duration\": 1.0\n"),
    )
    .unwrap();
    let arg = format!("en={}", broken.display());
    let err = fails(&[
        "datagen",
        "cs",
        "--manifest",
        &arg,
        "--manifest",
        &es,
        "--out",
        &out,
    ]);
    assert!(err.contains(&format!("{}:2:", broken.display())), "{err}");

    let long = d.join("long.json");
    std::fs::write(
        &long,
        format!(
            "{first}\n{{\"audio_filepath\": \"x.wav\", \"duration\": 25.0, \"text\": \"x\"}}\n"
        ),
    )
    .unwrap();
    let arg = format!("en={}", long.display());
    let err = fails(&[
        "datagen",
        "cs",
        "--manifest",
        &arg,
        "--manifest",
        &es,
        "--out",
        &out,
    ]);
    assert!(
        err.contains(&format!("{}:2:", long.display())) && err.contains("longer than"),
        "{err}"
    );

    let empty = d.join("empty.json");
    std::fs::write(&empty, "\n").unwrap();
    let arg = format!("es={}", empty.display());
    let err = fails(&[
        "datagen",
        "cs",
        "--manifest",
        &en,
        "--manifest",
        &arg,
        "--out",
        &out,
    ]);
    assert!(
        err.contains("empty.json") && err.contains("no entries"),
        "{err}"
    );

    let err = fails(&[
        "datagen",
        "cs",
        "--manifest",
        &en,
        "--manifest",
        &es,
        "--out",
        &out,
        "--min-duration",
        "20",
    ]);
    assert!(err.contains("must be smaller than --max-duration"), "{err}");

    let err = fails(&[
        "datagen",
        "cs",
        "--manifest",
        &en,
        "--manifest",
        &es,
        "--out",
        &out,
        "--prob",
        "en=0.9",
        "--prob",
        "es=0.3",
    ]);
    assert!(err.contains("sum to 1"), "{err}");

    let err = fails(&[
        "datagen",
        "cs",
        "--manifest",
        &en,
        "--manifest",
        &es,
        "--out",
        &out,
        "--min-duration",
        "17",
        "--max-duration",
        "17.5",
    ]);
    assert!(err.contains("no utterance of at most"), "{err}");

    // An input WAV that is missing: named, and no manifest is written.
    let missing = d.join("missing.json");
    std::fs::write(
        &missing,
        "{\"audio_filepath\": \"gone.wav\", \"duration\": 2.0, \"text\": \"x\"}\n",
    )
    .unwrap();
    let arg = format!("en={}", missing.display());
    let out2 = d.join("out2");
    let err = fails(&[
        "datagen",
        "cs",
        "--manifest",
        &arg,
        "--out",
        out2.to_str().unwrap(),
        "--hours",
        "0.01",
    ]);
    assert!(
        err.contains(&d.join("gone.wav").display().to_string()),
        "{err}"
    );
    assert!(!out2.join("manifest.json").exists());

    // A folder made with other settings is not mixed with a new run.
    cs(
        d.join("out3").as_path(),
        &["--hours", "0.01", "--seed", "1"],
    );
    let out3 = d.join("out3").display().to_string();
    let err = fails(&[
        "datagen",
        "cs",
        "--manifest",
        &en,
        "--manifest",
        &es,
        "--out",
        &out3,
        "--hours",
        "0.01",
        "--seed",
        "2",
    ]);
    assert!(err.contains("other inputs or settings"), "{err}");

    let err = mezcla()
        .args([
            "datagen",
            "cs",
            "--manifest",
            &en,
            "--out",
            &out,
            "--shard",
            "3/2",
        ])
        .output()
        .unwrap();
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("K/N"));
}

#[test]
fn more_than_two_languages_mix() {
    let dir = tempfile::tempdir().unwrap();
    // A third "language": the English examples again under another id.
    let third = format!("xx={}", root().join("examples/en/manifest.json").display());
    let (en, es) = (en(), es());
    let out = dir.path().display().to_string();
    ok(&[
        "datagen",
        "cs",
        "--manifest",
        &en,
        "--manifest",
        &es,
        "--manifest",
        &third,
        "--out",
        &out,
        "--hours",
        "0.1",
        "--prefer-unused",
        "--prob",
        "en=0.5",
        "--prob",
        "es=0.25",
        "--prob",
        "xx=0.25",
    ]);
    let m = lines(&dir.path().join("manifest.json"));
    for lang in ["en", "es", "xx"] {
        assert!(
            m.iter().any(|l| l["language_ids"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x == lang)),
            "{lang}"
        );
    }
    // With prefer-unused, the first three segments of a sample use three different languages.
    for l in &m {
        let ids = l["language_ids"].as_array().unwrap();
        assert!(
            ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2],
            "{ids:?}"
        );
    }
}

#[test]
fn tts_without_the_engine_says_how_to_install_it() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("s.txt");
    std::fs::write(&text, "hello there\n").unwrap();
    let out = mezcla()
        .env("PATH", dir.path())
        .args(["datagen", "tts", "--lang", "en", "--voices", "en-us"])
        .arg("--text")
        .arg(&text)
        .arg("--out")
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("espeak-ng is not installed") && err.contains("apt-get install espeak-ng"),
        "{err}"
    );
}
