//! The training loss with NeMo's intermediate CTC losses (`interctc`) against NeMo's InterCTCMixin: the same
//! random weights and batch give the same final, intermediate and total losses and the same gradients
//! (fixture from `tests/fixtures/make_interctc_fixture.py`; training mode on both sides, every dropout 0).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use mezcla_asr::train::interctc::{ctc_losses, CtcLosses, InterCtcConfig};
use mezcla_kernels::{CtcOptions, Reduction};
use mezcla_models::conformer::{ConformerConfig, ConformerEncoder};
use mezcla_models::ctc::CtcHead;

struct Fixture {
    cfg: ConformerConfig,
    vocab: usize,
    interctc: InterCtcConfig,
    tensors: HashMap<String, Tensor>,
}

fn fixture() -> Fixture {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("interctc.json")).unwrap()).unwrap();
    Fixture {
        cfg: serde_json::from_value(meta["encoder"].clone()).unwrap(),
        vocab: meta["vocab_size"].as_u64().unwrap() as usize,
        interctc: serde_json::from_value(meta["interctc"].clone()).unwrap(),
        tensors: candle_core::safetensors::load(dir.join("interctc.safetensors"), &Device::Cpu)
            .unwrap(),
    }
}

fn usizes(t: &Tensor) -> Vec<usize> {
    t.to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|v| v as usize)
        .collect()
}

fn scalar(t: &Tensor) -> f32 {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0]
}

/// The CTC losses of the fixture's batch, in training mode, reduced as NeMo's `mean_batch`.
fn losses_of(
    f: &Fixture,
    encoder: &ConformerEncoder,
    head: &CtcHead,
    interctc: &InterCtcConfig,
) -> CtcLosses {
    let t = &f.tensors;
    let opts = CtcOptions {
        reduction: Reduction::MeanBatch,
        zero_infinity: true,
        ..Default::default()
    };
    ctc_losses(
        encoder,
        head,
        &t["input.features"],
        &usizes(&t["input.lengths"]),
        &t["input.targets"],
        &usizes(&t["input.target_lengths"]),
        interctc,
        &opts,
        true,
    )
    .unwrap()
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn interctc_losses_and_gradients_match_nemo() {
    let f = fixture();
    assert!(f.interctc.enabled());
    let dev = Device::Cpu;
    // Every weight is a variable, as in training, so that the gradients can be read back.
    let vars = VarMap::new();
    {
        let mut data = vars.data().lock().unwrap();
        for (name, t) in &f.tensors {
            if name.starts_with("encoder.") || name.starts_with("decoder.") {
                data.insert(name.clone(), Var::from_tensor(t).unwrap());
            }
        }
    }
    let vb = VarBuilder::from_varmap(&vars, DType::F32, &dev);
    let encoder = ConformerEncoder::new(&f.cfg, vb.pp("encoder")).unwrap();
    let head = CtcHead::new(f.cfg.output_dim(), f.vocab, vb.pp("decoder")).unwrap();
    let losses = losses_of(&f, &encoder, &head, &f.interctc);
    let t = &f.tensors;

    let close = |got: f32, want: f32, what: &str| {
        let d = (got - want).abs();
        assert!(
            d <= 1e-4 * want.abs().max(1.0),
            "{what}: mezcla {got}, NeMo {want}"
        );
    };
    close(
        scalar(&losses.final_loss),
        scalar(&t["loss.final"]),
        "final loss",
    );
    let layers: Vec<usize> = losses.intermediate.iter().map(|(l, _)| *l).collect();
    assert_eq!(layers, f.interctc.apply_at_layers);
    for (layer, loss) in &losses.intermediate {
        let key = format!("loss.inter_l{layer}");
        close(scalar(loss), scalar(&t[&key]), &key);
    }
    close(
        scalar(&losses.total),
        scalar(&t["loss.total"]),
        "total loss",
    );
    // The intermediate losses differ from the final one, so the comparison above tests the capture points.
    for (_, loss) in &losses.intermediate {
        assert!((scalar(loss) - scalar(&losses.final_loss)).abs() > 0.1);
    }

    let grads = losses.total.backward().unwrap();
    let data = vars.data().lock().unwrap();

    let mut checked = 0;
    for (key, want) in t.iter().filter(|(k, _)| k.starts_with("grad.")) {
        let name = &key["grad.".len()..];
        let got = grads
            .get(data[name].as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let scale = max_abs(want);
        let diff = max_abs(&(got - want).unwrap());
        // Relative to the gradient's own scale (some are ~1e-2), with a floor for rounding.
        assert!(
            diff <= 1e-3 * scale.max(1e-3),
            "gradient of {name}: max difference {diff} (largest entry {scale})"
        );
        checked += 1;
    }
    assert_eq!(checked, 5);
}

#[test]
fn without_interctc_the_total_is_the_final_loss() {
    let f = fixture();
    let vb = VarBuilder::from_tensors(f.tensors.clone(), DType::F32, &Device::Cpu);
    let encoder = ConformerEncoder::new(&f.cfg, vb.pp("encoder")).unwrap();
    let head = CtcHead::new(f.cfg.output_dim(), f.vocab, vb.pp("decoder")).unwrap();
    let t = &f.tensors;
    let losses = losses_of(&f, &encoder, &head, &InterCtcConfig::default());
    assert!(losses.intermediate.is_empty());
    assert_eq!(scalar(&losses.total), scalar(&losses.final_loss));
    let want = scalar(&t["loss.final"]);
    assert!((scalar(&losses.final_loss) - want).abs() <= 1e-4 * want.abs());
}
