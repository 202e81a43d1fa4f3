#!/usr/bin/env python3
"""How much a word n-gram LM in CTC beam search would take off a mezcla model's WER (a probe, not a test).

mezcla's own log-probabilities (`mezcla transcribe --logprobs`) are decoded three ways and scored with jiwer
against the manifest's text:
* greedy (what `mezcla eval` does),
* pyctcdecode's CTC beam search without an LM,
* pyctcdecode's beam search with shallow fusion of a word trigram (interpolated Kneser-Ney, discount 0.75,
  trained here on the texts of `--lm-manifests`, i.e. the recipe's training sentences and clauses; test
  sentences are not in it): score = log P_am + alpha * ln P_lm(word | two previous words) + beta per word, an
  out-of-vocabulary word costing `unk` (natural log) more, as pyctcdecode's kenlm wrapper does.
alpha, beta and unk are chosen on `--tune-manifest` (a grid), then applied to `--manifest`.

The concatenated tokenizer's pieces are text labels; pieces with the same text in both languages are merged
(their probabilities summed) because pyctcdecode needs distinct labels. Languages are dropped: this measures
words only.

Needs the reference stack plus pyctcdecode (`/work/pyref/bin/pip install --no-deps pyctcdecode pygtrie`; its
numpy<2 pin is stale, it runs on numpy 2).

Usage (from the repository root):
    /work/pyref/bin/python bench/lm_fusion_probe.py --model data/en_es/exp-run7c/run/model \\
        --manifest data/en_es/manifests/cs_test.json --tune-manifest data/en_es/manifests/cs_dev_val.json \\
        --lm-manifests data/en_es/manifests/en_train.json data/en_es/manifests/es_train.json
Writes bench/out/lm_fusion_probe.json.
"""
import argparse
import collections
import itertools
import json
import math
import pathlib
import subprocess
import tempfile

import jiwer
import numpy as np
import sentencepiece as spm
from pyctcdecode.alphabet import Alphabet
from pyctcdecode.decoder import BeamSearchDecoderCTC
from pyctcdecode.language_model import AbstractLanguageModel
from safetensors.numpy import load_file

import asr_common as C

OUT = C.ROOT / "bench" / "out"


def manifest(path):
    """(absolute audio path, plain text) of each entry."""
    return [(pathlib.Path(e["audio_filepath"]), C.plain_text(e)) for e in C.read_manifest(path)]


class KneserNeyTrigram:
    """Interpolated Kneser-Ney word trigram with <s>, </s>; natural-log probabilities."""

    def __init__(self, sentences, d=0.75):
        self.d = d
        self.c3 = collections.Counter()
        for s in sentences:
            w = ["<s>", "<s>"] + s.split() + ["</s>"]
            for i in range(2, len(w)):
                self.c3[tuple(w[i - 2:i + 1])] += 1
        self.c2_ctx = collections.Counter()  # c(u v ·)
        self.n3_follow = collections.Counter()  # N1+(u v ·)
        self.n2 = collections.Counter()  # N1+(· v w): continuation counts of bigrams
        for (u, v, w), c in self.c3.items():
            self.c2_ctx[(u, v)] += c
            self.n3_follow[(u, v)] += 1
            self.n2[(v, w)] += 1
        self.n2_ctx = collections.Counter()  # N1+(· v ·)
        self.n2_follow = collections.Counter()  # N1+(v ·) among continuation bigrams
        self.n1 = collections.Counter()  # N1+(· w)
        for (v, w), c in self.n2.items():
            self.n2_ctx[v] += c
            self.n2_follow[v] += 1
            self.n1[w] += 1
        self.n1_total = sum(self.n1.values())
        self.vocab = {w for (_, _, w) in self.c3} - {"</s>"}
        self.prefixes = {w[:i] for w in self.vocab for i in range(1, len(w) + 1)}
        self.uniform = 1.0 / (len(self.n1) + 1)

    def p1(self, w):
        return max(self.n1[w] - self.d, 0) / self.n1_total + self.d * len(self.n1) / self.n1_total * self.uniform

    def p2(self, v, w):
        ctx = self.n2_ctx[v]
        if ctx == 0:
            return self.p1(w)
        return max(self.n2[(v, w)] - self.d, 0) / ctx + self.d * self.n2_follow[v] / ctx * self.p1(w)

    def logp(self, u, v, w):
        ctx = self.c2_ctx[(u, v)]
        if ctx == 0:
            return math.log(self.p2(v, w))
        p = max(self.c3[(u, v, w)] - self.d, 0) / ctx + self.d * self.n3_follow[(u, v)] / ctx * self.p2(v, w)
        return math.log(p)


class FusionLM(AbstractLanguageModel):
    """pyctcdecode's language-model interface over the trigram; the state is the last two words."""

    def __init__(self, lm, alpha, beta, unk):
        self.lm, self.alpha, self.beta, self.unk = lm, alpha, beta, unk

    @property
    def order(self):
        return 3

    def get_start_state(self):
        return ("<s>", "<s>")

    def score_partial_token(self, partial_token):
        if not partial_token or partial_token in self.lm.prefixes:
            return 0.0
        return self.alpha * self.unk * max(1.0, len(partial_token) / 6)

    def score(self, prev_state, word, is_last_word=False):
        u, v = prev_state
        s = self.lm.logp(u, v, word)
        if word not in self.lm.vocab:
            s += self.unk
        if is_last_word:
            s += self.lm.logp(v, word, "</s>")
        return self.alpha * s + self.beta, (v, word)

    def save_to_dir(self, filepath):
        raise NotImplementedError

    @classmethod
    def load_from_dir(cls, filepath):
        raise NotImplementedError

    def reset_params(self, **params):
        pass


