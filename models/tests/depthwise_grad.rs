//! The depthwise Conv1d op and its gradients against PyTorch's grouped conv1d (fixture from
//! `tests/fixtures/make_depthwise_fixtures.py`), and against finite differences.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor, Var};
use mezcla_models::depthwise::depthwise_conv1d;

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

#[test]
fn forward_and_gradients_match_pytorch() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/depthwise_conv1d.safetensors");
    let t: HashMap<String, Tensor> = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    for k in [3usize, 5, 31] {
        let get = |n: &str| t[&format!("k{k}.{n}")].clone();
        let x = Var::from_tensor(&get("x")).unwrap();
        let w = Var::from_tensor(&get("w")).unwrap();
        let b = Var::from_tensor(&get("b")).unwrap();
        let y = depthwise_conv1d(
            x.as_tensor(),
            w.as_tensor(),
            Some(b.as_tensor()),
            (k - 1) / 2,
        )
        .unwrap();
        assert!(max_diff(&y, &get("y")) < 1e-5, "k={k}: forward");
        let loss = (y * get("g")).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        for (var, name) in [(&x, "dx"), (&w, "dw"), (&b, "db")] {
            let d = max_diff(grads.get(var.as_tensor()).unwrap(), &get(name));
            assert!(d < 1e-4, "k={k}: {name} differs by {d}");
        }
    }
}

#[test]
fn gradients_match_finite_differences() {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (1, 2, 6), &dev).unwrap();
    let w = Tensor::randn(0f32, 1.0, (2, 1, 3), &dev).unwrap();
    let g = Tensor::randn(0f32, 1.0, (1, 2, 6), &dev).unwrap();
    let f = |x: &Tensor, w: &Tensor| -> f64 {
        (depthwise_conv1d(x, w, None, 1).unwrap() * &g)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64
    };
    let xv = Var::from_tensor(&x).unwrap();
    let loss = (depthwise_conv1d(xv.as_tensor(), &w, None, 1).unwrap() * &g)
        .unwrap()
        .sum_all()
        .unwrap();
    let dx = loss
        .backward()
        .unwrap()
        .get(xv.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let eps = 1e-2f32;
    for i in 0..xs.len() {
        let mut plus = xs.clone();
        plus[i] += eps;
        let mut minus = xs.clone();
        minus[i] -= eps;
        let fp = f(&Tensor::from_vec(plus, (1, 2, 6), &dev).unwrap(), &w);
        let fm = f(&Tensor::from_vec(minus, (1, 2, 6), &dev).unwrap(), &w);
        let numeric = (fp - fm) / (2.0 * eps as f64);
        assert!(
            (numeric - dx[i] as f64).abs() < 1e-2,
            "dx[{i}]: {numeric} vs {}",
            dx[i]
        );
    }
}
