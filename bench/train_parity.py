#!/usr/bin/env python3
"""Training parity: the loss of mezcla and of NeMo over the first steps of the same `small` Conformer-CTC on the
same batch (bench/train_step.py's 8 utterances of ~5 s), with the same optimiser on both sides: AdamW at a
constant lr 1e-4 (betas 0.9/0.98, weight decay 1e-3), gradient-norm clip 1.0, no SpecAugment.

Two modes:
* default: dropout 0.1, each side with its own seeded initialisation, so the curves agree in shape, not value
  for value.
* `--same-init`: NeMo's initial model is saved as a `.nemo` and mezcla starts from it (`init_from`); dropout and
  dither are off, so both sides compute the same function of the same weights and the curves must agree value
  for value (up to float rounding, which grows with the steps). Step 1's loss and gradient norm check mezcla's
  whole training forward and backward against PyTorch's autograd.

    bench/train_step.py            # once: builds the batch, the tokenizer and the release binary
    /work/pyref/bin/python bench/train_parity.py [--same-init] [--lr 1e-4] [STEPS]
"""
import argparse
import json
import os
import sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import asr_common as C
import train_step as T

ap = argparse.ArgumentParser()
ap.add_argument("steps", type=int, nargs="?", default=16)
ap.add_argument("--same-init", action="store_true")
ap.add_argument("--lr", type=float, default=1e-4)
ap.add_argument("--batch", default=str(C.OUT / "train_batch.json"),
                help="a manifest of the one batch (default: train_step.py's 8 utterances of ~5 s)")
args = ap.parse_args()
tok = C.OUT / "tok256"
manifest = args.batch
batch = [json.loads(l) for l in open(manifest)]
# A constant learning rate, as NeMo's side (run_nemo) uses: cosine from lr to min_lr = lr, no warm-up.
constant = f"""lr = {args.lr}
min_lr = {args.lr}
schedule = "cosine"
warmup_steps = 0"""
if args.same_init:
    init = C.OUT / "small_nemo_init.nemo"
    _, _, nm, _, nm_norm = T.run_nemo(batch, tok, args.steps, 2, dropout=0.0, dither=0.0, save_init=init,
                                      lr=args.lr)
    _, _, lines = T.run_mezcla(manifest, tok, batch, args.steps, 2, name="train_cmp_same_init", optim=constant,
                               dropout=0.0, init_from=init)
    mz = [l["loss"] for l in lines]
    mz_norm = [l["grad_norm"] for l in lines]
    print("| step | NeMo loss | mezcla loss | NeMo grad norm | mezcla grad norm |")
    print("|---|---|---|---|---|")
    for i, (a, b, c, d) in enumerate(zip(nm, mz, nm_norm, mz_norm)):
        print(f"| {i + 1} | {a:.4f} | {b:.4f} | {c:.4f} | {d:.4f} |")
else:
    _, _, lines = T.run_mezcla(manifest, tok, batch, args.steps, 2, name="train_cmp", optim=constant)
    print("mezcla", [round(l["loss"], 1) for l in lines], flush=True)
    _, _, nm, _, _ = T.run_nemo(batch, tok, args.steps, 2, lr=args.lr)
    print("nemo  ", [round(x, 1) for x in nm])
