#!/usr/bin/env python3
"""Log-mel front-end throughput: NeMo's AudioToMelSpectrogramPreprocessor against mezcla-models' MelFrontend.

Usage (from the repository root):
    cargo build --release -p mezcla-models --example frontend_bench
    /work/pyref/bin/python bench/frontend.py [--utts 100] [--batch 16] [--threads 2] [--reps 3]

Writes `--utts` speech-like utterances of 5-15 s at 16 kHz (seeded) to bench/out/frontend/, then in the same
run times, on exactly those samples and the typical Conformer config (eval mode, so no dither):
  * NeMo: the preprocessor on zero-padded batches of `--batch` in file order, torch CPU with `--threads`
    intra-op threads (torch.set_num_threads), inside torch.inference_mode;
  * mezcla: target/release/examples/frontend_bench, `MelFrontend::batch` on the same batches (rayon over the
    utterances, RAYON_NUM_THREADS=`--threads`), building the same [B, n_mels, T] tensor.
Each is the median of `--reps` passes over all batches after one warm-up pass. Prints utterance-seconds of
audio per second of wall time for both and the ratio, and mezcla's max abs difference from NeMo on batch 0.
"""

import argparse
import json
import os
import subprocess
import time

import numpy as np
import torch
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench", "out", "frontend")
BIN = os.path.join(ROOT, "target", "release", "examples", "frontend_bench")

CONFIG = dict(sample_rate=16000, window_size=0.025, window_stride=0.01, window="hann", n_fft=512, features=80,
              normalize="per_feature", log=True, frame_splicing=1, dither=1e-5, pad_to=0, pad_value=0.0)


def make_utts(n, sr=16000):
    rng = np.random.default_rng(5)
    utts = []
    for _ in range(n):
        length = int(rng.uniform(5, 15) * sr)
        t = np.arange(length) / sr
        f0 = 120 + 40 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6))
        phase = 2 * np.pi * np.cumsum(f0) / sr
        x = sum(0.2 / k * np.sin(k * phase) for k in range(1, 8))
        env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t + rng.uniform(0, 6)) ** 2
        utts.append((x * env + rng.normal(0, 0.02, length)).astype(np.float32))
    return utts


def batches(utts, b):
    for i in range(0, len(utts), b):
        chunk = utts[i: i + b]
        lengths = torch.tensor([len(u) for u in chunk], dtype=torch.long)
        x = torch.zeros(len(chunk), int(lengths.max()))
        for j, u in enumerate(chunk):
            x[j, : len(u)] = torch.from_numpy(u)
        yield x, lengths


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--utts", type=int, default=100)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    utts = make_utts(args.utts)
    audio_s = sum(len(u) for u in utts) / 16000
    with open(os.path.join(OUT, "utts.f32"), "wb") as fh:
        for u in utts:
            fh.write(u.astype("<f4").tobytes())
    with open(os.path.join(OUT, "utts.json"), "w") as fh:
        json.dump(dict(lengths=[len(u) for u in utts], sample_rate=16000, config=CONFIG), fh)

    from nemo.collections.asr.modules.audio_preprocessing import AudioToMelSpectrogramPreprocessor

    torch.set_num_threads(args.threads)
    pre = AudioToMelSpectrogramPreprocessor(**CONFIG).eval()
    data = list(batches(utts, args.batch))
    with torch.inference_mode():
        f0, l0 = pre(input_signal=data[0][0], length=data[0][1])
        save_file({"features": f0.contiguous(), "lengths": l0}, os.path.join(OUT, "nemo_batch0.safetensors"))
        times = []
        for rep in range(args.reps + 1):
            t0 = time.perf_counter()
            for x, lengths in data:
                pre(input_signal=x, length=lengths)
            if rep > 0:
                times.append(time.perf_counter() - t0)
    nemo_s = sorted(times)[len(times) // 2]

    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    res = subprocess.run([BIN, OUT, str(args.batch), str(args.reps)], env=env, check=True, capture_output=True,
                         text=True)
    mz = json.loads(res.stdout.strip().splitlines()[-1])
    assert abs(mz["audio_seconds"] - audio_s) < 1e-6
    nemo_rate, mz_rate = audio_s / nemo_s, audio_s / mz["seconds"]
    print(f"{args.utts} utterances, {audio_s:.1f} s of audio, batch {args.batch}, {args.threads} threads, "
          f"median of {args.reps}")
    print("| tool | time | utterance-seconds / s | ratio |")
    print("|---|---|---|---|")
    print(f"| NeMo {__import__('nemo').__version__} (torch {torch.__version__}) | {nemo_s:.3f} s | "
          f"{nemo_rate:.0f} | 1× |")
    print(f"| mezcla (release, {mz['threads']} rayon threads) | {mz['seconds']:.3f} s | {mz_rate:.0f} | "
          f"**{mz_rate / nemo_rate:.1f}×** |")
    print(f"max abs diff from NeMo on batch 0: {mz['max_abs_diff_batch0']:.2e}")


if __name__ == "__main__":
    main()