def labels_and_groups(model_dir):
    """Unique text labels of the concatenated tokenizer's ids, the id → label-index map, and the blank id."""
    tok = json.loads((model_dir / "tokenizer" / "concat_tokenizer.json").read_text())
    pieces = []
    for lang in tok["languages"]:
        sp = spm.SentencePieceProcessor(model_file=str(model_dir / "tokenizer" / lang["model"]))
        for i in range(lang["vocab_size"]):
            p = sp.id_to_piece(i)
            pieces.append("⁇" if sp.is_unknown(i) or sp.is_control(i) else p)
    labels = list(dict.fromkeys(pieces))
    index = {p: i for i, p in enumerate(labels)}
    groups = [index[p] for p in pieces]
    return labels + [""], groups + [len(labels)], tok["blank_id"]


def merge(lp, groups, n):
    """[T, V+1] log-probs → [T, n] by summing the probabilities of ids with the same label."""
    out = np.full((lp.shape[0], n), -np.inf, dtype=np.float64)
    for src, dst in enumerate(groups):
        out[:, dst] = np.logaddexp(out[:, dst], lp[:, src])
    return out.astype(np.float32)


def greedy(lp, labels):
    ids = lp.argmax(axis=1)
    out, prev = [], None
    for i in ids:
        if i != prev and labels[i] != "":
            out.append(labels[i])
        prev = i
    return "".join(out).replace("⁇", "").replace("▁", " ").split()


def log_probs(model, rows, work):
    # Links with unique names: utterances of different folders may share a file name.
    links = work / "audio"
    links.mkdir()
    files = []
    for i, (audio, _) in enumerate(rows):
        files.append(links / f"{i:06d}.wav")
        files[-1].symlink_to(audio)
    subprocess.run([str(C.MEZCLA), "transcribe", "--model", str(model), "--logprobs",
                    str(work), *map(str, files)], check=True, stdout=subprocess.DEVNULL)
    return [load_file(str(work / (f.stem + ".safetensors")))["log_probs"] for f in files]


def wer(refs, hyps):
    return jiwer.wer(refs, [" ".join(h) if isinstance(h, list) else h for h in hyps])


def decode_all(decoder, lps, beam):
    return [decoder.decode(lp, beam_width=beam).split() for lp in lps]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--tune-manifest", required=True)
    ap.add_argument("--lm-manifests", nargs="+", required=True)
    ap.add_argument("--beam", type=int, default=32)
    args = ap.parse_args()
    model = pathlib.Path(args.model)
    labels, groups, _ = labels_and_groups(model)
    n = len(labels)
    alphabet = Alphabet.build_alphabet(labels)
    sentences = [t for m in args.lm_manifests for _, t in manifest(m)]
    lm = KneserNeyTrigram(sentences)
    sets = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in (("tune", args.tune_manifest), ("test", args.manifest)):
            rows = manifest(path)
            work = pathlib.Path(tmp) / name
            work.mkdir()
            lps = [merge(lp, groups, n) for lp in log_probs(model, rows, work)]
            sets[name] = ([t for _, t in rows], lps)
    no_lm = BeamSearchDecoderCTC(alphabet, None)
    res = {"model": str(model), "manifest": args.manifest, "tune_manifest": args.tune_manifest,
           "lm_sentences": len(sentences), "lm_vocabulary": len(lm.vocab), "beam": args.beam}
    grid = list(itertools.product([0.3, 0.5, 0.8], [1.0, 2.0, 3.0, 4.0], [-5.0, -8.0, -12.0]))
    refs, lps = sets["tune"]
    tuned = []
    for alpha, beta, unk in grid:
        dec = BeamSearchDecoderCTC(alphabet, FusionLM(lm, alpha, beta, unk))
        tuned.append((wer(refs, decode_all(dec, lps, args.beam)), alpha, beta, unk))
        print(f"tune alpha {alpha} beta {beta} unk {unk}: WER {tuned[-1][0]:.4f}", flush=True)
    best = min(tuned)
    res["tuning"] = [dict(zip(("wer", "alpha", "beta", "unk"), t)) for t in tuned]
    res["chosen"] = dict(zip(("wer_tune", "alpha", "beta", "unk"), best))
    refs, lps = sets["test"]
    oov = sum(w not in lm.vocab for r in refs for w in r.split()) / sum(len(r.split()) for r in refs)
    res["test_oov_rate"] = oov
    res["test"] = {
        "greedy": wer(refs, [greedy(lp, labels) for lp in lps]),
        "beam_no_lm": wer(refs, decode_all(no_lm, lps, args.beam)),
        "beam_trigram": wer(refs, decode_all(BeamSearchDecoderCTC(alphabet, FusionLM(lm, *best[1:])), lps,
                                             args.beam)),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "lm_fusion_probe.json").write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res["chosen"]), f"test OOV rate {oov:.3f}")
    print("| decoding | WER |\n|---|---|")
    for k, v in res["test"].items():
        print(f"| {k} | {100 * v:.2f} % |")


if __name__ == "__main__":
    main()
