"""Shared pieces of bench/rtfx.py and bench/train_step.py: speech-like data, the tokenizer, and the NeMo
Conformer-CTC config of mezcla's `small` preset.

Everything is written under bench/out/asr/ (ignored by git) and rebuilt only when missing.
"""

import json
import os
import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "asr"
MEZCLA = ROOT / "target" / "release" / "mezcla"
FORTUNES = pathlib.Path("/usr/share/games/fortunes")


def run(*cmd, **kw):
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


def build_mezcla(example=None):
    """Release build of the mezcla binary (and an example of mezcla-asr)."""
    run("cargo", "build", "--release", "-q", "-p", "mezcla-asr", cwd=ROOT)
    if example:
        run("cargo", "build", "--release", "-q", "-p", "mezcla-asr", "--example", example, cwd=ROOT)


def _sentences(files, n):
    out = []
    for f in files:
        for block in pathlib.Path(f).read_text(errors="ignore").split("\n%\n"):
            s = " ".join(block.split())
            if 3 <= len(s.split()) <= 20 and re.fullmatch(r"[^\d\t]+", s):
                out.append(s)
            if len(out) >= n:
                return out
    return out


def corpus():
    """300 English and 300 Spanish fortunes sentences spoken by espeak-ng at 16 kHz (`mezcla datagen tts`).

    Returns {lang: manifest path}."""
    d = OUT / "tts"
    manifests = {}
    for lang in ("en", "es"):
        m = d / lang / "manifest.json"
        manifests[lang] = m
        if m.is_file():
            continue
        d.mkdir(parents=True, exist_ok=True)
        if lang == "en":
            text = _sentences([FORTUNES / "fortunes", FORTUNES / "wisdom", FORTUNES / "people"], 300)
            voices = "en-us,en-us+m3,en+f2"
        else:
            text = _sentences(sorted((FORTUNES / "es").glob("*.fortunes")), 300)
            voices = "es,es-419+m2,es+f3"
        (d / f"{lang}.txt").write_text("\n".join(text) + "\n")
        run(MEZCLA, "datagen", "tts", "--text", d / f"{lang}.txt", "--lang", lang, "--out", d / lang,
            "--voices", voices, "--json", stdout=subprocess.DEVNULL)
    return manifests


def read_manifest(path):
    """Entries with absolute audio paths."""
    path = pathlib.Path(path)
    out = []
    for line in path.read_text().splitlines():
        e = json.loads(line)
        p = pathlib.Path(e["audio_filepath"])
        e["audio_filepath"] = str(p if p.is_absolute() else (path.parent / p).resolve())
        out.append(e)
    return out


def plain_text(e):
    t = e["text"]
    return t if isinstance(t, str) else " ".join(s["str"] for s in t)


def tokenizer(vocab_size=256):
    """A SentencePiece BPE tokenizer (`vocab_size` pieces) of both languages' sentences, in NeMo's tokenizer
    folder layout (tokenizer.model, tokenizer.vocab, vocab.txt). Returns the folder."""
    import sentencepiece as spm

    corpus()
    d = OUT / f"tok{vocab_size}"
    if (d / "tokenizer.model").is_file():
        return d
    d.mkdir(parents=True, exist_ok=True)
    text = d / "corpus.txt"
    text.write_text("".join((OUT / "tts" / f"{lang}.txt").read_text().lower() for lang in ("en", "es")))
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(d / "tokenizer"), vocab_size=vocab_size, model_type="bpe",
        character_coverage=1.0, bos_id=-1, eos_id=-1, unk_id=0, hard_vocab_limit=True, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(d / "tokenizer.model"))
    with open(d / "vocab.txt", "w") as fh:
        for i in range(sp.get_piece_size()):
            p = sp.id_to_piece(i)
            fh.write((p[1:] if p.startswith("\u2581") else "##" + p) + "\n")
    return d


def nemo_cfg(tok_dir, dropout=0.1):
    """EncDecCTCModelBPE config with the encoder of mezcla's `small` preset
    (models/src/conformer.rs `ConformerConfig::preset("small", 80)`) and its front-end (asr/src/model.rs)."""
    return {
        "sample_rate": 16000,
        "tokenizer": {"dir": str(tok_dir), "type": "bpe"},
        "preprocessor": {
            "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
            "sample_rate": 16000, "normalize": "per_feature", "window_size": 0.025, "window_stride": 0.01,
            "window": "hann", "features": 80, "n_fft": 512, "log": True, "frame_splicing": 1,
            "dither": 1.0e-5, "pad_to": 0, "pad_value": 0.0,
        },
        "encoder": {
            "_target_": "nemo.collections.asr.modules.ConformerEncoder",
            "feat_in": 80, "feat_out": -1, "n_layers": 16, "d_model": 176, "subsampling": "striding",
            "subsampling_factor": 4, "subsampling_conv_channels": -1, "causal_downsampling": False,
            "ff_expansion_factor": 4, "self_attention_model": "rel_pos", "n_heads": 4,
            "att_context_size": [-1, -1], "xscaling": True, "untie_biases": True, "pos_emb_max_len": 5000,
            "conv_kernel_size": 31, "conv_norm_type": "batch_norm", "dropout": dropout,
            "dropout_pre_encoder": dropout, "dropout_emb": dropout, "dropout_att": dropout,
        },
        "decoder": {"_target_": "nemo.collections.asr.modules.ConvASRDecoder", "feat_in": None,
                    "num_classes": -1, "vocabulary": []},
        "validation_ds": {"manifest_filepath": None, "sample_rate": 16000, "batch_size": 1, "shuffle": False,
                          "use_start_end_token": False},
    }


def versions():
    import nemo
    import torch

    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    return {"cores": os.cpu_count(), "cpu": cpu, "torch": torch.__version__, "nemo": nemo.__version__,
            "rustc": rustc}
