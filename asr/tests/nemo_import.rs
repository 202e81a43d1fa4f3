//! `.nemo` import against NeMo 3.0 on tiny random-weight checkpoints (asr/tests/fixtures/make_nemo_fixtures.py):
//! CTC log-probs, and RNN-T joint log-probs along greedy decoding, within 1e-4; greedy texts and ids exactly;
//! conversion, tar.gz, the CLI, and one-line errors.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};
use mezcla_asr::logprobs::{utterance_log_probs, FRAMES_KEY, LOG_PROBS_KEY};
use mezcla_asr::model::{AsrModel, DecodeOptions};
use mezcla_asr::nemo::{
    self, char_vocabulary, legacy_from_version, load_nemo, NemoOptions, VocabularyKind,
};
use mezcla_datagen::audio::read_wav_at;
use serde::Deserialize;

const TOLERANCE: f32 = 1e-4;

#[derive(Deserialize)]
struct Reference {
    models: BTreeMap<String, ModelRef>,
}

#[derive(Deserialize)]
struct ModelRef {
    nemo: String,
    log_probs: String,
    legacy_frontend: bool,
    classes: usize,
    min_top2_gap: f64,
    files: BTreeMap<String, FileRef>,
    /// "rnnt" for RNN-T heads; absent for CTC.
    #[serde(default)]
    head: Option<String>,
    /// RNN-T: the most tokens greedy decoding emits at one frame.
    #[serde(default)]
    max_symbols: Option<usize>,
}

