//! Training's initial weights follow NeMo's: per-tensor statistics of mezcla's seeded init of the `tiny` model
//! against those of NeMo's own init of the same model (fixtures/init/, made by fixtures/make_init_fixture.py).

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use mezcla_asr::train::init_weights;
use mezcla_models::conformer::{ConformerConfig, ConformerEncoder};
use mezcla_models::ctc::CtcHead;

struct Stats {
    count: usize,
    min: f64,
    max: f64,
    mean: f64,
    std: f64,
}

fn stats(values: &[f64]) -> Stats {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    Stats {
        count: values.len(),
        min: values.iter().cloned().fold(f64::INFINITY, f64::min),
        max: values.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
        mean,
        std: var.sqrt(),
    }
}

#[test]
fn initial_weights_have_the_distribution_of_nemos() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/init/nemo_tiny_init.json"
    );
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let seeds = fixture["seeds"].as_u64().unwrap();
    let vocab = fixture["vocab_size"].as_u64().unwrap() as usize;
    let reference = fixture["tensors"].as_object().unwrap();

    // The same model: the `tiny` encoder and a CTC head of vocab + 1 outputs, under NeMo's names.
    let cfg = ConformerConfig::preset("tiny", 80).unwrap();
    let mut values: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    let mut shapes: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
    for seed in 0..seeds {
        let vars = VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
        ConformerEncoder::new(&cfg, vb.pp("encoder")).unwrap();
        CtcHead::new(cfg.output_dim(), vocab, vb.pp("decoder")).unwrap();
        init_weights(&vars, seed).unwrap();
        for (name, var) in vars.data().lock().unwrap().iter() {
            let v: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            shapes.insert(name.clone(), var.dims().to_vec());
            values
                .entry(name.clone())
                .or_default()
                .extend(v.iter().map(|&x| x as f64));
        }
    }
    let ours: Vec<&String> = values.keys().collect();
    let theirs: Vec<&String> = reference.keys().collect();
    assert_eq!(ours, theirs, "the same tensors as NeMo's model");

    for (name, v) in &values {
        let r = &reference[name.as_str()];
        let shape: Vec<usize> = r["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(shapes[name], shape, "{name}: shape");
        let s = stats(v);
        assert_eq!(
            s.count as u64,
            r["count"].as_u64().unwrap(),
            "{name}: count"
        );
        let (rmin, rmax, rmean, rstd) = (
            r["min"].as_f64().unwrap(),
            r["max"].as_f64().unwrap(),
            r["mean"].as_f64().unwrap(),
            r["std"].as_f64().unwrap(),
        );
        if rmin == rmax {
            // A constant (norm scales and shifts, running statistics, pos_bias_u/v): exactly that constant.
            assert!(
                s.min == rmin && s.max == rmax,
                "{name}: {} .. {} against the constant {rmin}",
                s.min,
                s.max
            );
            continue;
        }
        // Uniform in ±b on both sides: the same bound (within the sampling error of the extremes), the same
        // spread (b/sqrt(3)) and a mean near zero.
        let bound = rmax.max(-rmin);
        let ours_bound = s.max.max(-s.min);
        let tol = if s.count >= 1000 { 0.05 } else { 0.15 };
        assert!(
            (ours_bound / bound - 1.0).abs() < tol,
            "{name}: bound {ours_bound} against NeMo's {bound}"
        );
        assert!(
            (s.std / rstd - 1.0).abs() < tol,
            "{name}: std {} against NeMo's {rstd}",
            s.std
        );
        // Two sample means of the same distribution: within 5 standard errors of their difference.
        assert!(
            (s.mean - rmean).abs() < 5.0 * rstd * (2.0 / s.count as f64).sqrt(),
            "{name}: mean {} against NeMo's {rmean}",
            s.mean
        );
    }
}
