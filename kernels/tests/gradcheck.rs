//! Finite-difference gradient checks on tiny f64 cases, and long-input stability.

mod common;

use candle_core::{Device, Tensor, Var};
use common::f64s;
use mezcla_kernels::{ctc_loss, rnnt_loss, CtcInput, CtcOptions, Reduction, RnntOptions};

/// Deterministic values in roughly [-scale, scale].
fn values(n: usize, seed: u64, scale: f64) -> Vec<f64> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn i64s(v: &[i64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
}

/// Central differences of `f` at `x` against `analytic`; returns the max relative error.
fn fd_check(x: &[f64], shape: &[usize], analytic: &[f64], f: impl Fn(&Tensor) -> f64) -> f64 {
    let eps = 1e-6;
    let scale = analytic.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-12);
    let mut worst = 0f64;
    for i in 0..x.len() {
        let mut xp = x.to_vec();
        xp[i] += eps;
        let mut xm = x.to_vec();
        xm[i] -= eps;
        let fp = f(&Tensor::from_vec(xp, shape, &Device::Cpu).unwrap());
        let fm = f(&Tensor::from_vec(xm, shape, &Device::Cpu).unwrap());
        let num = (fp - fm) / (2.0 * eps);
        worst = worst.max((num - analytic[i]).abs() / scale);
    }
    worst
}

fn ctc_fd(input: CtcInput) {
    let shape = [2, 7, 4];
    let x = values(2 * 7 * 4, 7, 2.0);
    let targets = i64s(&[1, 1, 2, 0, 2, 0, 0, 0], &[2, 4]);
    let il = i64s(&[7, 5], &[2]);
    let tl = i64s(&[3, 2], &[2]);
    let o = CtcOptions {
        blank: None,
        reduction: Reduction::Mean,
        zero_infinity: false,
        input,
    };
    let var = Var::from_vec(x.clone(), &shape[..], &Device::Cpu).unwrap();
    let loss = ctc_loss(var.as_tensor(), &targets, &il, &tl, &o).unwrap();
    let g = f64s(loss.backward().unwrap().get(var.as_tensor()).unwrap());
    let err = fd_check(&x, &shape, &g, |t| {
        ctc_loss(t, &targets, &il, &tl, &o)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    });
    assert!(
        err < 1e-6,
        "CTC {input:?} finite-difference error {err:.2e}"
    );
    // padded frames of sample 1 get no gradient
    assert!(g[(7 + 5) * 4..].iter().all(|&v| v == 0.0));
}

#[test]
fn ctc_gradient_matches_finite_differences_logits() {
    ctc_fd(CtcInput::Logits);
}

#[test]
fn ctc_gradient_matches_finite_differences_log_probs() {
    // arbitrary (unnormalised) log-probabilities: the gradient is the exact one w.r.t. the input
    ctc_fd(CtcInput::LogProbs);
}

#[test]
fn rnnt_gradient_matches_finite_differences() {
    let shape = [2, 5, 3, 4];
    let x = values(2 * 5 * 3 * 4, 11, 1.5);
    let targets = i64s(&[0, 2, 1, 0], &[2, 2]);
    let ll = i64s(&[5, 3], &[2]);
    let tl = i64s(&[2, 1], &[2]);
    for blank in [None, Some(1)] {
        let targets = if blank == Some(1) {
            i64s(&[0, 2, 3, 0], &[2, 2])
        } else {
            targets.clone()
        };
        let o = RnntOptions {
            blank,
            reduction: Reduction::Mean,
            ..Default::default()
        };
        let var = Var::from_vec(x.clone(), &shape[..], &Device::Cpu).unwrap();
        let loss = rnnt_loss(var.as_tensor(), &targets, &ll, &tl, &o).unwrap();
        let g = f64s(loss.backward().unwrap().get(var.as_tensor()).unwrap());
        let err = fd_check(&x, &shape, &g, |t| {
            rnnt_loss(t, &targets, &ll, &tl, &o)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        });
        assert!(err < 1e-6, "RNN-T finite-difference error {err:.2e}");
    }
}

