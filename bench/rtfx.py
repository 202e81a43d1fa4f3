#!/usr/bin/env python3
"""Inference RTFx of the same Conformer-CTC weights: mezcla against NeMo on PyTorch CPU, in the same run.

Usage (from the repository root, on a quiet machine):
    /work/pyref/bin/python bench/rtfx.py [--files 20] [--reps 3] [--threads 2]

1. Builds `mezcla` and the `rtfx_bench` example (release), speaks 300 English and 300 Spanish fortunes sentences
   with espeak-ng (`mezcla datagen tts`), mixes them into code-switched files of 9-15 s (`mezcla datagen cs`,
   seed 1) and keeps the first `--files` (at least 3 minutes of audio in all).
2. Builds a NeMo EncDecCTCModelBPE with the encoder of mezcla's `small` preset (d_model 176, 16 layers, 4 heads,
   kernel 31, striding x4, 80 mels) and a 256-piece SentencePiece BPE vocabulary, with random weights (every
   encoder tensor randomised and the CTC head tuned as in asr/tests/fixtures/make_nemo_fixtures.py, so that the
   greedy text is not empty), and saves it with NeMo's `save_to` as bench/out/asr/small_bpe256.nemo.
3. Times, each side in turn (never at the same time), `--reps` passes over all files after a warm-up on the
   first file, batch size 1, greedy CTC:
   * mezcla, `target/release/examples/rtfx_bench` (RAYON_NUM_THREADS=`--threads`): the clock covers each
     `AsrModel::transcribe(samples)` call (front-end, encoder, CTC head, greedy decoding, text); model loading
     and WAV reading are outside it. Once on the fused CPU inference path (what `mezcla` runs) and once with
     `--candle` (the candle modules, as before that path existed);
   * NeMo forward (torch.set_num_threads(`--threads`), eval mode, torch.inference_mode): the clock covers
     `model.forward(input_signal, length)` (preprocessor, encoder, CTC head, log-softmax), argmax greedy
     decoding and `tokenizer.ids_to_text`; WAV reading is outside it. This is the like-for-like comparison;
   * NeMo transcribe: one `model.transcribe(paths, batch_size=1)` call over all files (NeMo's own API: it also
     writes a temporary manifest, builds a dataloader and reads the WAVs inside the clock);
   * once, `mezcla eval --model X.nemo --manifest M --json` (the CLI's RTFx: it times `model.transcribe` per
     file, the first, cold, file included, over a single pass).
   RTFx = audio seconds / processing seconds of a pass; the median pass is reported.
4. Sanity (same weights): NeMo's transcribe() text against mezcla's text on every file, and the largest
   log-prob difference between NeMo's forward and `mezcla transcribe --logprobs` on the first 3 files.

Prints the table and writes bench/out/asr/rtfx.json.
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import tempfile
import time

import numpy as np
import soundfile as sf
import torch
from omegaconf import OmegaConf

import asr_common as C

EXAMPLE = C.ROOT / "target" / "release" / "examples" / "rtfx_bench"
MODEL = C.OUT / "small_bpe256.nemo"


def fixtures_module():
    path = C.ROOT / "asr" / "tests" / "fixtures" / "make_nemo_fixtures.py"
    spec = importlib.util.spec_from_file_location("make_nemo_fixtures", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_audio(n):
    m = C.corpus()
    d = C.OUT / "rtfx_audio"
    if not (d / "manifest.json").is_file():
        C.run(C.MEZCLA, "datagen", "cs", "--manifest", f"en={m['en']}", "--manifest", f"es={m['es']}",
              "--out", d, "--hours", "0.08", "--seed", "1", "--min-duration", "9", "--max-duration", "15",
              "--json", stdout=subprocess.DEVNULL)
    entries = C.read_manifest(d / "manifest.json")[:n]
    assert len(entries) == n, f"only {len(entries)} mixes"
    total = sum(e["duration"] for e in entries)
    assert total >= 180, f"only {total:.1f} s of audio"
    # A manifest for `mezcla eval`: plain text, no language (the tokenizer has one).
    with open(d / "eval_manifest.json", "w") as fh:
        for e in entries:
            fh.write(json.dumps({"audio_filepath": e["audio_filepath"], "duration": e["duration"],
                                 "text": C.plain_text(e).lower()}) + "\n")
    return entries


def build_model(fx, wav0):
    from nemo.collections.asr.models import EncDecCTCModelBPE

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = EncDecCTCModelBPE(cfg=OmegaConf.create(C.nemo_cfg(C.tokenizer(256))))
    model.eval()
    fx.randomise(model, gen)
    fx.tune_head(model, fx.read_audio(wav0))
    with torch.no_grad():  # a trained model hardly emits <unk> (id 0)
        model.decoder.decoder_layers[0].bias[0] -= 30.0
    model.save_to(str(MODEL))
    return model


def nemo_forward_pass(model, audios):
    """Seconds per file and texts: forward + greedy CTC + ids_to_text, batch 1."""
    secs, texts = [], []
    for a in audios:
        t0 = time.perf_counter()
        with torch.inference_mode():
            lp, lens, _ = model.forward(input_signal=torch.from_numpy(a).unsqueeze(0),
                                        input_signal_length=torch.tensor([len(a)]))
            ids = lp[0, : int(lens[0])].argmax(-1).tolist()
        blank = lp.shape[-1] - 1
        out, prev = [], blank
        for c in ids:
            if c != blank and c != prev:
                out.append(c)
            prev = c
        texts.append(model.tokenizer.ids_to_text(out))
        secs.append(time.perf_counter() - t0)
    return secs, texts


def nemo_transcribe(model, paths):
    model.eval()
    t0 = time.perf_counter()
    out = model.transcribe(paths, batch_size=1, verbose=False)
    s = time.perf_counter() - t0
    model.eval()  # transcribe() leaves the model in training mode
    if isinstance(out, tuple):
        out = out[0]
    return s, [h.text if hasattr(h, "text") else h for h in out]


def setup(build, model_path):
    """The common start of the RTFx benches: options, the release binaries, the audio, the NeMo model
    (`build(fixtures, first_wav)`, saved at `model_path`) and one timed mezcla run over the files (warm-up, then
    `--reps` passes, in its own process). Returns (args, paths, audios, audio seconds, fixtures module, model,
    env, mezcla's JSON, mezcla's median pass, mezcla's texts)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    C.build_mezcla("rtfx_bench")
    C.OUT.mkdir(parents=True, exist_ok=True)
    entries = make_audio(args.files)
    paths = [e["audio_filepath"] for e in entries]
    audios = [sf.read(p, dtype="float32")[0] for p in paths]
    audio_s = sum(len(a) for a in audios) / 16000
    fx = fixtures_module()
    torch.set_num_threads(args.threads)
    model = build(fx, paths[0])
    print(f"{len(paths)} files, {audio_s:.1f} s of audio; model {model_path} "
          f"({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters)", flush=True)
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    r = subprocess.run([str(EXAMPLE), str(model_path), str(args.reps), *paths], check=True, capture_output=True,
                       text=True, env=env)
    mz = json.loads(r.stdout)
    mz_pass = statistics.median(mz["pass_seconds"])
    mz_texts = [f["text"] for f in mz["files"]]
    return args, paths, audios, audio_s, fx, model, env, mz, mz_pass, mz_texts


def main():
    args, paths, audios, audio_s, fx, model, env, mz, mz_pass, mz_texts = setup(build_model, MODEL)
    # The candle modules on the same weights (the path training uses), for comparison.
    r = subprocess.run([str(EXAMPLE), "--candle", str(MODEL), str(args.reps), *paths], check=True,
                       capture_output=True, text=True, env=env)
    mzc = json.loads(r.stdout)
    mzc_pass = statistics.median(mzc["pass_seconds"])
    same_paths = sum(a["text"] == b["text"] for a, b in zip(mz["files"], mzc["files"]))

    # NeMo forward: warm-up + reps passes.
    nemo_forward_pass(model, audios[:1])
    fw = [nemo_forward_pass(model, audios) for _ in range(args.reps)]
    fw_pass = statistics.median(sum(s) for s, _ in fw)
    fw_texts = fw[-1][1]

    # NeMo transcribe(): warm-up + reps calls over all files.
    nemo_transcribe(model, paths[:1])
    tr = [nemo_transcribe(model, paths) for _ in range(args.reps)]
    tr_pass = statistics.median(s for s, _ in tr)
    tr_texts = tr[-1][1]

    # mezcla eval (the CLI's RTFx, one pass, cold first file included).
    r = subprocess.run([str(C.MEZCLA), "eval", "--model", str(MODEL), "--manifest",
                        str(C.OUT / "rtfx_audio" / "eval_manifest.json"), "--json"], check=True,
                       capture_output=True, text=True, env=env)
    ev = json.loads(r.stdout)

    # Sanity: texts on every file, log-probs on the first 3.
    same_tr = sum(a.strip() == b.strip() for a, b in zip(mz_texts, tr_texts))
    same_fw = sum(a.strip() == b.strip() for a, b in zip(mz_texts, fw_texts))
    same_ev = sum(h["text"].strip() == b.strip() for h, b in zip(ev["hypotheses"], tr_texts))
    nonempty = sum(bool(t.strip()) for t in tr_texts)
    # NeMo's transcribe() removes a space before punctuation marks of the vocabulary
    # (decode_tokens_to_str_with_strip_punctuation); tokenizer.ids_to_text does not, nor does mezcla.
    pat = getattr(model.decoding, "space_before_punct_pattern", None)
    strip = (lambda t: pat.sub(r"\2", t)) if pat is not None else (lambda t: t)
    same_tr_stripped = sum(strip(a).strip() == b.strip() for a, b in zip(mz_texts, tr_texts))
    lp_diff, gaps = 0.0, []
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([str(C.MEZCLA), "transcribe", "--model", str(MODEL), "--logprobs", tmp, *paths[:3]],
                       check=True, capture_output=True, env=env)
        from safetensors.numpy import load_file
        for p, a in zip(paths[:3], audios[:3]):
            ours = load_file(os.path.join(tmp, os.path.splitext(os.path.basename(p))[0] + ".safetensors"))
            theirs = fx.log_probs(model, a)
            ours = ours["log_probs"]
            assert ours.shape == theirs.shape, (p, ours.shape, theirs.shape)
            lp_diff = max(lp_diff, float(np.abs(ours - theirs).max()))
            gaps.append(fx.top2_gap(theirs))

    res = {
        "versions": C.versions(), "git": subprocess.run(["git", "describe", "--always", "--dirty"], cwd=C.ROOT,
                                                         capture_output=True, text=True).stdout.strip(),
        "files": len(paths), "audio_seconds": audio_s, "reps": args.reps,
        "threads": args.threads,
        "mezcla": {"pass_seconds": mz["pass_seconds"], "rtfx": audio_s / mz_pass,
                   "load_seconds": mz["load_seconds"]},
        "nemo_forward": {"pass_seconds": [sum(s) for s, _ in fw], "rtfx": audio_s / fw_pass},
        "nemo_transcribe": {"pass_seconds": [s for s, _ in tr], "rtfx": audio_s / tr_pass},
        "mezcla_candle": {"pass_seconds": mzc["pass_seconds"], "rtfx": audio_s / mzc_pass,
                          "same_text_as_fused": same_paths},
        "mezcla_eval_rtfx": ev.get("rtfx"), "same_text_vs_nemo_transcribe_after_punct_strip": same_tr_stripped,
        "same_text_vs_nemo_transcribe": same_tr, "same_text_vs_nemo_forward": same_fw,
        "same_text_eval_vs_nemo_transcribe": same_ev, "nemo_nonempty_texts": nonempty,
        "max_logprob_diff_first3": lp_diff, "min_top2_gap_first3": min(gaps),
        "example_texts": {"nemo": tr_texts[:2], "mezcla": mz_texts[:2]},
    }
    res["ratio_vs_forward"] = res["mezcla"]["rtfx"] / res["nemo_forward"]["rtfx"]
    res["ratio_vs_transcribe"] = res["mezcla"]["rtfx"] / res["nemo_transcribe"]["rtfx"]
    with open(C.OUT / "rtfx.json", "w") as fh:
        json.dump(res, fh, indent=1)
    print(json.dumps(res["versions"]))
    print(f"audio: {len(paths)} files, {audio_s:.1f} s; {args.threads} threads; median of {args.reps} passes")
    print("| side | clock | pass seconds | RTFx | mezcla / this |")
    print("|---|---|---|---|---|")
    print(f"| NeMo forward | forward + greedy + ids_to_text | {fw_pass:.2f} | {res['nemo_forward']['rtfx']:.1f} "
          f"| **{res['ratio_vs_forward']:.2f}x** |")
    print(f"| NeMo transcribe() | transcribe(paths, batch_size=1) | {tr_pass:.2f} | "
          f"{res['nemo_transcribe']['rtfx']:.1f} | {res['ratio_vs_transcribe']:.2f}x |")
    print(f"| mezcla | AsrModel::transcribe per file | {mz_pass:.2f} | {res['mezcla']['rtfx']:.1f} | 1x |")
    print(f"| mezcla, candle modules (`--candle`) | same | {mzc_pass:.2f} | "
          f"{res['mezcla_candle']['rtfx']:.1f} | (same text on {same_paths}/{len(paths)} files) |")
    print(f"mezcla eval RTFx (one pass, cold first file): {ev.get('rtfx'):.1f}; mezcla load "
          f"{mz['load_seconds']:.2f} s")
    print(f"same text: mezcla vs NeMo transcribe {same_tr}/{len(paths)}, vs NeMo forward {same_fw}/{len(paths)}, "
          f"mezcla eval vs NeMo transcribe {same_ev}/{len(paths)}; NeMo non-empty texts {nonempty}/{len(paths)}")
    print(f"same text with NeMo's space-before-punctuation stripping applied to mezcla's text: "
          f"{same_tr_stripped}/{len(paths)} (pattern found: {pat is not None})")
    print(f"log-probs, first 3 files: max |mezcla - NeMo| {lp_diff:.2e} (min top-2 gap {min(gaps):.3f})")
    print("texts:", json.dumps(res["example_texts"], ensure_ascii=False))


if __name__ == "__main__":
    main()
