#!/usr/bin/env python3
"""Forward+backward time and peak memory of mezcla-kernels' CTC / RNN-T against torch / torchaudio.

Usage (from the repository root, after `cargo build --release -p mezcla-kernels --example bench_losses`):
    /work/pyref/bin/python bench/losses.py [--reps N]

For each shape the script writes one set of random inputs to bench/out/ (safetensors), then in the
same run measures, each in a fresh process on exactly those inputs:
  * the reference: CTC = torch.nn.functional.ctc_loss(log_softmax(logits)) (torch's default
    threads), RNN-T = torchaudio.functional.rnnt_loss (fused log-softmax, CPU, single-threaded);
  * mezcla: target/release/examples/bench_losses, which times the candle autograd path
    (`loss.backward()`) and the graph-free `*_loss_and_grad` path (rayon, all cores).
Loss: reduction `mean` (torch's) for CTC, batch mean for torchaudio and mezcla's RNN-T (the same
gradient up to a per-sample scale, so the work is identical). Times are medians of N runs after a
warm-up; memory is the peak resident memory above the level before one forward+backward
(/proc/self/clear_refs reset, then VmHWM - VmRSS), i.e. the loss's extra memory including the
gradient, taken from a second run with glibc's mmap threshold fixed (see ENV). Prints a markdown
table with the ratios mezcla / reference.
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench", "out")
BIN = os.path.join(ROOT, "target", "release", "examples", "bench_losses")

SHAPES = [
    ("ctc", dict(B=16, T=500, C=1024, U=100)),
    ("ctc", dict(B=32, T=200, C=256, U=60)),
    ("rnnt", dict(B=8, T=200, U=50, C=512)),
    ("rnnt", dict(B=4, T=400, U=100, C=1024)),
]


def status_kb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    return None


def make_inputs(kind, s, path):
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(1234)
    B, T, U, C = s["B"], s["T"], s["U"], s["C"]
    blank = C - 1
    targets = torch.randint(0, C - 1, (B, U), generator=g, dtype=torch.int32)
    assert int((targets == blank).sum()) == 0
    if kind == "ctc":
        logits = torch.randn(B, T, C, generator=g)
        t = {"logits": logits, "targets": targets,
             "input_lengths": torch.full((B,), T, dtype=torch.int32),
             "target_lengths": torch.full((B,), U, dtype=torch.int32)}
    else:
        logits = torch.randn(B, T, U + 1, C, generator=g)
        t = {"logits": logits, "targets": targets,
             "logit_lengths": torch.full((B,), T, dtype=torch.int32),
             "target_lengths": torch.full((B,), U, dtype=torch.int32)}
    save_file(t, path)


def worker(kind, path, reps):
    """Reference timing in this (fresh) process; prints one JSON line."""
    import torch
    import torch.nn.functional as F
    from safetensors.torch import load_file

    t = load_file(path)
    logits = t["logits"]
    if kind == "ctc":
        tg = t["targets"].long()
        il = t["input_lengths"].long()
        tl = t["target_lengths"].long()
        C = logits.shape[-1]

        def run():
            x = logits.detach().requires_grad_()
            lp = F.log_softmax(x, -1).transpose(0, 1)
            loss = F.ctc_loss(lp, tg, il, tl, blank=C - 1, reduction="mean")
            loss.backward()
            return x.grad
    else:
        import torchaudio.functional as TAF

        tg, ll, tl = t["targets"], t["logit_lengths"], t["target_lengths"]

        def run():
            x = logits.detach().requires_grad_()
            loss = TAF.rnnt_loss(x, tg, ll, tl, blank=-1, reduction="mean")
            loss.backward()
            return x.grad

    run()  # warm-up
    open("/proc/self/clear_refs", "w").write("5")
    before = status_kb("VmRSS:")
    g = run()
    peak = (status_kb("VmHWM:") - before) / 1024.0
    del g
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    print(json.dumps({"path": "reference", "median_ms": times[len(times) // 2],
                      "peak_extra_mib": peak, "threads": torch.get_num_threads()}))


# A fixed glibc mmap threshold (for both sides): large buffers are always fresh mmaps returned to
# the OS on free, so each measured run's peak really includes its own gradient instead of reusing
# heap pages a previous run left resident (glibc's dynamic threshold would hide up to 32 MiB).
ENV = dict(os.environ, GLIBC_TUNABLES="glibc.malloc.mmap_threshold=131072")


def run_json(cmd, env=None):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return [json.loads(l) for l in out.splitlines() if l.startswith("{")]


def measure(cmd_for_reps, reps):
    """Times with the default allocator (as a training run would see it), peak memory from a
    second run with the fixed mmap threshold; returns {path: {median_ms, peak_extra_mib, ...}}."""
    timed = {r["path"]: r for r in run_json(cmd_for_reps(reps))}
    mem = {r["path"]: r for r in run_json(cmd_for_reps(1), env=ENV)}
    for k, r in timed.items():
        r["peak_extra_mib"] = mem[k]["peak_extra_mib"]
    return timed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--worker", nargs=3, metavar=("KIND", "PATH", "REPS"))
    a = ap.parse_args()
    if a.worker:
        worker(a.worker[0], a.worker[1], int(a.worker[2]))
        return
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} missing: cargo build --release -p mezcla-kernels --example bench_losses")
    os.makedirs(OUT, exist_ok=True)
    rows = []
    for kind, s in SHAPES:
        name = f"{kind}_" + "_".join(f"{k}{v}" for k, v in s.items())
        path = os.path.join(OUT, name + ".safetensors")
        make_inputs(kind, s, path)
        ref = measure(lambda n: [sys.executable, __file__, "--worker", kind, path, str(n)],
                      a.reps)["reference"]
        ours = measure(lambda n: [BIN, kind, path, str(n)], a.reps)
        rows.append((kind, s, ref, ours))
        os.remove(path)
        print(f"{name}: ref {ref}, mezcla {ours}", file=sys.stderr)
    refname = {"ctc": "torch ctc_loss", "rnnt": "torchaudio rnnt_loss"}
    print("| loss | shape (B, T, U, C) | reference | ref ms | ref peak MiB | mezcla autograd ms (ratio) "
          "| mezcla loss_and_grad ms (ratio) | mezcla peak MiB autograd / loss_and_grad |")
    print("|---|---|---|---|---|---|---|---|")
    for kind, s, ref, ours in rows:
        au, lg = ours["autograd"], ours["loss_and_grad"]
        thr = f"{ref['threads']} thr" if kind == "ctc" else "single-threaded kernel"
        print(f"| {kind} | ({s['B']}, {s['T']}, {s['U']}, {s['C']}) | {refname[kind]} "
              f"({thr}) | {ref['median_ms']:.1f} | {ref['peak_extra_mib']:.0f} | "
              f"{au['median_ms']:.1f} ({au['median_ms'] / ref['median_ms']:.2f}x) | "
              f"{lg['median_ms']:.1f} ({lg['median_ms'] / ref['median_ms']:.2f}x) | "
              f"{au['peak_extra_mib']:.0f} / {lg['peak_extra_mib']:.0f} |")


if __name__ == "__main__":
    main()
