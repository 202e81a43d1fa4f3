//! The whole encoder + CTC head's autograd gradients against finite differences, on a padded batch in training
//! mode (batch statistics, no dropout).

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use mezcla_models::conformer::{ConformerConfig, ConformerEncoder};
use mezcla_models::ctc::CtcHead;

#[test]
fn gradients_match_finite_differences_on_a_padded_batch() {
    let dev = Device::Cpu;
    let mut cfg = ConformerConfig::preset("tiny", 16).unwrap();
    cfg.d_model = 16;
    cfg.n_heads = 2;
    cfg.n_layers = 1;
    cfg.conv_kernel_size = 5;
    for p in [
        &mut cfg.dropout,
        &mut cfg.dropout_att,
        &mut cfg.dropout_emb,
        &mut cfg.dropout_pre_encoder,
    ] {
        *p = 0.0;
    }
    let vars = VarMap::new();
    let vb = VarBuilder::from_varmap(&vars, DType::F32, &dev);
    let enc = ConformerEncoder::new(&cfg, vb.pp("encoder")).unwrap();
    let head = CtcHead::new(16, 6, vb.pp("decoder")).unwrap();
    // Non-zero biases everywhere, so that no term hides behind a zero.
    for (name, var) in vars.data().lock().unwrap().iter() {
        if !name.contains("running") {
            let t =
                (var.as_tensor() + Tensor::randn(0f32, 0.2, var.dims(), &dev).unwrap()).unwrap();
            var.set(&t).unwrap();
        }
    }
    let x = Tensor::randn(0f32, 1.0, (2, 16, 28), &dev).unwrap();
    let lengths = [28usize, 19];
    let (_, out_len) = enc.forward(&x, &lengths, true).unwrap();
    let r = Tensor::randn(0f32, 1.0, (2, 7, 7), &dev).unwrap();
    // Only valid frames count, as in a loss.
    let mut mask = vec![0f32; 2 * 7 * 7];
    for (b, &l) in out_len.iter().enumerate() {
        for t in 0..l {
            for c in 0..7 {
                mask[(b * 7 + t) * 7 + c] = 1.0;
            }
        }
    }
    let r = (r * Tensor::from_vec(mask, (2, 7, 7), &dev).unwrap()).unwrap();
    let loss = |x: &Tensor| -> Tensor {
        let (y, _) = enc.forward(x, &lengths, true).unwrap();
        (head.log_probs(&y).unwrap() * &r)
            .unwrap()
            .sum_all()
            .unwrap()
    };
    let grads = loss(&x).backward().unwrap();
    let data = vars.data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().filter(|n| !n.contains("running")).collect();
    names.sort();
    let (mut checked, mut skipped) = (0, 0);
    for name in names {
        let var: &Var = &data[name];
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let g = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let base = var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for &i in &[0usize, base.len() / 2, base.len() - 1] {
            let central = |eps: f32| -> f64 {
                let mut plus = base.clone();
                plus[i] += eps;
                var.set(&Tensor::from_vec(plus, var.dims(), &dev).unwrap())
                    .unwrap();
                let fp = loss(&x).to_scalar::<f32>().unwrap() as f64;
                let mut minus = base.clone();
                minus[i] -= eps;
                var.set(&Tensor::from_vec(minus, var.dims(), &dev).unwrap())
                    .unwrap();
                let fm = loss(&x).to_scalar::<f32>().unwrap() as f64;
                var.set(&Tensor::from_vec(base.clone(), var.dims(), &dev).unwrap())
                    .unwrap();
                (fp - fm) / (2.0 * eps as f64)
            };
            let (n1, n2) = (central(1e-2), central(5e-3));
            // A ReLU kink inside the step makes finite differences meaningless there: skip such points.
            if (n1 - n2).abs() > 0.02 * n1.abs().max(n2.abs()) + 0.02 {
                skipped += 1;
                continue;
            }
            let analytic = g[i] as f64;
            let tol = 0.03 * n2.abs().max(analytic.abs()) + 0.03;
            assert!(
                (n2 - analytic).abs() <= tol,
                "{name}[{i}]: autograd {analytic}, finite differences {n2}"
            );
            checked += 1;
        }
    }
    assert!(
        checked > 60 && skipped < 10,
        "checked {checked}, skipped {skipped}"
    );
}
