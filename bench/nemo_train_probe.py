#!/usr/bin/env python3
"""NeMo's own training of the recipe's model on the recipe's data, as an independent check of how fast a
Conformer-CTC leaves the CTC blank plateau on this data and these 2 cores (recipes/en_es/RESULTS.md).

The model is built from NeMo's modules (AudioToMelSpectrogramPreprocessor, ConformerEncoder, ConvASRDecoder,
CTCLoss with `mean_batch`) with recipes/en_es/train.toml's encoder; the targets are the concatenated tokenizer's
ids (each segment encoded by its language's SentencePiece model, offset by the language's position); batches of
at most `--batch-seconds` padded seconds from length buckets, AdamW (0.9, 0.98), weight decay 1e-3, clip 1.0,
linear warm-up then cosine. Every `--eval-every` steps: greedy CER on the validation manifest.

    /work/pyref/bin/python bench/nemo_train_probe.py --data data/en_es --minutes 12 --out bench/out/nemo_probe.jsonl
"""
import argparse
import json
import math
import os
import random
import sys
import time

import jiwer
import numpy as np
import sentencepiece as spm
import soundfile as sf
import torch

ap = argparse.ArgumentParser()
ap.add_argument("--data", default="data/en_es")
ap.add_argument("--tokenizer", default=None, help="default: DATA/tokenizer")
ap.add_argument("--minutes", type=float, default=12)
ap.add_argument("--steps", type=int, default=6000, help="the cosine schedule's length")
ap.add_argument("--lr", type=float, default=1e-3)
ap.add_argument("--warmup", type=int, default=300)
ap.add_argument("--batch-seconds", type=float, default=30.0)
ap.add_argument("--layers", type=int, default=8)
ap.add_argument("--subsampling", default="dw_striding")
ap.add_argument("--factor", type=int, default=8)
ap.add_argument("--eval-every", type=int, default=200)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--out", default="bench/out/nemo_probe.jsonl")
args = ap.parse_args()

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import asr_common as C  # noqa: E402
from nemo.collections.asr.losses.ctc import CTCLoss
from nemo.collections.asr.modules import AudioToMelSpectrogramPreprocessor, ConformerEncoder, ConvASRDecoder

torch.set_num_threads(args.threads)
torch.manual_seed(args.seed)
random.seed(args.seed)
data = args.data
tokdir = args.tokenizer or os.path.join(data, "tokenizer")
langs = json.load(open(os.path.join(tokdir, "concat_tokenizer.json")))
print(langs, file=sys.stderr)
sps, offsets, off = {}, {}, 0
for i, lang in enumerate(["en", "es"]):
    sp = spm.SentencePieceProcessor(model_file=os.path.join(tokdir, f"{i:02d}_{lang}.model"))
    sps[lang], offsets[lang] = sp, off
    off += sp.get_piece_size()
vocab = off


def load(name):
    path = os.path.join(data, "manifests", name)
    out = []
    for line in open(path):
        e = json.loads(line)
        segs = e["text"] if isinstance(e["text"], list) else [{"str": e["text"], "lang": e["lang"]}]
        ids = [offsets[s["lang"]] + t for s in segs for t in sps[s["lang"]].encode(s["str"])]
        wav = os.path.normpath(os.path.join(os.path.dirname(path), e["audio_filepath"]))
        out.append((wav, e["duration"], ids, " ".join(s["str"] for s in segs)))
    return out


train = load("en_train.json") + load("es_train.json") + load("cs_train.json")
val = load("cs_dev_val.json")


def batches():
    epoch = 0
    while True:
        order = sorted(range(len(train)), key=lambda i: train[i][1])
        per = math.ceil(len(order) / 8)
        out = []
        rng = random.Random(args.seed * 1000 + epoch)
        for b in range(0, len(order), per):
            bucket = order[b:b + per]
            rng.shuffle(bucket)
            cur, longest = [], 0.0
            for i in bucket:
                d = train[i][1]
                if cur and (len(cur) + 1) * max(longest, d) > args.batch_seconds:
                    out.append(cur)
                    cur, longest = [], 0.0
                cur.append(i)
                longest = max(longest, d)
            if cur:
                out.append(cur)
        rng.shuffle(out)
        yield from out
        epoch += 1


