//! CTC against PyTorch's `ctc_loss` fixtures (see tests/fixtures/make_loss_fixtures.py).

mod common;

use candle_core::{Tensor, Var};
use common::*;
use mezcla_kernels::{ctc_loss, ctc_loss_and_grad, CtcInput, CtcOptions, Reduction};

const TOL: f64 = 1e-5;
const CASES: &[&str] = &[
    "ctc_blank_last",
    "ctc_blank_first",
    "ctc_blank_mid",
    "ctc_concat_targets",
    "ctc_infeasible_zero_inf",
    "ctc_infeasible",
    "ctc_long",
];

fn opts(f: &std::collections::HashMap<String, Tensor>, reduction: Reduction) -> CtcOptions {
    CtcOptions {
        blank: Some(scalar_i64(&f["blank"]) as usize),
        reduction,
        zero_infinity: scalar_i64(&f["zero_infinity"]) != 0,
        input: CtcInput::Logits,
    }
}

fn check_case(name: &str, input: CtcInput) {
    let f = fixture(name);
    let logits = Var::from_tensor(&f["logits"]).unwrap();
    let (tg, il, tl) = (&f["targets"], &f["input_lengths"], &f["target_lengths"]);
    // the tensor the op sees: logits, or candle's log-softmax of them
    let input_of = |x: &Tensor| match input {
        CtcInput::Logits => x.clone(),
        CtcInput::LogProbs => x
            .broadcast_sub(&x.log_sum_exp(2).unwrap().unsqueeze(2).unwrap())
            .unwrap(),
    };
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
        let o = CtcOptions {
            input,
            ..opts(&f, red)
        };
        let loss = ctc_loss(&input_of(logits.as_tensor()), tg, il, tl, &o).unwrap();
        let what = format!("{name} {input:?} {loss_key}");
        assert_losses_close(&f64s(&loss), &f64s(&f[loss_key]), TOL, &what);
        let Some((gkey, scale)) = grad_ref else {
            continue;
        };
        let Some(want) = f.get(gkey) else { continue };
        let grads = loss.backward().unwrap();
        let got = f64s(grads.get(logits.as_tensor()).unwrap());
        let want: Vec<f64> = f64s(want).iter().map(|v| v * scale).collect();
        assert_grads_close(&got, &want, TOL, &format!("{what} grad"));
        if input == CtcInput::Logits {
            // the graph-free entry point gives the same loss and gradient
            let (l2, g2) = ctc_loss_and_grad(logits.as_tensor(), tg, il, tl, &o).unwrap();
            assert_losses_close(&f64s(&l2), &f64s(&f[loss_key]), TOL, &what);
            assert_grads_close(&f64s(&g2), &want, TOL, &format!("{what} loss_and_grad"));
        }
    }
}

#[test]
fn ctc_matches_pytorch_on_logits() {
    for name in CASES {
        check_case(name, CtcInput::Logits);
    }
}

#[test]
fn ctc_matches_pytorch_on_log_probs() {
    for name in CASES {
        check_case(name, CtcInput::LogProbs);
    }
}

#[test]
fn ctc_infeasible_fixture_really_is_infeasible() {
    // guards the fixture itself: the test above must exercise inf losses and NaN gradients
    let f = fixture("ctc_infeasible");
    let l = f64s(&f["loss_none"]);
    assert!(l[0].is_finite() && l[1].is_infinite() && l[2].is_infinite());
    assert!(f64s(&f["grad_mean"]).iter().any(|v| v.is_nan()));
    let z = fixture("ctc_infeasible_zero_inf");
    assert_eq!(f64s(&z["loss_none"])[1], 0.0);
}

#[test]
fn ctc_without_grad_tracking_gives_same_losses() {
    let f = fixture("ctc_blank_last");
    let o = opts(&f, Reduction::None);
    let loss = ctc_loss(
        &f["logits"],
        &f["targets"],
        &f["input_lengths"],
        &f["target_lengths"],
        &o,
    )
    .unwrap();
    assert_losses_close(&f64s(&loss), &f64s(&f["loss_none"]), TOL, "no-grad");
    // and backward through an untracked loss fails cleanly instead of panicking
    assert!(loss.sum_all().unwrap().backward().is_ok());
}
