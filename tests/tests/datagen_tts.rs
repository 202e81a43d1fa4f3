//! End-to-end test of `mezcla datagen tts` with the real engines. espeak-ng and flite are not on a fresh
//! machine, so the test is ignored in the test command; run it with `cargo test -p mezcla-tests -- --ignored`
//! after `../shared/tools/tts-packages.sh`.

use mezcla_datagen::audio::read_wav;
use mezcla_tests::{fails, ok};
use serde_json::Value;

#[test]
#[ignore = "needs espeak-ng and flite (../shared/tools/tts-packages.sh)"]
fn tts_corpora_from_espeak_ng_and_flite() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("es.txt");
    std::fs::write(
        &text,
        "el niño está en la escuela\n\nmañana vamos a la playa\nqué bonito día\n",
    )
    .unwrap();
    let out = dir.path().join("es");
    let args = [
        "datagen",
        "tts",
        "--lang",
        "es",
        "--voices",
        "es,es-419",
        "--variants",
        "m1,f2",
        "--speeds",
        "140,170",
        "--pitches",
        "30,70",
        "--seed",
        "3",
        "--json",
        "--text",
        text.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let summary: Value = serde_json::from_str(&ok(&args)).unwrap();
    assert_eq!(summary["utterances"], 3, "the blank line is not a sentence");
    let manifest = std::fs::read_to_string(out.join("manifest.json")).unwrap();
    let lines: Vec<Value> = manifest
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["text"], "el niño está en la escuela");
    assert_eq!(lines[2]["audio_filepath"], "audio/es_000003.wav");
    for l in &lines {
        assert_eq!(l["lang"], "es");
        let voice = l["voice"].as_str().unwrap();
        assert!(voice.ends_with("+m1") || voice.ends_with("+f2"), "{voice}");
        let audio = read_wav(&out.join(l["audio_filepath"].as_str().unwrap())).unwrap();
        assert_eq!(audio.sample_rate, 16000);
        assert!((audio.duration() - l["duration"].as_f64().unwrap()).abs() < 1e-9);
        assert!(audio.duration() > 0.5 && audio.samples.iter().any(|s| s.abs() > 0.05));
        assert!(
            audio.samples.iter().all(|s| s.abs() < 0.9999),
            "amplitude 90 does not clip"
        );
    }
    // The same seed again: the WAVs are kept, the manifest is the same.
    let again: Value = serde_json::from_str(&ok(&args)).unwrap();
    assert_eq!(again["resumed"], 3);
    assert_eq!(
        std::fs::read_to_string(out.join("manifest.json")).unwrap(),
        manifest
    );

    let en = dir.path().join("en.txt");
    std::fs::write(&en, "hello there my friend\n").unwrap();
    let fl = dir.path().join("fl");
    ok(&[
        "datagen",
        "tts",
        "--engine",
        "flite",
        "--lang",
        "en",
        "--voices",
        "slt,kal",
        "--text",
        en.to_str().unwrap(),
        "--out",
        fl.to_str().unwrap(),
    ]);
    let line: Value = serde_json::from_str(
        std::fs::read_to_string(fl.join("manifest.json"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    assert_eq!(line["engine"], "flite");
    let err = fails(&[
        "datagen",
        "tts",
        "--engine",
        "flite",
        "--lang",
        "en",
        "--voices",
        "slt",
        "--pitches",
        "50",
        "--text",
        en.to_str().unwrap(),
        "--out",
        fl.to_str().unwrap(),
    ]);
    assert!(err.contains("flite has no pitch"), "{err}");
}
