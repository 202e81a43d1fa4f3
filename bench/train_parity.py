#!/usr/bin/env python3
"""Training parity: the loss of mezcla and of NeMo over the first steps of the same `small` Conformer-CTC on the
same batch (bench/train_step.py's 8 utterances of ~5 s), with the same optimiser on both sides: AdamW at a
constant lr 1e-4 (betas 0.9/0.98, weight decay 1e-3), gradient-norm clip 1.0, dropout 0.1, no SpecAugment.
Initialisations differ (each side's own seeded one), so the curves agree in shape, not value for value.

    bench/train_step.py            # once: builds the batch, the tokenizer and the release binary
    /work/pyref/bin/python bench/train_parity.py [STEPS]   # prints both loss curves
"""
import json
import os
import sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import asr_common as C
import train_step as T
tok = C.OUT / "tok256"
manifest = C.OUT / "train_batch.json"
batch = [json.loads(l) for l in open(manifest)]
steps = int(sys.argv[1]) if len(sys.argv) > 1 else 16
# A constant learning rate, as NeMo's side (run_nemo) uses: cosine from lr to min_lr = lr, no warm-up.
constant = """lr = 1e-4
min_lr = 1e-4
schedule = "cosine"
warmup_steps = 0"""
_, _, mz = T.run_mezcla(manifest, tok, batch, steps, 2, name="train_cmp", optim=constant)
print("mezcla", [round(x, 1) for x in mz], flush=True)
_, _, nm, _ = T.run_nemo(batch, tok, steps, 2)
print("nemo  ", [round(x, 1) for x in nm])
