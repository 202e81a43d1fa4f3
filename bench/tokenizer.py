"""Tokenizer benchmark: mezcla-tokenizer against the Python `sentencepiece` package, in the same run.

  /work/pyref/bin/python bench/tokenizer.py            (from the repository root; builds the release bench binary)

1. Encode throughput on a large text (English and Spanish fortunes, repeated to ~8 MB): mezcla (release build of
   `tokenizer/examples/tokenizer_bench.rs`, one thread) vs sentencepiece `encode(list, num_threads=1)` (C++ loop,
   one thread) and a Python per-line loop. Same ids required (token count and checksum).
2. Training time and quality: mezcla's trainer vs the reference trainer (num_threads=1 and 2) on the committed
   corpora and on all fortunes (unique lines, every 20th held out), then the mezcla-trained model is loaded by the reference library and must give the same ids as mezcla
   on the held-out sentences; tokens/sentence compared with the reference trainer's model.
Prints a Markdown table block for bench/RESULTS.md.
"""

import glob
import gzip
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

import sentencepiece as spm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tokenizer/tests/fixtures")
BIN = os.path.join(ROOT, "target/release/examples/tokenizer_bench")


def build():
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "mezcla-tokenizer", "--example", "tokenizer_bench"],
                   cwd=ROOT, check=True)


def big_text(path, target_bytes):
    lines = []
    for p in sorted(glob.glob("/usr/share/games/fortunes/*")) + sorted(glob.glob("/usr/share/games/fortunes/es/*")):
        if not os.path.isfile(p) or p.endswith((".dat", ".u8")):
            continue
        with open(p, encoding="utf-8", errors="replace") as f:
            for block in f.read().split("\n%\n"):
                s = re.sub(r"\s+", " ", block).strip()
                if s:
                    lines.append(s)
    if not lines:  # no fortunes installed: fall back to the committed corpora
        for lang in ("en", "es", "hi"):
            with gzip.open(os.path.join(FIX, f"corpus_{lang}.txt.gz"), "rt", encoding="utf-8") as f:
                lines += f.read().splitlines()
    out, size = [], 0
    while size < target_bytes:
        for s in lines:
            out.append(s)
            size += len(s.encode()) + 1
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")
    return out


def checksum(all_ids):
    c = 0
    for ids in all_ids:
        for i in ids:
            c = (c * 31 + i) % (1 << 64)
    return c


def bench_encode(model, text_path, lines, repeats=3):
    sp = spm.SentencePieceProcessor(model_file=model)
    best_py = best_loop = best_rs = 1e9
    for _ in range(repeats):
        t0 = time.perf_counter()
        ids = sp.encode(lines, out_type=int, num_threads=1)
        best_py = min(best_py, time.perf_counter() - t0)
    t0 = time.perf_counter()
    for l in lines:
        sp.encode(l, out_type=int)
    best_loop = time.perf_counter() - t0
    for _ in range(repeats):
        r = json.loads(subprocess.run([BIN, "encode", model, text_path], check=True, capture_output=True).stdout)
        best_rs = min(best_rs, r["seconds"])
    tokens = sum(len(x) for x in ids)
    same = r["tokens"] == tokens and r["checksum"] == checksum(ids)
    return dict(model=os.path.basename(model), tokens=tokens, same_ids=same, mezcla_s=best_rs, spm_s=best_py,
                spm_loop_s=best_loop)


