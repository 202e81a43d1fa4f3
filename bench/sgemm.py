#!/usr/bin/env python3
"""f32 matrix products of the Conformer's shapes: mezcla's `kernels::sgemm` against PyTorch (MKL / oneDNN), in the
same run.

Usage (from the repository root, on a quiet machine):
    /work/pyref/bin/python bench/sgemm.py [--reps 200] [--threads 1 2]

For each thread count, runs `target/release/examples/sgemm_bench REPS` (RAYON_NUM_THREADS=threads: C = A·Wᵀ with
W packed once, as the CPU inference path does) and times `torch.nn.functional.linear(a, w)` on the same shapes
(torch.set_num_threads(threads), inference_mode, weights contiguous [n, k] as a linear layer holds them). Each
side reports the best of REPS calls after a warm-up; the shapes are a `small` Conformer's on 10 s of audio.
Prints a table per thread count and writes bench/out/sgemm.json.
"""

import argparse
import json
import os
import pathlib
import subprocess
import time

import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "target" / "release" / "examples" / "sgemm_bench"


def torch_best(m, k, n, reps):
    a = torch.rand(m, k) - 0.5
    w = torch.rand(n, k) - 0.5
    best = float("inf")
    with torch.inference_mode():
        for _ in range(5):
            torch.nn.functional.linear(a, w)
        for _ in range(reps):
            t0 = time.perf_counter()
            torch.nn.functional.linear(a, w)
            best = min(best, time.perf_counter() - t0)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "mezcla-kernels", "--example", "sgemm_bench"],
                   cwd=ROOT, check=True)
    out = {"torch": torch.__version__, "runs": []}
    for threads in args.threads:
        env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
        r = subprocess.run([str(EXAMPLE), str(args.reps)], check=True, capture_output=True, text=True, env=env)
        rows = [json.loads(line) for line in r.stdout.splitlines()]
        torch.set_num_threads(threads)
        print(f"\n{threads} thread(s); mezcla kernel {rows[0]['kernel']}; torch {torch.__version__}")
        print("| product | M × K × N | mezcla GFLOP/s | torch GFLOP/s | mezcla / torch |")
        print("|---|---|---|---|---|")
        for row in rows:
            m, k, n = row["m"], row["k"], row["n"]
            t = torch_best(m, k, n, args.reps)
            tg = 2 * m * k * n / t / 1e9
            row.update(threads=threads, torch_seconds=t, torch_gflops=tg, ratio=row["gflops"] / tg)
            print(f"| {row['shape']} | {m} × {k} × {n} | {row['gflops']:.1f} | {tg:.1f} | {row['ratio']:.2f}x |")
            out["runs"].append(row)
    path = ROOT / "bench" / "out" / "sgemm.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
