//! RNN-T against torchaudio's `rnnt_loss` (and NeMo's for FastEmit) fixtures.

mod common;

use candle_core::{Tensor, Var};
use common::*;
use mezcla_kernels::{rnnt_loss, rnnt_loss_and_grad, Reduction, RnntOptions};

const TOL: f64 = 1e-5;
const CASES: &[&str] = &[
    "rnnt_blank_last",
    "rnnt_blank_first",
    "rnnt_clamp",
    "rnnt_empty_targets",
    "rnnt_fastemit",
    "rnnt_long",
];

fn opts(f: &std::collections::HashMap<String, Tensor>, reduction: Reduction) -> RnntOptions {
    let clamp = scalar_f64(&f["clamp"]) as f32;
    RnntOptions {
        blank: Some(scalar_i64(&f["blank"]) as usize),
        reduction,
        clamp: (clamp > 0.0).then_some(clamp),
        fastemit_lambda: scalar_f64(&f["fastemit_lambda"]) as f32,
    }
}

#[test]
fn rnnt_matches_torchaudio() {
    for name in CASES {
        let f = fixture(name);
        let logits = Var::from_tensor(&f["logits"]).unwrap();
        let (tg, ll, tl) = (&f["targets"], &f["logit_lengths"], &f["target_lengths"]);
        let b = f["logits"].dims()[0] as f64;
        let reds = [
            (Reduction::None, "loss_none", None),
            (Reduction::Sum, "loss_sum", Some(("grad_sum", 1.0))),
            (Reduction::Mean, "loss_mean", Some(("grad_mean", 1.0))),
            (
                Reduction::MeanBatch,
                "loss_mean_batch",
                Some(("grad_sum", 1.0 / b)),
            ),
        ];
        for (red, loss_key, grad_ref) in reds {
            let o = opts(&f, red);
            let loss = rnnt_loss(logits.as_tensor(), tg, ll, tl, &o).unwrap();
            let what = format!("{name} {loss_key}");
            assert_losses_close(&f64s(&loss), &f64s(&f[loss_key]), TOL, &what);
            let Some((gkey, scale)) = grad_ref else {
                continue;
            };
            let Some(want) = f.get(gkey) else { continue };
            let want: Vec<f64> = f64s(want).iter().map(|v| v * scale).collect();
            let grads = loss.backward().unwrap();
            let got = f64s(grads.get(logits.as_tensor()).unwrap());
            // torchaudio accumulates in f32; on the 300-frame lattice its own gradient is 2e-4 off
            // the f64 truth (measured by the fixture script), so there the 1e-5 bound is checked
            // against the f64 autograd reference below and torchaudio is held to its own accuracy.
            let tol = if *name == "rnnt_long" { 5e-4 } else { TOL };
            assert_grads_close(&got, &want, tol, &format!("{what} grad"));
            let (l2, g2) = rnnt_loss_and_grad(logits.as_tensor(), tg, ll, tl, &o).unwrap();
            assert_losses_close(&f64s(&l2), &f64s(&f[loss_key]), TOL, &what);
            assert_grads_close(&f64s(&g2), &want, tol, &format!("{what} loss_and_grad"));
        }
        if let Some(want) = f.get("grad_sum_f64") {
            let o = opts(&f, Reduction::Sum);
            let (l, g) = rnnt_loss_and_grad(logits.as_tensor(), tg, ll, tl, &o).unwrap();
            let want_loss: f64 = f64s(&f["loss_none_f64"]).iter().sum();
            assert_losses_close(&f64s(&l), &[want_loss], TOL, &format!("{name} f64 loss"));
            let err = assert_grads_close(&f64s(&g), &f64s(want), TOL, &format!("{name} f64 grad"));
            assert!(err < TOL);
        }
    }
}

#[test]
fn rnnt_clamp_fixture_is_active() {
    // the clamp case must actually clip: the reference gradient saturates at +-clamp
    let f = fixture("rnnt_clamp");
    let c = scalar_f64(&f["clamp"]);
    let g = f64s(&f["grad_sum"]);
    assert!(g.iter().any(|v| (v.abs() - c).abs() < 1e-7));
    assert!(g.iter().all(|v| v.abs() <= c + 1e-7));
}
