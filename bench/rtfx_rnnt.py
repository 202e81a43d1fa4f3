#!/usr/bin/env python3
"""Inference RTFx of the same Conformer RNN-T (transducer) weights: mezcla against NeMo on PyTorch CPU, in the
same run.

Usage (from the repository root, on a quiet machine; after bench/rtfx.py has made its audio):
    /work/pyref/bin/python bench/rtfx_rnnt.py [--files 20] [--reps 3] [--threads 2]

1. Uses bench/rtfx.py's code-switched files (bench/out/asr/rtfx_audio, 9-15 s each; made there if missing).
2. Builds a NeMo EncDecRNNTBPEModel: the encoder of mezcla's `small` preset (d_model 176, 16 layers, striding x4,
   80 mels, as bench/rtfx.py), a 256-piece BPE vocabulary, a one-layer LSTM prediction network of 320, a relu
   joint of 320, greedy_batch with at most 10 symbols per frame (NeMo's published transducer settings, scaled
   to the encoder). Random weights, tuned as asr/tests/fixtures/make_nemo_fixtures.py tunes its RNN-T fixtures
   (2 nats of spread, the blank winning half the frames at the start state), so that decoding emits about as
   many tokens as a trained model and the greedy loop does real work. Saved with `save_to` as
   bench/out/asr/small_rnnt_bpe256.nemo.
3. Times, each side in turn, `--reps` passes over all files after a warm-up on the first file, batch size 1:
   * mezcla, `target/release/examples/rtfx_bench` (RAYON_NUM_THREADS=`--threads`): each
     `AsrModel::transcribe(samples)` call (front-end, encoder, greedy RNN-T decoding, text);
   * NeMo (torch.set_num_threads(`--threads`), eval mode, torch.inference_mode): `model.forward` (front-end
     and encoder) and `model.decoding.rnnt_decoder_predictions_tensor` (NeMo's greedy_batch decoding and its
     text), the steps of `transcribe()` without its dataloader. (NeMo 3.0's transcribe() itself works here: the
     tokenizer is not aggregate; it is timed too.)
   RTFx = audio seconds / seconds of a pass; the median pass is reported.
4. Sanity (same weights): the texts of both sides on every file, and on the first file the joint's
   log-probabilities at every greedy step (`mezcla transcribe --logprobs`) against NeMo's modules stepped as
   the fixture script does.

Prints the table and writes bench/out/asr/rtfx_rnnt.json.
"""

import json
import os
import statistics
import subprocess
import tempfile
import time

import numpy as np
import torch
from omegaconf import OmegaConf

import asr_common as C
from rtfx import nemo_transcribe, setup

MODEL = C.OUT / "small_rnnt_bpe256.nemo"
MAX_SYMBOLS = 10


def build_model(fx, wav0):
    from nemo.collections.asr.models import EncDecRNNTBPEModel

    cfg = C.nemo_cfg(C.tokenizer(256))
    cfg.pop("decoder")
    defaults, cfg["decoder"], cfg["joint"] = fx.rnnt_parts(320, 320, 1, "relu", 0.2)
    cfg["model_defaults"] = {"enc_hidden": 176, **defaults}
    cfg["decoding"] = {"strategy": "greedy_batch", "greedy": {"max_symbols": MAX_SYMBOLS}}
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = EncDecRNNTBPEModel(cfg=OmegaConf.create(cfg))
    model.eval()
    fx.randomise(model, gen)
    fx.randomise_transducer(model, gen)
    fx.tune_transducer(model, fx.read_audio(wav0), 2.0)
    model.save_to(str(MODEL))
    return model


def nemo_pass(model, audios):
    """Seconds per file and texts: forward (front-end, encoder) + NeMo's RNN-T greedy decoding, batch 1."""
    secs, texts = [], []
    for a in audios:
        t0 = time.perf_counter()
        with torch.inference_mode():
            enc, lens = model.forward(input_signal=torch.from_numpy(a).unsqueeze(0),
                                      input_signal_length=torch.tensor([len(a)]))
            hyps = model.decoding.rnnt_decoder_predictions_tensor(encoder_output=enc, encoded_lengths=lens)
        if isinstance(hyps, tuple):
            hyps = hyps[0]
        texts.append(hyps[0].text)
        secs.append(time.perf_counter() - t0)
    return secs, texts


