//! conv2d (direct, batched-matmul and im2col paths) and the fused first layer, with their gradients, against
//! PyTorch's Conv2d on the subsampling shapes and others (fixture from `tests/fixtures/make_conv2d_fixtures.py`).

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

fn fixture() -> HashMap<String, Tensor> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/conv2d.safetensors");
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

/// Runs `op(x, w, b, stride, padding, groups)` on the case's inputs as variables and compares its output
/// and the gradients of `sum(y * g)` with PyTorch's (`{case}.{prefix}y`, `…dx`, `…dw`, `…db`).
fn check(
    t: &HashMap<String, Tensor>,
    case: &str,
    prefix: &str,
    op: impl Fn(&Tensor, &Tensor, &Tensor, usize, usize, usize) -> candle_core::Result<Tensor>,
) {
    let get = |n: &str| t[&format!("{case}.{n}")].clone();
    let geo = get("geometry").to_vec1::<i64>().unwrap();
    let (stride, padding, groups) = (geo[0] as usize, geo[1] as usize, geo[2] as usize);
    let x = Var::from_tensor(&get("x")).unwrap();
    let w = Var::from_tensor(&get("w")).unwrap();
    let b = Var::from_tensor(&get("b")).unwrap();
    let y = op(
        x.as_tensor(),
        w.as_tensor(),
        b.as_tensor(),
        stride,
        padding,
        groups,
    )
    .unwrap();
    let d = max_diff(&y, &get(&format!("{prefix}y")));
    assert!(d < 1e-5, "{case} {prefix}: forward differs by {d}");
    let grads = (y * get(&format!("{prefix}g")))
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for (var, name) in [(&x, "dx"), (&w, "dw"), (&b, "db")] {
        let d = max_diff(
            grads.get(var.as_tensor()).unwrap(),
            &get(&format!("{prefix}{name}")),
        );
        assert!(d < 1e-4, "{case} {prefix}: {name} differs by {d}");
    }
}

#[test]
fn forward_and_gradients_match_pytorch() {
    let t = fixture();
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
        check(&t, case, "", |x, w, b, s, p, g| {
            conv2d(x, w, Some(b), s, p, g)
        });
    }
}

#[test]
fn fused_bias_mask_and_relu_match_pytorch() {
    let t = fixture();
    // "second" (4 input channels, groups 1) takes the composed path; the others the fused kernel.
    for case in [
        "first",
        "second",
        "depthwise",
        "depthwise_k5_s1",
        "first_k4_s3",
    ] {
        let valid: Vec<usize> = t[&format!("{case}.relu_masked.valid")]
            .to_vec1::<i64>()
            .unwrap()
            .into_iter()
            .map(|v| v as usize)
            .collect();
        check(&t, case, "relu_masked.", |x, w, b, s, p, g| {
            conv2d_bias_relu_masked(x, w, b, s, p, g, &valid)
        });
    }
}