def bench_train(name, model_type, vocab, lang, byte_fallback, tmp, corpus_lines=None):
    if corpus_lines is None:
        with gzip.open(os.path.join(FIX, f"corpus_{lang}.txt.gz"), "rt", encoding="utf-8") as f:
            corpus = f.read()
        with gzip.open(os.path.join(FIX, f"test_{lang}.txt.gz"), "rt", encoding="utf-8") as f:
            tests = f.read().splitlines()
    else:  # a large corpus: hold out every 20th line
        corpus = "\n".join(l for i, l in enumerate(corpus_lines) if i % 20) + "\n"
        tests = [l for i, l in enumerate(corpus_lines) if i % 20 == 0]
    name_f = re.sub(r"\W+", "_", name)
    cpath = os.path.join(tmp, f"{name_f}.txt")
    with open(cpath, "w", encoding="utf-8") as f:
        f.write(corpus)
    tpath = os.path.join(tmp, f"{name_f}.test.txt")
    with open(tpath, "w", encoding="utf-8") as f:
        f.write("\n".join(tests) + "\n")
    ours = os.path.join(tmp, f"{name_f}.mezcla.model")
    args = [BIN, "train", model_type, str(vocab), cpath, ours] + (["byte_fallback"] if byte_fallback else [])
    r = json.loads(subprocess.run(args, check=True, capture_output=True).stdout)
    times = {}
    for threads in (1, 2):
        prefix = os.path.join(tmp, f"{name_f}.ref{threads}")
        t0 = time.perf_counter()
        spm.SentencePieceTrainer.train(input=cpath, model_prefix=prefix, vocab_size=vocab, model_type=model_type,
                                       byte_fallback=byte_fallback, num_threads=threads, minloglevel=2)
        times[threads] = time.perf_counter() - t0
    ref = spm.SentencePieceProcessor(model_file=os.path.join(tmp, f"{name_f}.ref1.model"))
    loaded = spm.SentencePieceProcessor(model_file=ours)  # the reference library loads mezcla's model
    py_ids = [loaded.encode(s, out_type=int) for s in tests]
    rs_ids = [list(map(int, l.split())) for l in
              subprocess.run([BIN, "ids", ours, tpath], check=True, capture_output=True, text=True).stdout.split("\n")[:-1]]
    same = py_ids == rs_ids
    tps_ours = sum(len(x) for x in py_ids) / len(tests)
    tps_ref = sum(len(ref.encode(s)) for s in tests) / len(tests)
    return dict(name=name, mezcla_s=r["seconds"], spm1_s=times[1], spm2_s=times[2], loads_same_ids=same,
                tps_mezcla=tps_ours, tps_ref=tps_ref, sentences=len(tests))


def main():
    build()
    with tempfile.TemporaryDirectory() as tmp:
        text_path = os.path.join(tmp, "big.txt")
        lines = big_text(text_path, 8_000_000)
        unique = list(dict.fromkeys(lines))
        size_mb = os.path.getsize(text_path) / 1e6
        enc = [bench_encode(os.path.join(FIX, m), text_path, lines)
               for m in ("en_unigram_4000.model", "en_bpe_1000_bf.model", "es_unigram_1000_bf.model")]
        trn = [bench_train("en_unigram_4000", "unigram", 4000, "en", False, tmp),
               bench_train("en_bpe_1000_bf", "bpe", 1000, "en", True, tmp),
               bench_train("es_unigram_1000_bf", "unigram", 1000, "es", True, tmp),
               bench_train("hi_bpe_400", "bpe", 400, "hi", False, tmp),
               bench_train(f"fortunes_unigram_8000 ({len(unique)} lines)", "unigram", 8000, "", False, tmp, unique),
               bench_train(f"fortunes_bpe_8000 ({len(unique)} lines)", "bpe", 8000, "", False, tmp, unique)]
    cpu = platform.processor() or platform.machine()
    print(f"Machine: {os.cpu_count()} cores ({cpu}); sentencepiece {spm.__version__}; text {size_mb:.1f} MB, "
          f"{len(lines)} lines.\n")
    print("| model | tokens | same ids | mezcla s | spm (C++ batch, 1 thread) s | spm per-line loop s "
          "| speed vs spm batch | speed vs spm loop |")
    print("|---|---|---|---|---|---|---|---|")
    for e in enc:
        print(f"| {e['model']} | {e['tokens']} | {e['same_ids']} | {e['mezcla_s']:.3f} | {e['spm_s']:.3f} | "
              f"{e['spm_loop_s']:.3f} | {e['spm_s'] / e['mezcla_s']:.2f}x | {e['spm_loop_s'] / e['mezcla_s']:.2f}x |")
    print()
    print("| training run | mezcla s | spm 1 thread s | spm 2 threads s | time vs spm 1 thread | reference loads it, "
          "same ids | tokens/sentence mezcla | reference trainer | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for t in trn:
        print(f"| {t['name']} | {t['mezcla_s']:.2f} | {t['spm1_s']:.2f} | {t['spm2_s']:.2f} | "
              f"{t['mezcla_s'] / t['spm1_s']:.2f}x | {t['loads_same_ids']} ({t['sentences']} sentences) | "
              f"{t['tps_mezcla']:.3f} | {t['tps_ref']:.3f} | {t['tps_mezcla'] / t['tps_ref']:.4f} |")
    ok = all(e["same_ids"] for e in enc) and all(t["loads_same_ids"] for t in trn)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
