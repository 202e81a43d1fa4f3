#!/usr/bin/env python3
"""Text and manifest helpers of the English-Spanish recipe (standard library only).

Subcommands (see recipes/en_es/README.md):
  text      fortunes (English) and fortunes-es (Spanish) -> clean sentences and 2-6 word clauses,
            split by sentence into train/dev/test, plus the normalised tokenizer corpora
  select    draw lines of a text file until an estimated number of hours of speech, in parts (per engine)
  normalize rewrite a TTS manifest's `text` to the normalised transcript (lower case, no punctuation)
  merge     concatenate manifests into one, audio paths made relative to the new manifest
  festival  synthesize a text file with festival's text2wave into WAVs and a NeMo manifest (resumable)
  stats     utterances and hours of manifests (JSON)
  table     a Markdown table of `mezcla eval --json` results (one <set>.json per set in a folder)
"""

import argparse
import concurrent.futures
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import unicodedata
import wave

FORTUNES = "/usr/share/games/fortunes"
# Not English prose (or offensive): skipped from the English pool.
EN_SKIP = {"es", "off", "translate-me", "ascii-art", "art"}

LETTERS = {
    "en": "abcdefghijklmnopqrstuvwxyz",
    "es": "abcdefghijklmnopqrstuvwxyzáéíóúüñ",
}
PUNCT = set(".,;:!?'\"-()¿¡")
# Words that TTS reads differently from how they are written (the transcript would be wrong).
ABBREV = re.compile(
    r"\b(mr|mrs|ms|dr|st|jr|sr|sra|srta|dña|ud|uds|etc|vs|pág|núm|lic|ing)\b\.?", re.I)
CONJ = {
    "en": {"and", "but", "or", "because", "so", "when", "if", "while", "although", "though",
           "until", "unless", "since", "whereas", "then"},
    "es": {"y", "e", "pero", "o", "u", "porque", "cuando", "si", "aunque", "mientras", "sino",
           "pues", "que", "como", "donde", "ni"},
}


def die(msg):
    sys.exit(f"prepare_text.py: {msg}")


def normalize(text, lang):
    """The transcript: NFC, lower case, letters of the language and (English) word-internal apostrophes."""
    t = unicodedata.normalize("NFC", text).lower().replace("’", "'")
    t = re.sub(r"[-]", " ", t)
    keep = LETTERS[lang]
    out = []
    for ch in t:
        if ch in keep or ch == "'" or ch.isspace():
            out.append(ch if not ch.isspace() else " ")
        else:
            out.append(" ")
    t = "".join(out)
    if lang == "en":
        t = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", t)  # quotes, not contractions
    else:
        t = t.replace("'", " ")
    return " ".join(t.split())


def read_fortunes(path):
    """Fortunes of one file, attribution lines (`-- Author` and what follows) dropped."""
    with open(path, encoding="utf-8", errors="replace") as f:
        raw = f.read()
    for block in raw.split("\n%\n"):
        lines = []
        for line in block.split("\n"):
            if re.match(r"^\s*(--|—|―)", line):
                break
            lines.append(line.strip())
        text = " ".join(l for l in lines if l and l != "%")
        if text:
            yield text


def sentences_of(text):
    text = re.sub(r"\s+", " ", text)
    parts = re.split(r"(?<=[.!?])[\"')]*\s+(?=[\"'(¿¡]*[A-ZÁÉÍÓÚÑ])", text)
    return [p.strip() for p in parts if p.strip()]


def clean(sentence, lang):
    """The sentence ready for TTS, or None: 3-20 words, letters and basic punctuation, no digits,
    no abbreviations or acronyms (read aloud differently from their spelling)."""
    s = unicodedata.normalize("NFC", sentence).replace("’", "'").replace("“", '"').replace("”", '"')
    s = s.strip().strip('"').strip()
    allowed = set(LETTERS[lang]) | set(LETTERS[lang].upper()) | PUNCT | {" "}
    if any(ch not in allowed for ch in s):
        return None
    if ABBREV.search(s) or re.search(r"\b[A-Za-z][.:]", s):
        return None
    if re.search(r"\b[A-ZÁÉÍÓÚÑ]{2,}\b", s):  # acronyms and shouting
        return None
    if "--" in s or "..." in s:
        return None
    norm = normalize(s, lang)
    n = len(norm.split())
    if n < 3 or n > 20:
        return None
    if not re.search(r"[.!?]$", s):  # a fragment of a longer text
        return None
    return s