def main():
    args, paths, audios, audio_s, fx, model, env, mz, mz_pass, mz_texts = setup(build_model, MODEL)

    nemo_pass(model, audios[:1])
    nm = [nemo_pass(model, audios) for _ in range(args.reps)]
    nm_pass = statistics.median(sum(s) for s, _ in nm)
    nm_texts = nm[-1][1]

    nemo_transcribe(model, paths[:1])
    tr = [nemo_transcribe(model, paths) for _ in range(args.reps)]
    tr_pass = statistics.median(s for s, _ in tr)
    tr_texts = tr[-1][1]

    same = sum(a.strip() == b.strip() for a, b in zip(mz_texts, nm_texts))
    same_tr = sum(a.strip() == b.strip() for a, b in zip(mz_texts, tr_texts))
    tokens = sum(len(model.tokenizer.text_to_ids(t)) for t in nm_texts)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([str(C.MEZCLA), "transcribe", "--model", str(MODEL), "--logprobs", tmp, paths[0]],
                       check=True, capture_output=True, env=env)
        from safetensors.numpy import load_file
        ours = load_file(os.path.join(tmp, os.path.splitext(os.path.basename(paths[0]))[0] + ".safetensors"))
    _, rows, frames = fx.greedy_path(model, audios[0], MAX_SYMBOLS)
    assert ours["log_probs"].shape == rows.shape, (ours["log_probs"].shape, rows.shape)
    assert np.array_equal(ours["frames"].astype(np.int64), frames)
    lp_diff = float(np.abs(ours["log_probs"] - rows).max())

    res = {
        "versions": C.versions(), "git": subprocess.run(["git", "describe", "--always", "--dirty"], cwd=C.ROOT,
                                                         capture_output=True, text=True).stdout.strip(),
        "files": len(paths), "audio_seconds": audio_s, "reps": args.reps, "threads": args.threads,
        "mezcla": {"pass_seconds": mz["pass_seconds"], "rtfx": audio_s / mz_pass,
                   "load_seconds": mz["load_seconds"]},
        "nemo_forward_decoding": {"pass_seconds": [sum(s) for s, _ in nm], "rtfx": audio_s / nm_pass},
        "nemo_transcribe": {"pass_seconds": [s for s, _ in tr], "rtfx": audio_s / tr_pass},
        "same_text": same, "same_text_vs_transcribe": same_tr, "nemo_tokens_per_second_of_audio":
            tokens / audio_s, "first_file_steps": int(rows.shape[0]), "max_step_logprob_diff_first": lp_diff,
        "example_texts": {"nemo": nm_texts[:2], "mezcla": mz_texts[:2]},
    }
    res["ratio"] = res["mezcla"]["rtfx"] / res["nemo_forward_decoding"]["rtfx"]
    res["ratio_vs_transcribe"] = res["mezcla"]["rtfx"] / res["nemo_transcribe"]["rtfx"]
    with open(C.OUT / "rtfx_rnnt.json", "w") as fh:
        json.dump(res, fh, indent=1)
    print(json.dumps(res["versions"]))
    print(f"audio: {len(paths)} files, {audio_s:.1f} s; {args.threads} threads; median of {args.reps} passes")
    print("| side | clock | pass seconds | RTFx | mezcla / this |")
    print("|---|---|---|---|---|")
    print(f"| NeMo | forward + rnnt_decoder_predictions_tensor | {nm_pass:.2f} | "
          f"{res['nemo_forward_decoding']['rtfx']:.1f} | **{res['ratio']:.2f}x** |")
    print(f"| NeMo transcribe() | transcribe(paths, batch_size=1) | {tr_pass:.2f} | "
          f"{res['nemo_transcribe']['rtfx']:.1f} | {res['ratio_vs_transcribe']:.2f}x |")
    print(f"| mezcla | AsrModel::transcribe per file | {mz_pass:.2f} | {res['mezcla']['rtfx']:.1f} | 1x |")
    print(f"same text: {same}/{len(paths)} (vs transcribe() {same_tr}/{len(paths)}); NeMo emits "
          f"{res['nemo_tokens_per_second_of_audio']:.1f} tokens per second of audio")
    print(f"first file: {rows.shape[0]} greedy steps, max |mezcla - NeMo| step log-prob {lp_diff:.2e}")
    print("texts:", json.dumps(res["example_texts"], ensure_ascii=False))


if __name__ == "__main__":
    main()
