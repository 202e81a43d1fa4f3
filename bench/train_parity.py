#!/usr/bin/env python3
"""Training parity: the loss of mezcla and of NeMo over the first steps of the same `small` Conformer-CTC on the
same batch (bench/train_step.py's 8 utterances of ~5 s), with the same optimiser on both sides: AdamW at a
constant lr 1e-4 (betas 0.9/0.98, weight decay 1e-3), gradient-norm clip 1.0, dropout 0.1, no SpecAugment.
Initialisations differ (each side's own seeded one), so the curves agree in shape, not value for value.

    bench/train_step.py            # once: builds the batch, the tokenizer and the release binary
    /work/pyref/bin/python bench/train_parity.py [STEPS]   # prints both loss curves
"""
import json, os, subprocess, sys, shutil
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import asr_common as C
import train_step as T
tok = C.OUT / "tok256"
manifest = C.OUT / "train_batch.json"
batch = [json.loads(l) for l in open(manifest)]
steps = int(sys.argv[1]) if len(sys.argv) > 1 else 16
out = C.OUT / "train_cmp"
shutil.rmtree(out, ignore_errors=True); out.mkdir(parents=True)
longest = max(e["duration"] for e in batch)
(out / "train.toml").write_text(f"""out_dir = "{out / 'run'}"
tokenizer = "{tok / 'tokenizer.model'}"
train_manifests = ["{manifest}"]
model = "small"
max_steps = {steps}
seed = 0
[batch]
max_duration = {len(batch) * longest + 0.01:.4f}
buckets = 1
[optim]
lr = 1e-4
min_lr = 1e-4
schedule = "cosine"
warmup_steps = 0
weight_decay = 1e-3
grad_clip = 1.0
dropout = 0.1
[eval]
every = {steps}
""")
subprocess.run([str(C.MEZCLA), "train", "--config", str(out / "train.toml"), "--json", "--quiet"], check=True,
               capture_output=True, text=True, env=dict(os.environ, RAYON_NUM_THREADS="2"))
mz = [json.loads(l) for l in (out / "run" / "metrics.jsonl").read_text().splitlines()]
print("mezcla lr", [round(l["lr"], 6) for l in mz][:3])
print("mezcla", [round(l["loss"], 1) for l in mz], flush=True)
_, _, nm, _ = T.run_nemo(batch, tok, steps, 2)
print("nemo  ", [round(x, 1) for x in nm])
