#!/usr/bin/env python3
"""Training step time of the same model and batch: `mezcla train` against NeMo on PyTorch CPU, in the same run.

Usage (from the repository root, on a quiet machine):
    /work/pyref/bin/python bench/train_step.py [--batch 8] [--seconds 5] [--warmup 4] [--steps 12] [--threads 2] \
        [--layers 16] [--subsampling striding] [--factor 4]

Model: mezcla's `small` preset (Conformer-CTC Small shapes: d_model 176, 16 layers, 4 heads, kernel 31,
striding x4, 80 mels, dropout 0.1 everywhere) and NeMo's EncDecCTCModelBPE with the same encoder config, both
with a 256-piece SentencePiece BPE vocabulary (the same file), so the same parameter count (checked).
`--layers`, `--subsampling` and `--factor` change the depth and the subsampling on both sides (the English-Spanish
recipe's model: `--layers 4 --subsampling dw_striding --factor 8`).
Batch: the `--batch` English espeak-ng utterances (`mezcla datagen tts` of fortunes sentences) whose durations are
nearest `--seconds`; every step of both sides sees exactly these utterances, zero-padded to the longest
(mezcla: one manifest of these utterances, `buckets = 1` and `max_duration` = batch x longest, so each epoch
is that one batch). No SpecAugment on either side; AdamW (betas 0.9/0.98, weight decay 1e-3), gradient-norm
clip 1.0, CTC loss reduced by mean over the batch, train mode (dropout on).

* mezcla: `mezcla train` (RAYON_NUM_THREADS=`--threads`) for warmup + steps steps, no validation, one
  checkpoint at the end. A step's time is read from metrics.jsonl: `steps_per_second` at step k is
  k / (seconds since the loop started), so the time of step k is the difference of k / steps_per_second
  between steps k and k-1. It covers receiving the prepared batch from the loader thread (features computed
  ahead, in parallel), forward, CTC loss, backward, gradient collection, clipping and the AdamW update.
* NeMo: torch.set_num_threads(`--threads`); per step `model.forward(input_signal, length)` (preprocessor with
  dither, encoder, CTC head), `model.loss` (NeMo's CTCLoss), `backward`, `clip_grad_norm_(1.0)`,
  `torch.optim.AdamW.step`, `zero_grad`; the padded audio and target tensors are built before the clock.
The first `--warmup` steps of each side are dropped; the median of the next `--steps` is reported.
Diagnostic: mezcla is run a second time with GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:
glibc.malloc.trim_threshold=17179869184 (freed blocks up to 32 MiB stay in the heap), to size the cost of the
allocator's mmap/munmap churn.

Prints the result and writes bench/out/asr/train_step.json (train_step_<layers>l_<subsampling><factor>.json for
another shape).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import time

import torch
from omegaconf import OmegaConf

import asr_common as C


def pick_batch(n, seconds):
    m = C.corpus()
    entries = C.read_manifest(m["en"])
    entries.sort(key=lambda e: (abs(e["duration"] - seconds), e["audio_filepath"]))
    batch = sorted(entries[:n], key=lambda e: e["audio_filepath"])
    path = C.OUT / "train_batch.json"
    with open(path, "w") as fh:
        for e in batch:
            fh.write(json.dumps({"audio_filepath": e["audio_filepath"], "duration": e["duration"],
                                 "text": C.plain_text(e).lower()}) + "\n")
    return path, batch


# The optimiser of the step-time runs: Noam warm-up over 1000 steps (the loss hardly moves in a timed run).
NOAM_OPTIM = """lr = 1e-4
schedule = "noam"
warmup_steps = 1000"""


def encoder_toml(encoder, dropout):
    """An `[encoder]` table: the `small` preset's shapes with `encoder`'s overrides (NeMo's key names)."""
    enc = dict(C.nemo_cfg("unused", dropout=dropout)["encoder"], **encoder)
    keys = ["feat_in", "n_layers", "d_model", "feat_out", "subsampling", "subsampling_factor",
            "subsampling_conv_channels", "ff_expansion_factor", "n_heads", "xscaling", "untie_biases",
            "pos_emb_max_len", "conv_kernel_size", "conv_norm_type", "dropout", "dropout_pre_encoder",
            "dropout_emb", "dropout_att"]
    return "[encoder]\n" + "\n".join(f"{k} = {json.dumps(enc[k])}" for k in keys) + "\n"


def run_mezcla(manifest, tok, batch, steps, threads, name="train_mezcla", extra_env=None, optim=NOAM_OPTIM,
               dropout=0.1, init_from=None, encoder=None):
    """Returns step seconds, the run's summary, and the metrics lines (loss, grad_norm, ... per step).
    `encoder`: overrides of the `small` preset's encoder config (NeMo's key names), e.g. {"n_layers": 4}."""
    out = C.OUT / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    longest = max(e["duration"] for e in batch)
    cfg = out / "train.toml"
    cfg.write_text(f"""out_dir = "{out / 'run'}"
tokenizer = "{tok / 'tokenizer.model'}"
train_manifests = ["{manifest}"]
{f'init_from = "{init_from}"' if init_from else ('' if encoder else 'model = "small"')}
max_steps = {steps}
seed = 0

[batch]
max_duration = {len(batch) * longest + 0.01:.4f}
buckets = 1
accumulate = 1

[optim]
{optim}
weight_decay = 1e-3
grad_clip = 1.0
dropout = {dropout}

[eval]
every = {steps}
{encoder_toml(encoder, dropout) if encoder and not init_from else ""}""")
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), **(extra_env or {}))
    r = subprocess.run([str(C.MEZCLA), "train", "--config", str(cfg), "--json"], check=True,
                       capture_output=True, text=True, env=env)
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    lines = [json.loads(l) for l in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    elapsed = [l["step"] / l["steps_per_second"] for l in lines]
    step_s = [elapsed[0]] + [b - a for a, b in zip(elapsed, elapsed[1:])]
    return step_s, summary, lines


def run_nemo(batch, tok, steps, threads, dropout=0.1, dither=1e-5, save_init=None, lr=1e-4, encoder=None):
    """Returns step seconds, the parameter count, the losses, the target lengths and the gradient norms
    (before clipping). `save_init`: a path to save the initial model to (`.nemo`), before the first step."""
    import soundfile as sf
    from nemo.collections.asr.models import EncDecCTCModelBPE

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = C.nemo_cfg(tok, dropout=dropout)
    cfg["preprocessor"]["dither"] = dither
    cfg["encoder"].update(encoder or {})
    model = EncDecCTCModelBPE(cfg=OmegaConf.create(cfg))
    if save_init:
        model.save_to(str(save_init))
    assert model.spec_augmentation is None
    model.train()
    audios = [torch.from_numpy(sf.read(e["audio_filepath"], dtype="float32")[0]) for e in batch]
    lens = torch.tensor([len(a) for a in audios])
    x = torch.zeros(len(audios), int(lens.max()))
    for i, a in enumerate(audios):
        x[i, : len(a)] = a
    ids = [model.tokenizer.text_to_ids(e["text"].lower()) for e in batch]
    tlens = torch.tensor([len(t) for t in ids])
    tgt = torch.zeros(len(ids), int(tlens.max()), dtype=torch.long)
    for i, t in enumerate(ids):
        tgt[i, : len(t)] = torch.tensor(t)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), weight_decay=1e-3)
    step_s, losses, norms = [], [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        lp, enc_len, _ = model.forward(input_signal=x, input_signal_length=lens)
        loss = model.loss(log_probs=lp, targets=tgt, input_lengths=enc_len, target_lengths=tlens)
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(params, 1.0)))
        opt.step()
        opt.zero_grad(set_to_none=True)
        step_s.append(time.perf_counter() - t0)
        losses.append(float(loss))
    n_params = sum(p.numel() for p in params)
    return step_s, n_params, losses, [len(t) for t in ids], norms


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--subsampling", default="striding")
    ap.add_argument("--factor", type=int, default=4)
    args = ap.parse_args()
    shape = (args.layers, args.subsampling, args.factor)
    encoder = {} if shape == (16, "striding", 4) else {
        "n_layers": args.layers, "subsampling": args.subsampling, "subsampling_factor": args.factor}
    suffix = "" if not encoder else f"_{args.layers}l_{args.subsampling}{args.factor}"
    C.build_mezcla()
    C.OUT.mkdir(parents=True, exist_ok=True)
    tok = C.tokenizer(256)
    manifest, batch = pick_batch(args.batch, args.seconds)
    durs = [e["duration"] for e in batch]
    total = args.warmup + args.steps
    print(f"batch: {len(batch)} utterances, {min(durs):.2f}-{max(durs):.2f} s (padded {len(batch) * max(durs):.1f} s)",
          flush=True)

    mz_steps, mz_summary, mz_lines = run_mezcla(manifest, tok, batch, total, args.threads, encoder=encoder)
    mz_losses = [l["loss"] for l in mz_lines]
    # Diagnostic: the same run with glibc's malloc keeping freed blocks up to 32 MiB in the heap (fixed mmap
    # threshold, no trimming), to measure what the allocator's mmap/munmap churn (page faults, zeroing, TLB
    # shoot-downs) costs.
    tun = {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=17179869184"}
    mzt_steps, _, _ = run_mezcla(manifest, tok, batch, total, args.threads, "train_mezcla_tunables", tun,
                                 encoder=encoder)
    nm_steps, nm_params, nm_losses, tgt_lens, _ = run_nemo(batch, tok, total, args.threads, encoder=encoder)
    mz = statistics.median(mz_steps[args.warmup:])
    mzt = statistics.median(mzt_steps[args.warmup:])
    nm = statistics.median(nm_steps[args.warmup:])
    res = {
        "versions": C.versions(), "threads": args.threads, "batch_durations": durs,
        "encoder": {"n_layers": args.layers, "subsampling": args.subsampling, "subsampling_factor": args.factor},
        "target_lengths": tgt_lens, "git": subprocess.run(["git", "describe", "--always", "--dirty"], cwd=C.ROOT,
                                                         capture_output=True, text=True).stdout.strip(), "warmup": args.warmup, "steps": args.steps,
        "mezcla": {"step_seconds": mz_steps, "median_ms": mz * 1e3, "parameters": mz_summary["parameters"],
                   "losses": mz_losses},
        "mezcla_glibc_tunables": {"step_seconds": mzt_steps, "median_ms": mzt * 1e3, "env": tun},
        "nemo": {"step_seconds": nm_steps, "median_ms": nm * 1e3, "parameters": nm_params, "losses": nm_losses},
        "ratio_mezcla_over_nemo": mz / nm,
    }
    with open(C.OUT / f"train_step{suffix}.json", "w") as fh:
        json.dump(res, fh, indent=1)
    print(json.dumps(res["versions"]))
    print(f"target lengths {tgt_lens}; parameters mezcla {mz_summary['parameters']}, NeMo {nm_params}")
    print(f"mezcla steps (s): {[round(s, 3) for s in mz_steps]}")
    print(f"mezcla steps, GLIBC_TUNABLES (s): {[round(s, 3) for s in mzt_steps]}")
    print(f"NeMo steps (s):   {[round(s, 3) for s in nm_steps]}")
    print(f"first losses: mezcla {mz_losses[0]:.2f}, NeMo {nm_losses[0]:.2f}")
    print("| side | median ms/step | step time vs NeMo | speed-up |")
    print("|---|---|---|---|")
    print(f"| NeMo | {nm * 1e3:.0f} | 1x | 1x |")
    print(f"| mezcla | {mz * 1e3:.0f} | {mz / nm:.2f}x | **{nm / mz:.2f}x** |")
    print(f"| mezcla, GLIBC_TUNABLES (diagnostic) | {mzt * 1e3:.0f} | {mzt / nm:.2f}x | {nm / mzt:.2f}x |")


if __name__ == "__main__":
    main()