#[test]
fn ctc_long_input_is_stable_in_f32() {
    // T in the thousands: the log-space recursions stay finite and each frame's logits-gradient
    // sums to zero (softmax minus occupancy, both summing to one); the f32 kernel agrees with f64.
    let (b, t, c, s) = (2, 4000, 16, 600);
    let x = values(b * t * c, 3, 3.0);
    let tg: Vec<i64> = (0..b * s).map(|i| (i * 7 % 15) as i64).collect();
    let targets = i64s(&tg, &[b, s]);
    let il = i64s(&[4000, 3100], &[2]);
    let tl = i64s(&[600, 550], &[2]);
    let o = CtcOptions {
        reduction: Reduction::Sum,
        ..Default::default()
    };
    let mut results = Vec::new();
    for dtype in [candle_core::DType::F32, candle_core::DType::F64] {
        let xt = Tensor::from_vec(x.clone(), &[b, t, c][..], &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let (loss, grad) = mezcla_kernels::ctc_loss_and_grad(&xt, &targets, &il, &tl, &o).unwrap();
        let loss = f64s(&loss)[0];
        let g = f64s(&grad);
        assert!(loss.is_finite() && loss > 0.0);
        for row in g.chunks(c) {
            let sum: f64 = row.iter().sum();
            assert!(sum.abs() < 1e-5, "frame gradient sums to {sum}");
        }
        results.push((loss, g));
    }
    let (l32, g32) = &results[0];
    let (l64, g64) = &results[1];
    assert!((l32 - l64).abs() / l64 < 1e-6, "{l32} vs {l64}");
    let worst = g32
        .iter()
        .zip(g64)
        .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(worst < 1e-5, "f32 vs f64 gradient differ by {worst:.2e}");
}

#[test]
fn gradient_flows_through_upstream_ops_and_half_precision() {
    // logits = 3 * w (an upstream op): d loss / d w = 3 * d loss / d logits; and a bf16 input is
    // widened inside, its gradient coming back as bf16 close to the f32 one.
    let shape = [2, 6, 5];
    let x = values(2 * 6 * 5, 5, 1.0);
    let targets = i64s(&[1, 2, 3, 0], &[2, 2]);
    let il = i64s(&[6, 4], &[2]);
    let tl = i64s(&[2, 1], &[2]);
    let o = CtcOptions::default();
    let w = Var::from_vec(
        x.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        &shape[..],
        &Device::Cpu,
    )
    .unwrap();
    let logits = w.as_tensor().affine(3.0, 0.0).unwrap();
    let loss = ctc_loss(&logits, &targets, &il, &tl, &o).unwrap();
    let gw = f64s(loss.backward().unwrap().get(w.as_tensor()).unwrap());
    let (_, gl) = mezcla_kernels::ctc_loss_and_grad(&logits, &targets, &il, &tl, &o).unwrap();
    for (a, b) in gw.iter().zip(f64s(&gl)) {
        assert!((a - 3.0 * b).abs() < 1e-6, "{a} vs 3 * {b}");
    }
    let wb = Var::from_tensor(&w.as_tensor().to_dtype(candle_core::DType::BF16).unwrap()).unwrap();
    let loss = ctc_loss(wb.as_tensor(), &targets, &il, &tl, &o).unwrap();
    assert_eq!(loss.dtype(), candle_core::DType::F32);
    let g = loss.backward().unwrap();
    let gb = g.get(wb.as_tensor()).unwrap();
    assert_eq!(gb.dtype(), candle_core::DType::BF16);
    let (_, g32) =
        mezcla_kernels::ctc_loss_and_grad(w.as_tensor(), &targets, &il, &tl, &o).unwrap();
    for (a, b) in f64s(gb).iter().zip(f64s(&g32)) {
        assert!((a - b).abs() < 2e-2, "bf16 {a} vs f32 {b}");
    }
}

#[test]
fn strided_input_gives_the_same_loss_and_gradient() {
    // a (T, B, C) tensor transposed to (B, T, C) is not contiguous: the op copies it, and the
    // gradient flows back through the copy and the transpose
    let (b, t, c) = (3, 8, 5);
    let x = values(b * t * c, 9, 2.0);
    let targets = i64s(&[1, 2, 1, 3, 0, 0], &[3, 2]);
    let il = i64s(&[8, 6, 5], &[3]);
    let tl = i64s(&[2, 2, 0], &[3]);
    let o = CtcOptions::default();
    let contiguous = Tensor::from_vec(x.clone(), &[b, t, c][..], &Device::Cpu).unwrap();
    let (l1, g1) = mezcla_kernels::ctc_loss_and_grad(&contiguous, &targets, &il, &tl, &o).unwrap();
    let tbc = Var::from_tensor(&contiguous.transpose(0, 1).unwrap().contiguous().unwrap()).unwrap();
    let view = tbc.as_tensor().transpose(0, 1).unwrap();
    assert!(!view.is_contiguous());
    let l2 = ctc_loss(&view, &targets, &il, &tl, &o).unwrap();
    assert_eq!(f64s(&l1), f64s(&l2));
    let g2 = loss_grad_btc(&l2, &tbc);
    assert_eq!(f64s(&g1), f64s(&g2));
}

fn loss_grad_btc(loss: &Tensor, tbc: &Var) -> Tensor {
    let g = loss.backward().unwrap();
    g.get(tbc.as_tensor())
        .unwrap()
        .transpose(0, 1)
        .unwrap()
        .contiguous()
        .unwrap()
}
