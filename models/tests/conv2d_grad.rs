//! The im2col conv2d and its gradients against PyTorch's Conv2d on the subsampling shapes (fixture from
//! `tests/fixtures/make_conv2d_fixtures.py`).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor, Var};
use mezcla_models::conv2d::{conv2d, conv2d_bias_relu_masked};

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
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
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/conv2d.safetensors");
    let t: HashMap<String, Tensor> = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    for case in [
        "first",
        "second",
        "depthwise",
        "pointwise",
        "depthwise_k5_s1",
        "depthwise_k3_s2_p0",
        "first_k4_s3",
        "first_k2_s3_p3",
    ] {
        let get = |n: &str| t[&format!("{case}.{n}")].clone();
        let geo = get("geometry").to_vec1::<i64>().unwrap();
        let (stride, padding, groups) = (geo[0] as usize, geo[1] as usize, geo[2] as usize);
        let x = Var::from_tensor(&get("x")).unwrap();
        let w = Var::from_tensor(&get("w")).unwrap();
        let b = Var::from_tensor(&get("b")).unwrap();
        let y = conv2d(
            x.as_tensor(),
            w.as_tensor(),
            Some(b.as_tensor()),
            stride,
            padding,
            groups,
        )
        .unwrap();
        assert!(max_diff(&y, &get("y")) < 1e-5, "{case}: forward");
        let grads = (y * get("g"))
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (var, name) in [(&x, "dx"), (&w, "dw"), (&b, "db")] {
            let d = max_diff(grads.get(var.as_tensor()).unwrap(), &get(name));
            assert!(d < 1e-4, "{case}: {name} differs by {d}");
        }
    }
}

#[test]
fn fused_bias_mask_and_relu_match_pytorch() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/conv2d.safetensors");
    let t: HashMap<String, Tensor> = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    // "second" (4 input channels, groups 1) takes the composed path; the others the fused kernel.
    for case in [
        "first",
        "second",
        "depthwise",
        "depthwise_k5_s1",
        "first_k4_s3",
    ] {
        let get = |n: &str| t[&format!("{case}.{n}")].clone();
        let geo = get("geometry").to_vec1::<i64>().unwrap();
        let (stride, padding, groups) = (geo[0] as usize, geo[1] as usize, geo[2] as usize);
        let valid: Vec<usize> = get("relu_masked.valid")
            .to_vec1::<i64>()
            .unwrap()
            .into_iter()
            .map(|v| v as usize)
            .collect();
        let x = Var::from_tensor(&get("x")).unwrap();
        let w = Var::from_tensor(&get("w")).unwrap();
        let b = Var::from_tensor(&get("b")).unwrap();
        let y = conv2d_bias_relu_masked(
            x.as_tensor(),
            w.as_tensor(),
            b.as_tensor(),
            stride,
            padding,
            groups,
            &valid,
        )
        .unwrap();
        assert!(
            max_diff(&y, &get("relu_masked.y")) < 1e-5,
            "{case}: forward"
        );
        let grads = (y * get("relu_masked.g"))
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (var, name) in [(&x, "dx"), (&w, "dw"), (&b, "db")] {
            let d = max_diff(
                grads.get(var.as_tensor()).unwrap(),
                &get(&format!("relu_masked.{name}")),
            );
            assert!(d < 1e-4, "{case}: {name} differs by {d}");
        }
    }
}