def clauses_of(sentence, lang):
    """Clauses and phrases of a clean sentence: split at punctuation and before conjunctions, 2-6 words,
    returned with their punctuation stripped at the ends (TTS input)."""
    out = []
    for chunk in re.split(r"[,;:!?.¿¡()\"]+", sentence):
        words = chunk.split()
        piece = []
        for w in words:
            if piece and normalize(w, lang) in CONJ[lang] and len(piece) >= 2:
                out.append(piece)
                piece = []
            piece.append(w)
        if piece:
            out.append(piece)
    res = []
    for piece in out:
        norm = normalize(" ".join(piece), lang).split()
        if 2 <= len(norm) <= 6:
            res.append(" ".join(piece).strip("'- "))
    return res


def split_of(norm, dev, test):
    h = int(hashlib.md5(norm.encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if h < test else "dev" if h < test + dev else "train"


def cmd_text(a):
    sources = {"en": [], "es": []}
    if not os.path.isdir(a.fortunes):
        die(f"{a.fortunes}: not found; install the fortunes: apt-get install fortune-mod fortunes fortunes-es "
            "(or run ../shared/tools/tts-packages.sh)")
    for name in sorted(os.listdir(a.fortunes)):
        p = os.path.join(a.fortunes, name)
        if os.path.isfile(p) and not name.endswith((".dat", ".u8")) and name not in EN_SKIP:
            sources["en"].append(p)
    es_dir = os.path.join(a.fortunes, "es")
    if os.path.isdir(es_dir):
        for name in sorted(os.listdir(es_dir)):
            p = os.path.join(es_dir, name)
            if os.path.isfile(p) and name.endswith(".fortunes"):
                sources["es"].append(p)
    for lang, files in sources.items():
        if not files:
            pkg = "fortunes" if lang == "en" else "fortunes-es"
            die(f"no {lang} fortunes under {a.fortunes}; install them: apt-get install {pkg}")
    stats = {}
    for lang, files in sources.items():
        seen = {}
        for p in files:
            for fortune in read_fortunes(p):
                for s in sentences_of(fortune):
                    c = clean(s, lang)
                    if c is None:
                        continue
                    norm = normalize(c, lang)
                    seen.setdefault(norm, c)
        splits = {"train": [], "dev": [], "test": []}
        for norm, c in sorted(seen.items()):
            splits[split_of(norm, a.dev, a.test)].append((c, norm))
        # Clauses: from each split's own sentences; a clause text is kept in one split only (dev/test first).
        clauses = {}
        taken = set(seen)  # no clause repeats a whole sentence of another split
        for split in ("test", "dev", "train"):
            got = {}
            for c, norm in splits[split]:
                for cl in clauses_of(c, lang):
                    n = normalize(cl, lang)
                    if n and n not in taken and n not in got:
                        got[n] = cl
            for n in got:
                taken.add(n)
            clauses[split] = sorted((cl, n) for n, cl in got.items())
        d = os.path.join(a.out, lang)
        os.makedirs(d, exist_ok=True)
        st = {}
        for split in splits:
            for kind, rows in (("sentences", splits[split]), ("clauses", clauses[split])):
                rng = random.Random(f"{a.seed}-{lang}-{split}-{kind}")
                rows = sorted(rows)
                rng.shuffle(rows)
                write_lines(os.path.join(d, f"{split}.{kind}.txt"), [r[0] for r in rows])
                write_lines(os.path.join(d, f"{split}.{kind}.norm.txt"), [r[1] for r in rows])
                st[f"{split}.{kind}"] = {"lines": len(rows), "words": sum(len(r[1].split()) for r in rows)}
        # The tokenizer corpus: normalised train sentences and clauses.
        write_lines(os.path.join(d, "tokenizer_corpus.txt"),
                    [n for _, n in splits["train"]] + [n for _, n in clauses["train"]])
        stats[lang] = st
    with open(os.path.join(a.out, "stats.json"), "w") as f:
        json.dump(stats, f, indent=1)
    print(json.dumps(stats))


def write_lines(path, lines):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for l in lines:
            f.write(l + "\n")
    os.replace(tmp, path)


def est_seconds(line, wpm):
    return 0.25 + len(line.split()) * 60.0 / wpm


def cmd_select(a):
    with open(a.input, encoding="utf-8") as f:
        lines = [l.strip() for l in f if l.strip()]
    if not lines:
        die(f"{a.input}: no lines")
    parts = []
    for p in a.parts.split(","):
        name, frac = p.split("=")
        parts.append((name, float(frac)))
    total = sum(f for _, f in parts)
    rng = random.Random(a.seed)
    pool, passes = [], 0
    chosen = {name: [] for name, _ in parts}
    # Each part gets its share of hours; lines are drawn without replacement, a fresh shuffle per pass.
    for name, frac in parts:
        need = a.hours * 3600.0 * frac / total
        got = 0.0
        while got < need:
            if not pool:
                pool = lines[:]
                rng.shuffle(pool)
                passes += 1
            l = pool.pop()
            chosen[name].append(l)
            got += est_seconds(l, a.wpm)
    for name, ls in chosen.items():
        write_lines(f"{a.out_prefix}.{name}.txt", ls)
    print(json.dumps({"input_lines": len(lines), "passes": passes,
                      **{name: len(ls) for name, ls in chosen.items()}}))


def read_manifest(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(l) for l in f if l.strip()]


def write_manifest(path, rows):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def cmd_normalize(a):
    rows = read_manifest(a.input)
    out = []
    for r in rows:
        if "tts_text" not in r:
            r["tts_text"] = r["text"]
        r["text"] = normalize(r["tts_text"], a.lang)
        r["lang"] = a.lang
        if r["text"]:
            out.append(r)
    write_manifest(a.output, out)
    print(json.dumps({"manifest": a.output, "utterances": len(out), "dropped": len(rows) - len(out)}))


def cmd_merge(a):
    out_dir = os.path.dirname(os.path.abspath(a.output))
    rows, dropped = [], 0
    for m in a.inputs:
        base = os.path.dirname(os.path.abspath(m))
        for r in read_manifest(m):
            if a.min_languages > 1:
                langs = {s["lang"] for s in r["text"]} if isinstance(r["text"], list) else {r.get("lang")}
                if len(langs) < a.min_languages:
                    dropped += 1
                    continue
            p = r["audio_filepath"]
            if not os.path.isabs(p):
                p = os.path.join(base, p)
            r["audio_filepath"] = os.path.relpath(p, out_dir)
            if a.max_hours and sum(x["duration"] for x in rows) + r["duration"] > a.max_hours * 3600:
                break
            rows.append(r)
    write_manifest(a.output, rows)
    print(json.dumps({"manifest": a.output, "utterances": len(rows), "dropped": dropped,
                      "hours": round(sum(r["duration"] for r in rows) / 3600, 4)}))


def cmd_stats(a):
    res = {}
    for m in a.inputs:
        rows = read_manifest(m)
        res[m] = {"utterances": len(rows), "hours": round(sum(r["duration"] for r in rows) / 3600, 4)}
    print(json.dumps(res, indent=1))


FESTIVAL_VOICES = {
    "kal": "voice_kal_diphone",
    "slt": "voice_cmu_us_slt_arctic_hts",
}


def cmd_festival(a):
    if shutil.which("text2wave") is None:
        die("festival's text2wave is not installed: apt-get install festival festvox-kallpc16k "
            "festvox-us-slt-hts (or run ../shared/tools/tts-packages.sh)")
    voices = a.voices.split(",")
    for v in voices:
        if v not in FESTIVAL_VOICES:
            die(f"unknown festival voice {v!r}; known: {', '.join(FESTIVAL_VOICES)}")
    speeds = [float(s) for s in a.stretches.split(",")]
    with open(a.text, encoding="utf-8") as f:
        lines = [l.strip() for l in f if l.strip()]
    if not lines:
        die(f"{a.text}: no sentences")
    rng = random.Random(a.seed)
    jobs = [(k, l, voices[rng.randrange(len(voices))], speeds[rng.randrange(len(speeds))])
            for k, l in enumerate(lines)]
    audio = os.path.join(a.out, "audio")
    os.makedirs(audio, exist_ok=True)

    def one(job):
        k, text, voice, stretch = job
        name = f"{a.lang}_{k + 1:06d}"
        wav = os.path.join(audio, name + ".wav")
        if not os.path.exists(wav):
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".wav", dir=audio)
            os.close(fd)
            try:
                ev = f"(begin ({FESTIVAL_VOICES[voice]}) (Parameter.set 'Duration_Stretch {stretch}))"
                p = subprocess.run(["text2wave", "-F", str(a.sample_rate), "-eval", ev, "-o", tmp],
                                   input=text.encode("utf-8"), capture_output=True)
                if p.returncode != 0 or os.path.getsize(tmp) <= 44:
                    raise RuntimeError(f"{a.text}:{k + 1}: text2wave failed with voice {voice}: "
                                       f"{p.stderr.decode(errors='replace').strip()[-300:]} "
                                       f"(is festvox for {voice} installed?)")
                os.replace(tmp, wav)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        with wave.open(wav) as w:
            if w.getframerate() != a.sample_rate:
                raise RuntimeError(f"{wav}: {w.getframerate()} Hz, expected {a.sample_rate}")
            dur = w.getnframes() / w.getframerate()
        return {"audio_filepath": f"audio/{name}.wav", "duration": dur, "text": text, "lang": a.lang,
                "engine": "festival", "voice": voice, "duration_stretch": stretch}

    with concurrent.futures.ThreadPoolExecutor(max_workers=a.jobs) as ex:
        try:
            rows = list(ex.map(one, jobs))
        except RuntimeError as e:
            die(str(e))
    write_manifest(os.path.join(a.out, "manifest.json"), rows)
    print(json.dumps({"manifest": os.path.join(a.out, "manifest.json"), "utterances": len(rows),
                      "hours": round(sum(r["duration"] for r in rows) / 3600, 4)}))


def cmd_table(a):
    pct = lambda x: "-" if x is None else f"{100 * x:.2f}"
    print("| set | utterances | hours | WER % | CER % | WER en % | WER es % | token LID % | word LID % "
          "| utt LID % | RTFx |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for s in a.sets:
        with open(os.path.join(a.dir, s + ".json"), encoding="utf-8") as fh:
            r = json.load(fh)
        pl = r.get("per_language", {})
        w = lambda l: pct(pl[l]["wer"]) if isinstance(pl.get(l), dict) and "wer" in pl[l] else "-"
        print(f"| {s} | {r['utterances']} | {r['audio_seconds'] / 3600:.2f} | {pct(r['wer'])} | {pct(r['cer'])} "
              f"| {w('en')} | {w('es')} | {pct(r.get('token_lid_accuracy'))} | {pct(r.get('word_lid_accuracy'))} "
              f"| {pct(r.get('utterance_lid_accuracy'))} | {r['rtfx']:.1f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("text")
    p.add_argument("--out", required=True)
    p.add_argument("--fortunes", default=FORTUNES)
    p.add_argument("--dev", type=float, default=0.04)
    p.add_argument("--test", type=float, default=0.04)
    p.add_argument("--seed", default="0")
    p.set_defaults(f=cmd_text)
    p = sub.add_parser("select")
    p.add_argument("--input", required=True)
    p.add_argument("--out-prefix", required=True)
    p.add_argument("--hours", type=float, required=True)
    p.add_argument("--parts", default="all=1")
    p.add_argument("--wpm", type=float, default=165)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(f=cmd_select)
    p = sub.add_parser("normalize")
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--lang", required=True, choices=sorted(LETTERS))
    p.set_defaults(f=cmd_normalize)
    p = sub.add_parser("merge")
    p.add_argument("--output", required=True)
    p.add_argument("--min-languages", type=int, default=1,
                   help="drop samples with fewer languages (a code-switched set keeps only real switches)")
    p.add_argument("--max-hours", type=float, default=0, help="keep the first rows up to this many hours")
    p.add_argument("inputs", nargs="+")
    p.set_defaults(f=cmd_merge)
    p = sub.add_parser("stats")
    p.add_argument("inputs", nargs="+")
    p.set_defaults(f=cmd_stats)
    p = sub.add_parser("table")
    p.add_argument("dir")
    p.add_argument("sets", nargs="+")
    p.set_defaults(f=cmd_table)
    p = sub.add_parser("festival")
    p.add_argument("--text", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--lang", default="en")
    p.add_argument("--voices", default="kal,slt")
    p.add_argument("--stretches", default="0.9,1.0,1.15")
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.set_defaults(f=cmd_festival)
    a = ap.parse_args()
    a.f(a)


if __name__ == "__main__":
    main()
