//! Bad inputs give errors naming the problem, never panics.

use candle_core::{DType, Device, Tensor};
use mezcla_kernels::{ctc_loss, rnnt_loss, CtcOptions, RnntOptions};

fn t_i64(v: &[i64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
}

fn zeros(shape: &[usize]) -> Tensor {
    Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap()
}

fn ctc_err(x: &Tensor, tg: &Tensor, il: &Tensor, tl: &Tensor, o: &CtcOptions) -> String {
    match ctc_loss(x, tg, il, tl, o) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn rnnt_err(x: &Tensor, tg: &Tensor, ll: &Tensor, tl: &Tensor, o: &RnntOptions) -> String {
    match rnnt_loss(x, tg, ll, tl, o) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn ctc_rejects_bad_inputs() {
    let o = CtcOptions::default();
    let x = zeros(&[2, 5, 4]);
    let tg = t_i64(&[0, 1, 2, 0], &[2, 2]);
    let il = t_i64(&[5, 4], &[2]);
    let tl = t_i64(&[2, 1], &[2]);
    assert!(ctc_loss(&x, &tg, &il, &tl, &o).is_ok());
    let cases: Vec<(String, &str)> = vec![
        (
            ctc_err(&zeros(&[2, 5]), &tg, &il, &tl, &o),
            "shape mismatch",
        ),
        (
            ctc_err(&x, &tg, &t_i64(&[5], &[1]), &tl, &o),
            "shape mismatch",
        ),
        (
            ctc_err(&x, &tg, &t_i64(&[6, 4], &[2]), &tl, &o),
            "input_lengths[0] = 6",
        ),
        (
            ctc_err(&x, &tg, &t_i64(&[-1, 4], &[2]), &tl, &o),
            "length out of range",
        ),
        (
            ctc_err(&x, &tg, &il, &t_i64(&[3, 1], &[2]), &o),
            "exceeds the padded",
        ),
        (
            ctc_err(&x, &t_i64(&[0, 4, 2, 0], &[2, 2]), &il, &tl, &o),
            "outside 0..4",
        ),
        (
            ctc_err(&x, &t_i64(&[0, 3, 2, 0], &[2, 2]), &il, &tl, &o),
            "is the blank id",
        ),
        (ctc_err(&x, &t_i64(&[0, 1], &[2]), &il, &tl, &o), "sum to 3"),
        (
            ctc_err(&x, &zeros(&[2, 2]), &il, &tl, &o),
            "unsupported dtype",
        ),
        (
            ctc_err(&x.to_dtype(DType::U8).unwrap(), &tg, &il, &tl, &o),
            "unsupported dtype",
        ),
        (
            ctc_err(
                &x,
                &tg,
                &il,
                &tl,
                &CtcOptions {
                    blank: Some(4),
                    ..o
                },
            ),
            "blank id 4",
        ),
    ];
    for (msg, want) in cases {
        assert!(msg.contains(want), "{msg:?} should mention {want:?}");
    }
}

#[test]
fn rnnt_rejects_bad_inputs() {
    let o = RnntOptions::default();
    let x = zeros(&[2, 4, 3, 5]);
    let tg = t_i64(&[0, 1, 2, 0], &[2, 2]);
    let ll = t_i64(&[4, 2], &[2]);
    let tl = t_i64(&[2, 1], &[2]);
    assert!(rnnt_loss(&x, &tg, &ll, &tl, &o).is_ok());
    let cases: Vec<(String, &str)> = vec![
        (
            rnnt_err(&zeros(&[2, 4, 5]), &tg, &ll, &tl, &o),
            "(B, T, U + 1, C)",
        ),
        (
            rnnt_err(&x, &tg, &t_i64(&[0, 2], &[2]), &tl, &o),
            "logit_lengths[0] = 0",
        ),
        (
            rnnt_err(&x, &tg, &t_i64(&[5, 2], &[2]), &tl, &o),
            "logit_lengths[0] = 5",
        ),
        (
            rnnt_err(&x, &tg, &ll, &t_i64(&[3, 1], &[2]), &o),
            "target_lengths[0] = 3",
        ),
        (
            rnnt_err(&x, &t_i64(&[0, 4, 2, 0], &[2, 2]), &ll, &tl, &o),
            "is the blank id",
        ),
        (
            rnnt_err(&x, &t_i64(&[0, 7, 2, 0], &[2, 2]), &ll, &tl, &o),
            "outside 0..5",
        ),
        (
            rnnt_err(&x, &t_i64(&[0, 1, 2], &[3]), &ll, &tl, &o),
            "targets must be (B, S)",
        ),
        (
            rnnt_err(
                &x,
                &tg,
                &ll,
                &tl,
                &RnntOptions {
                    clamp: Some(f32::NAN),
                    ..o
                },
            ),
            "clamp is NaN",
        ),
        (
            rnnt_err(
                &x,
                &tg,
                &ll,
                &tl,
                &RnntOptions {
                    fastemit_lambda: -0.1,
                    ..o
                },
            ),
            "fastemit_lambda",
        ),
    ];
    for (msg, want) in cases {
        assert!(msg.contains(want), "{msg:?} should mention {want:?}");
    }
}
