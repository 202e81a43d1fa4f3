//! Throughput of `sgemm::gemm` on the Conformer's shapes, for bench/sgemm.py.
//!
//! Usage: `sgemm_bench [REPS]`. For each shape (M, K, N) — the products of a `small` Conformer on 10 s of
//! audio — times REPS calls on rayon's threads and prints one JSON line with the best time and its GFLOP/s.

use std::time::Instant;

use mezcla_kernels::sgemm::{gemm, kernel_name, PackedB};

fn main() {
    let reps: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("REPS: a number"))
        .unwrap_or(50);
    let shapes = [
        ("ff1", 250, 176, 704),
        ("ff2", 250, 704, 176),
        ("qkv", 250, 176, 528),
        ("scores", 250, 44, 250),
        ("context", 250, 250, 44),
        ("subsampling", 320, 1584, 176),
    ];
    for (name, m, k, n) in shapes {
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 104729) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let b = PackedB::from_transposed(&w, n, k, k);
        let mut c = vec![0f32; m * n];
        let mut best = f64::INFINITY;
        for _ in 0..reps {
            let t0 = Instant::now();
            gemm(&a, k, m, &b, &mut c, n, false, true);
            best = best.min(t0.elapsed().as_secs_f64());
        }
        let gflops = 2.0 * (m * k * n) as f64 / best / 1e9;
        println!(
            r#"{{"shape": "{name}", "m": {m}, "k": {k}, "n": {n}, "seconds": {best:e}, "gflops": {gflops:.2}, "kernel": "{}"}}"#,
            kernel_name()
        );
    }
}