#[derive(Deserialize)]
struct FileRef {
    wav: String,
    frames: usize,
    text: String,
    /// CTC: the greedy ids.
    #[serde(default)]
    greedy_ids: Vec<u32>,
    /// RNN-T: the emitted tokens, the evaluated steps and the most tokens of one frame.
    #[serde(default)]
    tokens: Vec<u32>,
    #[serde(default)]
    steps: usize,
    #[serde(default)]
    most_tokens_in_a_frame: usize,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nemo")
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn reference() -> Reference {
    let text = std::fs::read_to_string(fixtures().join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn model_ref(name: &str) -> ModelRef {
    reference().models.remove(name).unwrap()
}

fn nemo_path(name: &str) -> PathBuf {
    fixtures().join(format!("{name}.nemo"))
}

fn audio(model: &AsrModel, f: &FileRef) -> Vec<f32> {
    read_wav_at(&workspace().join(&f.wav), model.sample_rate())
        .unwrap()
        .samples
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Every file of the model: log-probs within the tolerance over the same frames, greedy ids and text equal
/// (mezcla's text is whitespace-trimmed by design; NeMo's texts here have no outer whitespace anyway).
/// Returns the largest difference.
fn check_model(model: &AsrModel, m: &ModelRef) -> f32 {
    // The text comparison is only meaningful when no frame is a near-tie at the tolerance.
    assert!(m.min_top2_gap > 10.0 * f64::from(TOLERANCE));
    let refs = candle_core::safetensors::load(fixtures().join(&m.log_probs), &Device::Cpu).unwrap();
    let mut worst = 0f32;
    for (stem, f) in &m.files {
        let samples = audio(model, f);
        let lp = utterance_log_probs(model, &samples).unwrap();
        let want = &refs[stem];
        assert_eq!(lp.dims(), want.dims(), "{}: {stem}", m.nemo);
        assert_eq!(lp.dims(), &[f.frames, m.classes]);
        let d = max_diff(&lp, want);
        assert!(
            d <= TOLERANCE,
            "{}: {stem}: log-probs differ by {d}",
            m.nemo
        );
        worst = worst.max(d);
        let t = model
            .transcribe(&samples, &DecodeOptions::default())
            .unwrap();
        assert_eq!(t.token_ids(), f.greedy_ids, "{}: {stem}", m.nemo);
        assert_eq!(t.text, f.text.trim(), "{}: {stem}", m.nemo);
    }
    worst
}

/// Every file of an RNN-T model: the joint's log-probabilities at every step of greedy decoding within the
/// tolerance, at the same frames; the tokens and the text exactly. Returns the largest difference.
fn check_transducer(model: &AsrModel, m: &ModelRef) -> f32 {
    assert_eq!(m.head.as_deref(), Some("rnnt"));
    assert!(m.min_top2_gap > 10.0 * f64::from(TOLERANCE));
    let cfg = model.config.transducer.as_ref().expect("an RNN-T model");
    assert_eq!(cfg.max_symbols, m.max_symbols, "{}", m.nemo);
    let refs = candle_core::safetensors::load(fixtures().join(&m.log_probs), &Device::Cpu).unwrap();
    let mut worst = 0f32;
    for (stem, f) in &m.files {
        // The fixtures hit the cap on tokens per frame, so that it is tested.
        assert_eq!(Some(f.most_tokens_in_a_frame), m.max_symbols, "{stem}");
        let samples = audio(model, f);
        let path = model.transducer_path(&samples, true).unwrap();
        let want_frames = refs[&format!("{stem}.frames")].to_vec1::<i64>().unwrap();
        let got_frames: Vec<i64> = path.step_frames.iter().map(|&t| t as i64).collect();
        assert_eq!(got_frames, want_frames, "{}: {stem}: step frames", m.nemo);
        assert_eq!(path.step_frames.len(), f.steps);
        assert!(*path.step_frames.last().unwrap() < f.frames);
        let got = Tensor::from_vec(path.log_probs, (f.steps, m.classes), &Device::Cpu).unwrap();
        let d = max_diff(&got, &refs[stem]);
        assert!(
            d <= TOLERANCE,
            "{}: {stem}: log-probs differ by {d}",
            m.nemo
        );
        worst = worst.max(d);
        let tokens: Vec<u32> = path.tokens.iter().map(|&(id, _)| id).collect();
        assert_eq!(tokens, f.tokens, "{}: {stem}", m.nemo);
        let t = model
            .transcribe(&samples, &DecodeOptions::default())
            .unwrap();
        assert_eq!(t.token_ids(), f.tokens, "{}: {stem}", m.nemo);
        assert_eq!(t.text, f.text.trim(), "{}: {stem}", m.nemo);
    }
    worst
}

#[test]
fn agg_rnnt_matches_nemo() {
    let m = model_ref("agg_rnnt");
    let ckpt = nemo::read_nemo(&nemo_path("agg_rnnt"), &NemoOptions::default()).unwrap();
    assert!(ckpt.target.ends_with("EncDecRNNTBPEModel"));
    assert_eq!(
        ckpt.vocabulary,
        VocabularyKind::Aggregate(vec!["en".into(), "es".into()])
    );
    let t = ckpt.config.transducer.as_ref().unwrap();
    assert_eq!(
        (t.pred_rnn_layers, t.pred_hidden, t.joint_hidden),
        (2, 24, 20)
    );
    // Dropout before the output layer: NeMo stores it as joint_net.2.
    assert!(ckpt.tensors.contains_key("joint.joint_net.2.weight"));
    let model = load_nemo(&nemo_path("agg_rnnt"), &NemoOptions::default()).unwrap();
    assert!(model.is_transducer());
    let d = check_transducer(&model, &m);
    eprintln!("agg_rnnt: max |Δ log-prob| = {d:e}");
    // Words carry the language of their tokens' range, as with CTC.
    let f = &m.files["en_000001"];
    let t = model
        .transcribe(&audio(&model, f), &DecodeOptions::default())
        .unwrap();
    assert!(t.words.iter().any(|w| w.lang == "en") && t.words.iter().any(|w| w.lang == "es"));
    // The candle encoder (no fused CPU path) gives the same decoding.
    let plain = load_nemo(&nemo_path("agg_rnnt"), &NemoOptions::default())
        .unwrap()
        .without_cpu_inference();
    check_transducer(&plain, &m);
}

#[test]
fn hybrid_rnnt_head_matches_nemo() {
    // NeMo decodes hybrids with their RNN-T head by default, and so does mezcla.
    let m = model_ref("hybrid_rnnt");
    let ckpt = nemo::read_nemo(&nemo_path("hybrid_rnnt"), &NemoOptions::default()).unwrap();
    assert!(ckpt.target.ends_with("EncDecHybridRNNTCTCBPEModel"));
    assert!(ckpt.tensors.keys().all(|k| k.starts_with("encoder.")
        || k.starts_with("decoder.prediction.")
        || k.starts_with("joint.")));
    let model = load_nemo(&nemo_path("hybrid_rnnt"), &NemoOptions::default()).unwrap();
    let d = check_transducer(&model, &m);
    eprintln!("hybrid_rnnt: max |Δ log-prob| = {d:e}");
}

#[test]
fn char_rnnt_without_a_blank_embedding_matches_nemo() {
    let m = model_ref("char_rnnt");
    let ckpt = nemo::read_nemo(&nemo_path("char_rnnt"), &NemoOptions::default()).unwrap();
    assert_eq!(ckpt.vocabulary, VocabularyKind::Char);
    // blank_as_pad false: one embedding row per label, none for the blank.
    assert_eq!(
        ckpt.tensors["decoder.prediction.embed.weight"].dims(),
        &[28, 16]
    );
    let model = load_nemo(&nemo_path("char_rnnt"), &NemoOptions::default()).unwrap();
    let d = check_transducer(&model, &m);
    eprintln!("char_rnnt: max |Δ log-prob| = {d:e}");
}

#[test]
fn interpolated_sizes_resolve_as_in_omegaconf() {
    // NeMo's own configs give the RNN-T sizes as `${model_defaults.*}`; its save_to resolves them, hand-made
    // archives may not.
    let dir = tempfile::tempdir().unwrap();
    let path = edited("agg_rnnt", dir.path(), |y| {
        let from = "    pred_hidden: 24\n    pred_rnn_layers: 2\n";
        let out = y
            .replacen(
                from,
                "    pred_hidden: ${model_defaults.pred_hidden}\n    pred_rnn_layers: 2\n",
                1,
            )
            .replacen(
                "    joint_hidden: 20\n",
                "    joint_hidden: ${model_defaults.joint_hidden}\n",
                1,
            )
            // An experiment config's path from its top, and a chain of two.
            .replacen(
                "  enc_hidden: 40\n",
                "  enc_hidden: ${model.encoder.d_model}\n",
                1,
            )
            .replacen(
                "    encoder_hidden: 40\n",
                "    encoder_hidden: ${model_defaults.enc_hidden}\n",
                1,
            );
        assert_eq!(out.matches("${").count(), 4, "an edit did not apply");
        out
    });
    let model = load_nemo(&path, &NemoOptions::default()).unwrap();
    check_transducer(&model, &model_ref("agg_rnnt"));
    let broken = edited("agg_rnnt", dir.path(), |y| {
        y.replacen(
            "    joint_hidden: 20\n",
            "    joint_hidden: ${model_defaults.nope}\n",
            1,
        )
    });
    load_error(&broken, "model_defaults.nope");
}

#[test]
fn char_ctc_matches_nemo() {
    let m = model_ref("char_ctc");
    let ckpt = nemo::read_nemo(&nemo_path("char_ctc"), &NemoOptions::default()).unwrap();
    assert_eq!(ckpt.vocabulary, VocabularyKind::Char);
    assert!(!ckpt.config.legacy_frontend);
    assert_eq!(ckpt.nemo_version.as_deref(), Some("3.0.0"));
    let model = load_nemo(&nemo_path("char_ctc"), &NemoOptions::default()).unwrap();
    assert_eq!(model.tokenizer.vocab_size(), 28);
    assert_eq!(model.tokenizer.id_to_piece(0).unwrap(), "▁");
    let d = check_model(&model, &m);
    eprintln!("char_ctc: max |Δ log-prob| = {d:e}");
}

#[test]
fn bpe_ctc_matches_nemo() {
    let m = model_ref("bpe_ctc");
    let ckpt = nemo::read_nemo(&nemo_path("bpe_ctc"), &NemoOptions::default()).unwrap();
    assert_eq!(ckpt.vocabulary, VocabularyKind::SentencePiece);
    assert!(!ckpt.config.encoder.untie_biases && !ckpt.config.encoder.xscaling);
    let model = load_nemo(&nemo_path("bpe_ctc"), &NemoOptions::default()).unwrap();
    let d = check_model(&model, &m);
    eprintln!("bpe_ctc: max |Δ log-prob| = {d:e}");
}

#[test]
fn agg_ctc_legacy_matches_nemo() {
    let m = model_ref("agg_ctc_legacy");
    assert!(m.legacy_frontend);
    let ckpt = nemo::read_nemo(&nemo_path("agg_ctc_legacy"), &NemoOptions::default()).unwrap();
    assert_eq!(
        ckpt.vocabulary,
        VocabularyKind::Aggregate(vec!["en".into(), "es".into()])
    );
    assert_eq!(ckpt.nemo_version.as_deref(), Some("1.23.0"));
    assert!(
        ckpt.config.legacy_frontend,
        "nemo_version 1.23.0 means the old front-end"
    );
    let model = load_nemo(&nemo_path("agg_ctc_legacy"), &NemoOptions::default()).unwrap();
    assert_eq!(model.tokenizer.langs(), ["en", "es"]);
    // The languages come from the config; --lang is for monolingual models only.
    let agg_lang = NemoOptions {
        lang: Some("es".into()),
        ..Default::default()
    };
    let e = nemo::read_nemo(&nemo_path("agg_ctc_legacy"), &agg_lang)
        .err()
        .unwrap();
    assert!(format!("{e:#}").contains("tokenizer.langs"), "{e:#}");
    let d = check_model(&model, &m);
    eprintln!("agg_ctc_legacy: max |Δ log-prob| = {d:e}");
    // Words carry the language of their tokens' range.
    let f = &m.files["en_000001"];
    let t = model
        .transcribe(&audio(&model, f), &DecodeOptions::default())
        .unwrap();
    assert!(t.words.iter().any(|w| w.lang == "en") && t.words.iter().any(|w| w.lang == "es"));
}

#[test]
fn hybrid_ctc_head_matches_nemo() {
    let path = nemo_path("hybrid_ctc_head");
    // NeMo decodes hybrids with their RNN-T head by default: the CTC head is opt-in.
    assert!(load_nemo(&path, &NemoOptions::default())
        .unwrap()
        .is_transducer());
    let opts = NemoOptions {
        ctc_head: true,
        ..Default::default()
    };
    let ckpt = nemo::read_nemo(&path, &opts).unwrap();
    assert!(ckpt.target.ends_with("EncDecHybridRNNTCTCBPEModel"));
    assert!(ckpt
        .tensors
        .keys()
        .all(|k| k.starts_with("encoder.") || k.starts_with("decoder.decoder_layers.0.")));
    let model = load_nemo(&path, &opts).unwrap();
    let d = check_model(&model, &model_ref("hybrid_ctc_head"));
    eprintln!("hybrid_ctc_head: max |Δ log-prob| = {d:e}");
}

#[test]
fn frontend_override_changes_the_frames() {
    let m = model_ref("agg_ctc_legacy");
    let current = load_nemo(
        &nemo_path("agg_ctc_legacy"),
        &NemoOptions {
            legacy_frontend: Some(false),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(!current.config.legacy_frontend);
    // en_000001 has 35912 samples: 224 frames now, 225 before (+1), so 56 rather than 57 after ×4.
    let f = &m.files["en_000001"];
    let lp = utterance_log_probs(&current, &audio(&current, f)).unwrap();
    assert_eq!((f.frames, lp.dims()[0]), (57, 56));
    // The same override works on a model folder.
    let dir = tempfile::tempdir().unwrap();
    nemo::convert(
        &nemo_path("agg_ctc_legacy"),
        dir.path(),
        &NemoOptions::default(),
        None,
    )
    .unwrap();
    let folder = nemo::load_model(dir.path(), Some(false), false).unwrap();
    let lp2 = utterance_log_probs(&folder, &audio(&folder, f)).unwrap();
    assert_eq!(max_diff(&lp, &lp2), 0.0);
}

#[test]
fn legacy_follows_nemo_version() {
    for (v, legacy) in [
        ("1.23.0", true),
        ("2.4.1", true),
        ("2.4.0rc2", true),
        ("2.5.0rc0", false),
        ("2.5.0", false),
        ("3.0.0", false),
        ("v1.0.0", true),
    ] {
        assert_eq!(legacy_from_version(Some(v)), Ok(legacy), "{v}");
    }
    assert!(legacy_from_version(None)
        .unwrap_err()
        .contains("nemo_version"));
    assert!(legacy_from_version(Some("main"))
        .unwrap_err()
        .contains("nemo_version"));
}

#[test]
fn converted_folders_match_nemo() {
    for name in [
        "char_ctc",
        "bpe_ctc",
        "agg_ctc_legacy",
        "hybrid_ctc_head",
        "agg_rnnt",
        "hybrid_rnnt",
        "char_rnnt",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("model");
        let opts = NemoOptions {
            ctc_head: name == "hybrid_ctc_head",
            lang: (name == "bpe_ctc").then(|| "en".to_string()),
            ..Default::default()
        };
        nemo::convert(&nemo_path(name), &out, &opts, None).unwrap();
        assert!(out.join(nemo::NEMO_CONFIG_COPY).is_file());
        let model = AsrModel::load(&out).unwrap();
        if name == "bpe_ctc" {
            assert_eq!(model.tokenizer.langs(), ["en"]);
        }
        let m = model_ref(name);
        assert_eq!(model.config.legacy_frontend, m.legacy_frontend);
        if m.head.is_some() {
            check_transducer(&model, &m);
            // The folder re-stores in f16 (the weights format of the default model) and loads as RNN-T.
            let half = dir.path().join("f16");
            mezcla_asr::model::convert_folder(&out, &half, mezcla_asr::weights::WeightFormat::F16)
                .unwrap();
            assert!(AsrModel::load(&half).unwrap().is_transducer());
        } else {
            check_model(&model, &m);
        }
    }
}

#[test]
fn the_space_before_vocabulary_punctuation_goes_as_in_nemo_transcribe() {
    // NeMo's extract_punctuation_from_vocab on the char fixture's labels (space, a-z, apostrophe): {"'"}.
    let model = load_nemo(&nemo_path("char_ctc"), &NemoOptions::default()).unwrap();
    let marks = mezcla_asr::decode::vocabulary_punctuation(&model.tokenizer);
    assert_eq!(marks, vec!['\'']);
    // "g 'k" (ids g, space, apostrophe, k) reads "g'k" in transcribe()'s text.
    let emissions: Vec<mezcla_asr::decode::Emission> = [7u32, 0, 27, 11]
        .iter()
        .enumerate()
        .map(|(i, &id)| mezcla_asr::decode::Emission {
            id,
            start: i,
            end: i + 1,
        })
        .collect();
    let t = mezcla_asr::decode::transcript(&model.tokenizer, &emissions, 0.04, 0.0).unwrap();
    assert_eq!(t.text, "g'k");
}

#[test]
fn gzipped_archive_loads() {
    let dir = tempfile::tempdir().unwrap();
    let gz = dir.path().join("old.nemo");
    let raw = std::fs::read(nemo_path("char_ctc")).unwrap();
    let mut enc =
        flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), Default::default());
    enc.write_all(&raw).unwrap();
    enc.finish().unwrap();
    let model = load_nemo(&gz, &NemoOptions::default()).unwrap();
    check_model(&model, &model_ref("char_ctc"));
}

#[test]
fn char_vocabulary_decodes_like_nemo() {
    let labels: Vec<String> = [" ", "a", "b", "c", "'"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let sp = char_vocabulary(&labels).unwrap();
    assert_eq!(sp.vocab_size(), 5);
    // NeMo joins the labels: leading, doubled and trailing spaces stay.
    let ids = [0u32, 1, 4, 2, 0, 0, 3, 0];
    let joined: String = ids.iter().map(|&i| labels[i as usize].as_str()).collect();
    assert_eq!(sp.decode(&ids).unwrap(), joined);
    assert_eq!(sp.encode_ids("ab c'"), vec![1, 2, 0, 3, 4]);
    // Survives a save and reload.
    let again = mezcla_tokenizer::SentencePieceModel::from_bytes(&sp.to_bytes(), "x").unwrap();
    assert_eq!(again.decode(&ids).unwrap(), joined);
    let dup: Vec<String> = ["a", "b", "a"].iter().map(|s| s.to_string()).collect();
    assert!(char_vocabulary(&dup).unwrap_err().contains("twice"));
}

/// Copies a fixture archive with its `model_config.yaml` edited.
fn edited(name: &str, dir: &Path, edit: impl Fn(&str) -> String) -> PathBuf {
    edited_member(name, dir, "model_config.yaml", |data| {
        edit(std::str::from_utf8(data).unwrap()).into_bytes()
    })
}

/// Copies a fixture archive with one member's bytes replaced.
fn edited_member(name: &str, dir: &Path, member: &str, edit: impl Fn(&[u8]) -> Vec<u8>) -> PathBuf {
    let mut src = tar::Archive::new(std::fs::File::open(nemo_path(name)).unwrap());
    let out = dir.join(format!("{name}_edited.nemo"));
    let mut b = tar::Builder::new(std::fs::File::create(&out).unwrap());
    for e in src.entries().unwrap() {
        let mut e = e.unwrap();
        if !e.header().entry_type().is_file() {
            continue;
        }
        let path = e.path().unwrap().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        if path.ends_with(member) {
            let new = edit(&data);
            assert_ne!(new, data, "the edit changed nothing");
            data = new;
        }
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, &path, data.as_slice()).unwrap();
    }
    b.finish().unwrap();
    out
}

/// The error of loading `path`, checked to be one line naming `path` and containing `needle`.
fn load_error(path: &Path, needle: &str) -> String {
    let e = match load_nemo(path, &NemoOptions::default()) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => format!("{e:#}"),
    };
    assert!(!e.contains('\n'), "not one line: {e}");
    assert!(e.contains(&path.display().to_string()), "{e}");
    assert!(e.contains(needle), "{needle:?} not in {e:?}");
    eprintln!("{e}");
    e
}

#[test]
fn errors_name_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let text = d.join("notes.nemo");
    std::fs::write(&text, "this is not an archive, just some text ".repeat(30)).unwrap();
    load_error(&text, "tar");

    let empty_tar = d.join("weights_only.nemo");
    {
        let mut b = tar::Builder::new(std::fs::File::create(&empty_tar).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_cksum();
        b.append_data(&mut h, "./model_weights.ckpt", &b"abc"[..])
            .unwrap();
        b.finish().unwrap();
    }
    load_error(&empty_tar, "model_config.yaml");

    let bad_weights = edited_member("char_ctc", d, "model_weights.ckpt", |_| b"PK?".to_vec());
    load_error(&bad_weights, "model_weights.ckpt: not a PyTorch checkpoint");

    // Weights of the wrong shape: the feed-forward layers were trained 2× wide, the config now says 4×.
    let wrong = edited("char_ctc", d, |y| {
        y.replacen("ff_expansion_factor: 2", "ff_expansion_factor: 4", 1)
    });
    load_error(&wrong, "model_weights.ckpt does not fit model_config.yaml");

    let cases: [(&str, &str, &str, &str); 15] = [
        (
            "char_ctc",
            "  window: hann\n",
            "  window: kaiser\n",
            "preprocessor config `window`",
        ),
        (
            "char_ctc",
            "_target_: nemo.collections.asr.modules.ConformerEncoder",
            "_target_: nemo.collections.asr.modules.ConvASREncoder",
            "encoder._target_",
        ),
        (
            "char_ctc",
            "conv_norm_type: batch_norm",
            "conv_norm_type: group_norm",
            "encoder.conv_norm_type",
        ),
        (
            "char_ctc",
            "  xscaling: true\n",
            "  xscaling: true\n  reduction: pooling\n",
            "encoder.reduction",
        ),
        (
            "char_ctc",
            "  xscaling: true\n",
            "  xscaling: true\n  shiny_new_option: 3\n",
            "encoder.shiny_new_option",
        ),
        (
            "char_ctc",
            "  n_fft: 512\n",
            "  n_fft: 512\n  fancy_mode: 1\n",
            "fancy_mode",
        ),
        (
            "char_ctc",
            "target: nemo.collections.asr.models.ctc_models.EncDecCTCModel",
            "target: nemo.collections.asr.models.EncDecMultiTaskModel",
            "target: nemo.collections.asr.models.EncDecMultiTaskModel",
        ),
        (
            "agg_rnnt",
            "  strategy: greedy_batch\n",
            "  strategy: beam\n",
            "decoding.strategy",
        ),
        (
            "agg_rnnt",
            "  num_classes: 88\n",
            "  num_classes: 88\n  num_extra_outputs: 5\n",
            "joint.num_extra_outputs",
        ),
        (
            "agg_rnnt",
            "  normalization_mode: null\n",
            "  normalization_mode: layer\n",
            "decoder.normalization_mode",
        ),
        (
            "agg_rnnt",
            "    activation: relu\n",
            "    activation: gelu\n",
            "joint.jointnet.activation",
        ),
        (
            "hybrid_rnnt",
            "    pred_rnn_layers: 1\n",
            "    pred_rnn_layers: 1\n    rnn_hidden_size: 64\n",
            "decoder.prednet.rnn_hidden_size",
        ),
        ("char_ctc", "nemo_version: 3.0.0\n", "", "nemo_version"),
        ("bpe_ctc", "  type: bpe", "  type: wpe", "tokenizer.type"),
        (
            "bpe_ctc",
            "model_path: nemo:",
            "model_path: nemo:gone_",
            "tokenizer.model_path",
        ),
    ];
    for (name, from, to, needle) in cases {
        let path = edited(name, d, |y| {
            assert!(y.contains(from), "{from:?} not in the fixture config");
            y.replacen(from, to, 1)
        });
        load_error(&path, needle);
    }
}

fn mezcla(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mezcla"))
        .args(args)
        .output()
        .unwrap()
}

/// `mezcla convert MODEL --out FOLDER`, which must succeed; returns what it printed.
fn convert_ok(model: &str, folder: &Path) -> String {
    let out = mezcla(&["convert", model, "--out", folder.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn cli_transcribes_nemo_and_writes_log_probs() {
    let m = model_ref("bpe_ctc");
    let dir = tempfile::tempdir().unwrap();
    let lp_dir = dir.path().join("lp");
    let wavs: Vec<String> = m
        .files
        .values()
        .map(|f| workspace().join(&f.wav).display().to_string())
        .collect();
    let model = nemo_path("bpe_ctc").display().to_string();
    let mut args = vec![
        "transcribe",
        "--model",
        &model,
        "--logprobs",
        lp_dir.to_str().unwrap(),
    ];
    args.extend(wavs.iter().map(String::as_str));
    let out = mezcla(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let refs = candle_core::safetensors::load(fixtures().join(&m.log_probs), &Device::Cpu).unwrap();
    for (stem, f) in &m.files {
        assert!(
            stdout.contains(&format!("[default] {}\n", f.text.trim())),
            "{stem}: {stdout}"
        );
        let got = candle_core::safetensors::load(
            lp_dir.join(format!("{stem}.safetensors")),
            &Device::Cpu,
        )
        .unwrap();
        assert!(max_diff(&got[LOG_PROBS_KEY], &refs[stem]) <= TOLERANCE);
    }

    // convert, then transcribe the folder; --legacy-frontend changes the frame count of a folder too.
    let folder = dir.path().join("converted");
    let line = convert_ok(&model, &folder);
    assert!(
        line.contains("EncDecCTCModelBPE") && line.contains("current front-end"),
        "{line}"
    );
    let (stem, f) = m.files.iter().next().unwrap();
    let wav = workspace().join(&f.wav).display().to_string();
    let lp2 = dir.path().join("lp2");
    let out = mezcla(&[
        "transcribe",
        "--model",
        folder.to_str().unwrap(),
        "--legacy-frontend",
        "--logprobs",
        lp2.to_str().unwrap(),
        &wav,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = candle_core::safetensors::load(lp2.join(format!("{stem}.safetensors")), &Device::Cpu)
        .unwrap();
    assert_ne!(got[LOG_PROBS_KEY].dims()[0], f.frames);

    // Errors are one line naming the file.
    let bad = dir.path().join("bad.nemo");
    std::fs::write(&bad, b"not a tar").unwrap();
    let out = mezcla(&["transcribe", "--model", bad.to_str().unwrap(), &wav]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("bad.nemo"), "{err}");
}

#[test]
fn cli_runs_rnnt_nemo_and_writes_step_log_probs() {
    let m = model_ref("agg_rnnt");
    let dir = tempfile::tempdir().unwrap();
    let lp_dir = dir.path().join("lp");
    let (stem, f) = m.files.iter().next().unwrap();
    let wav = workspace().join(&f.wav).display().to_string();
    let model = nemo_path("agg_rnnt").display().to_string();
    let out = mezcla(&[
        "transcribe",
        "--model",
        &model,
        "--format",
        "json",
        "--logprobs",
        lp_dir.to_str().unwrap(),
        &wav,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let json: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(json["text"], f.text.trim(), "{stdout}");
    let got =
        candle_core::safetensors::load(lp_dir.join(format!("{stem}.safetensors")), &Device::Cpu)
            .unwrap();
    let refs = candle_core::safetensors::load(fixtures().join(&m.log_probs), &Device::Cpu).unwrap();
    assert!(max_diff(&got[LOG_PROBS_KEY], &refs[stem]) <= TOLERANCE);
    let frames: Vec<i64> = got[FRAMES_KEY]
        .to_vec1::<u32>()
        .unwrap()
        .into_iter()
        .map(i64::from)
        .collect();
    assert_eq!(
        frames,
        refs[&format!("{stem}.frames")].to_vec1::<i64>().unwrap()
    );

    // convert names the head; a beam search or an LM is refused in one line.
    let folder = dir.path().join("converted");
    let line = convert_ok(&model, &folder);
    assert!(
        line.contains("EncDecRNNTBPEModel") && line.contains("RNN-T head (LSTM 2 × 24, joint 20"),
        "{line}"
    );
    let out = mezcla(&[
        "transcribe",
        "--model",
        folder.to_str().unwrap(),
        "--beam",
        "4",
        &wav,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("RNN-T") && err.contains("--beam"), "{err}");
    // A word LM is refused before anything is written.
    let with_lm = dir.path().join("with_lm");
    let out = mezcla(&[
        "convert",
        &model,
        "--out",
        with_lm.to_str().unwrap(),
        "--lm",
        "lm.arpa",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("--lm is for CTC models"), "{err}");
    assert!(!with_lm.exists());
}