# mezcla's `small` front-end and encoder (bench/asr_common.py), with the recipe's depth and subsampling.
cfg = C.nemo_cfg(tokdir, dropout=0.0)
pre = AudioToMelSpectrogramPreprocessor(**{k: v for k, v in cfg["preprocessor"].items() if k != "_target_"})
enc_cfg = {k: v for k, v in cfg["encoder"].items() if k != "_target_"}
enc_cfg.update(n_layers=args.layers, subsampling=args.subsampling, subsampling_factor=args.factor)
enc = ConformerEncoder(**enc_cfg)
dec = ConvASRDecoder(feat_in=176, num_classes=vocab)
loss_fn = CTCLoss(num_classes=vocab, zero_infinity=True, reduction="mean_batch")
params = list(enc.parameters()) + list(dec.parameters())
opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.98), weight_decay=1e-3)


def lr_at(step):
    if step <= args.warmup:
        return args.lr * step / max(args.warmup, 1)
    p = (step - args.warmup) / max(args.steps - args.warmup, 1)
    return 1e-5 + (args.lr - 1e-5) * 0.5 * (1 + math.cos(math.pi * min(p, 1.0)))


def pad(items):
    audios = [torch.from_numpy(sf.read(w, dtype="float32")[0]) for w, _, _, _ in items]
    lens = torch.tensor([len(a) for a in audios])
    x = torch.zeros(len(audios), int(lens.max()))
    for i, a in enumerate(audios):
        x[i, : len(a)] = a
    return x, lens


def forward(x, lens):
    f, fl = pre(input_signal=x, length=lens)
    e, el = enc(audio_signal=f, length=fl)
    return dec(encoder_output=e), el


def evaluate():
    enc.eval(); dec.eval(); pre.eval()
    refs, hyps = [], []
    with torch.no_grad():
        for item in val:
            x, lens = pad([item])
            lp, el = forward(x, lens)
            best = lp[0, : int(el[0])].argmax(-1).tolist()
            ids, prev = [], None
            for t in best:
                if t != prev and t != vocab:
                    ids.append(t)
                prev = t
            words = []
            for t in ids:
                lang = "en" if t < offsets["es"] else "es"
                words.append(sps[lang].id_to_piece(t - offsets[lang]))
            hyp = "".join(words).replace("\u2581", " ").strip()
            refs.append(item[3])
            hyps.append(hyp)
    enc.train(); dec.train(); pre.train()
    return jiwer.cer(refs, hyps), hyp


log = open(args.out, "w")
start = time.time()
gen = batches()
step = 0
window = []
while time.time() - start < args.minutes * 60:
    step += 1
    items = [train[i] for i in next(gen)]
    x, lens = pad(items)
    tl = torch.tensor([len(it[2]) for it in items])
    tgt = torch.zeros(len(items), int(tl.max()), dtype=torch.long)
    for i, it in enumerate(items):
        tgt[i, : len(it[2])] = torch.tensor(it[2])
    lp, el = forward(x, lens)
    loss = loss_fn(log_probs=lp, targets=tgt, input_lengths=el, target_lengths=tl)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    norm = float(torch.nn.utils.clip_grad_norm_(params, 1.0))
    for g in opt.param_groups:
        g["lr"] = lr_at(step)
    opt.step()
    per_token = float(loss) * len(items) / int(tl.sum())
    window.append(per_token)
    row = {"step": step, "loss": float(loss), "loss_per_token": per_token, "grad_norm": norm,
           "lr": lr_at(step), "elapsed_s": time.time() - start}
    if step % args.eval_every == 0:
        c, hyp = evaluate()
        row["val_cer"] = c
        print(f"step {step} {row['elapsed_s']:.0f}s loss/token (last {len(window)}) {np.mean(window):.3f} "
              f"val CER {c:.3f} | {hyp[:80]}", flush=True)
        window = []
    log.write(json.dumps(row) + "\n")
    log.flush()
print(f"{step} steps in {time.time() - start:.0f} s", flush=True)
