//! Helpers shared by the integration tests: fixture loading and tolerance checks.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;

pub fn fixture(name: &str) -> HashMap<String, Tensor> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.safetensors"));
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("cannot load {}: {e}", path.display()))
}

pub fn f64s(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

pub fn scalar_i64(t: &Tensor) -> i64 {
    t.to_dtype(DType::I64).unwrap().to_vec1::<i64>().unwrap()[0]
}

pub fn scalar_f64(t: &Tensor) -> f64 {
    f64s(t)[0]
}

/// Losses: same infinities and NaNs, else relative error <= tol (absolute near zero).
pub fn assert_losses_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if w.is_nan() || w.is_infinite() {
            assert!(
                (g.is_nan() && w.is_nan()) || g == w,
                "{what}[{i}]: got {g}, want {w}"
            );
            continue;
        }
        let err = (g - w).abs() / w.abs().max(1e-3);
        assert!(
            err <= tol,
            "{what}[{i}]: got {g}, want {w}, rel err {err:.3e}"
        );
    }
}

/// Gradients: NaN exactly where the reference has NaN, else max |g - w| <= tol * max |w|.
pub fn assert_grads_close(got: &[f64], want: &[f64], tol: f64, what: &str) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want
        .iter()
        .filter(|v| v.is_finite())
        .fold(0f64, |m, v| m.max(v.abs()))
        .max(1e-30);
    let mut worst = 0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if w.is_nan() {
            assert!(g.is_nan(), "{what}[{i}]: got {g}, want NaN");
            continue;
        }
        assert!(g.is_finite(), "{what}[{i}]: got {g}, want {w}");
        worst = worst.max((g - w).abs() / scale);
    }
    assert!(
        worst <= tol,
        "{what}: relative error {worst:.3e} > {tol:.0e}"
    );
    worst
}
