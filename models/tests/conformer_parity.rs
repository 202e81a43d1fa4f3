//! Conformer encoder + CTC head against NeMo: the same random weights give the same log-probabilities.
//! Fixtures come from `tests/fixtures/make_conformer_fixtures.py` (NeMo 3.0, eval mode, padded batch of 3).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use mezcla_models::conformer::{ConformerConfig, ConformerEncoder};
use mezcla_models::cpu_inference::CpuConformer;
use mezcla_models::ctc::CtcHead;

/// A fixture: the encoder config, the vocabulary size, and its tensors (weights, input and NeMo's output).
fn fixture(name: &str) -> (ConformerConfig, usize, HashMap<String, Tensor>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap())
            .unwrap();
    let cfg: ConformerConfig = serde_json::from_value(meta["encoder"].clone()).unwrap();
    let vocab = meta["vocab_size"].as_u64().unwrap() as usize;
    let tensors =
        candle_core::safetensors::load(dir.join(format!("{name}.safetensors")), &Device::Cpu)
            .unwrap();
    (cfg, vocab, tensors)
}

fn check(name: &str) {
    let (cfg, vocab, tensors) = fixture(name);
    let dev = Device::Cpu;
    let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, &dev);
    let encoder = ConformerEncoder::new(&cfg, vb.pp("encoder")).unwrap();
    let head = CtcHead::new(cfg.output_dim(), vocab, vb.pp("decoder")).unwrap();

    let features = &tensors["input.features"];
    let lengths: Vec<usize> = tensors["input.lengths"]
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|l| l as usize)
        .collect();
    let (encoded, out_lengths) = encoder.forward(features, &lengths, false).unwrap();
    let want_lengths: Vec<usize> = tensors["output.lengths"]
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|l| l as usize)
        .collect();
    assert_eq!(out_lengths, want_lengths, "{name}: output lengths");
    for (l, &n) in lengths.iter().zip(&out_lengths) {
        assert_eq!(cfg.output_length(*l), n);
    }
    let got = head.log_probs(&encoded).unwrap();
    let want = &tensors["output.log_probs"];
    assert_eq!(got.dims(), want.dims(), "{name}: shape");
    let got = got.to_vec3::<f32>().unwrap();
    let want = want.to_vec3::<f32>().unwrap();
    let mut max_diff = 0f32;
    for b in 0..got.len() {
        for t in 0..got[b].len() {
            for c in 0..got[b][t].len() {
                max_diff = max_diff.max((got[b][t][c] - want[b][t][c]).abs());
            }
        }
    }
    assert!(max_diff <= 1e-4, "{name}: max |mezcla - NeMo| = {max_diff}");
    eprintln!("{name}: max |mezcla - NeMo| = {max_diff:e}");
}

#[test]
fn striding_conformer_ctc_matches_nemo() {
    check("conformer_striding");
}

#[test]
fn dw_striding_conformer_ctc_with_tied_biases_and_layer_norm_matches_nemo() {
    check("conformer_dw_striding");
}

/// The fused CPU inference path, one utterance at a time at its own length, against NeMo's padded batch.
fn check_cpu_inference(name: &str) {
    let (cfg, vocab, tensors) = fixture(name);
    let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, &Device::Cpu);
    let model = CpuConformer::new(&cfg, Some(vocab), &vb).unwrap();
    assert_eq!(model.classes(), vocab + 1);
    let features = tensors["input.features"].to_vec3::<f32>().unwrap();
    let lengths = tensors["input.lengths"].to_vec1::<i64>().unwrap();
    let want_lengths = tensors["output.lengths"].to_vec1::<i64>().unwrap();
    let want = tensors["output.log_probs"].to_vec3::<f32>().unwrap();
    let mut max_diff = 0f32;
    for (b, utt) in features.iter().enumerate() {
        let stride = utt[0].len();
        let flat: Vec<f32> = utt.iter().flatten().copied().collect();
        let (got, frames) = model.log_probs(&flat, stride, lengths[b] as usize).unwrap();
        assert_eq!(
            frames as i64, want_lengths[b],
            "{name}: utterance {b} frames"
        );
        for t in 0..frames {
            for c in 0..=vocab {
                max_diff = max_diff.max((got[t * (vocab + 1) + c] - want[b][t][c]).abs());
            }
        }
    }
    assert!(
        max_diff <= 1e-4,
        "{name}: max |cpu inference - NeMo| = {max_diff}"
    );
    eprintln!("{name}: max |cpu inference - NeMo| = {max_diff:e}");
}

#[test]
fn cpu_inference_of_a_striding_conformer_ctc_matches_nemo() {
    check_cpu_inference("conformer_striding");
}

#[test]
fn cpu_inference_of_a_dw_striding_conformer_ctc_with_tied_biases_and_layer_norm_matches_nemo() {
    check_cpu_inference("conformer_dw_striding");
}
