#!/usr/bin/env bash
# Benchmark: time to produce 1 hour of code-switched audio with `mezcla datagen cs` against NeMo's two offline
# scripts (code_switching_manifest_creation.py + code_switching_audio_data_creation.py) on the same inputs, in
# the same run, on this machine.
#
# Needs: espeak-ng (../shared/tools/tts-packages.sh), the Python reference stack with NeMo
# (../shared/tools/reference-python.sh), and NeMo's two scripts, which are not part of the pip package: take
# them from a checkout of NVIDIA/NeMo (scripts/speech_recognition/code_switching/).
#
# Usage: bench/datagen_cs.sh NEMO_SCRIPTS_DIR [PYTHON] [HOURS]
set -euo pipefail
cd "$(dirname "$0")/.."
nemo=${1:?give the folder that holds the NeMo code_switching scripts}
py=${2:-/tmp/mezcla-ref/bin/python}
hours=${3:-1}
work=bench/out/datagen_cs
mkdir -p "$work"
cargo build --release -q -p mezcla-asr
mezcla=target/release/mezcla

# Inputs: 300 sentences per language from the fortunes packages, spoken by espeak-ng at its native 22050 Hz, so
# that both tools must resample.
"$py" - "$work" <<'PY'
import pathlib, re, sys
work = pathlib.Path(sys.argv[1])
def sentences(files, n):
    out = []
    for f in files:
        for block in pathlib.Path(f).read_text(errors="ignore").split("\n%\n"):
            s = " ".join(block.split())
            if 3 <= len(s.split()) <= 20 and re.fullmatch(r"[^\d\t]+", s):
                out.append(s)
            if len(out) >= n:
                return out
    return out
root = pathlib.Path("/usr/share/games/fortunes")
(work / "en.txt").write_text("\n".join(sentences([root / "fortunes", root / "wisdom", root / "people"], 300)) + "\n")
(work / "es.txt").write_text("\n".join(sentences(sorted((root / "es").glob("*.fortunes")), 300)) + "\n")
PY
for lang in en es; do
  voices=$([ $lang = en ] && echo en-us,en-us+m3,en+f2 || echo es,es-419+m2,es+f3)
  "$mezcla" datagen tts --text "$work/$lang.txt" --lang $lang --out "$work/$lang" --voices "$voices" \
    --sample-rate 22050 --json > /dev/null
  # NeMo's scripts take audio paths as they are: make them absolute.
  "$py" -c "
import json, os, sys
d = os.path.abspath(sys.argv[1])
with open(d + '/manifest.json') as f, open(d + '/manifest_abs.json', 'w') as g:
    for line in f:
        e = json.loads(line); e['audio_filepath'] = os.path.join(d, e['audio_filepath']); g.write(json.dumps(e) + '\n')
" "$work/$lang"
done

sync
t() { local s=$EPOCHREALTIME; "$@" > /dev/null 2>&1; "$py" -c "print($EPOCHREALTIME - $s)"; }
rm -rf "$work/nemo" "$work/mezcla"; mkdir -p "$work/nemo/audio"
# Warm the page cache for both tools alike.
cat "$work"/en/audio/*.wav "$work"/es/audio/*.wav > /dev/null
nemo1=$(t "$py" "$nemo/code_switching_manifest_creation.py" --manifest_language1 "$work/en/manifest_abs.json" \
  --manifest_language2 "$work/es/manifest_abs.json" --manifest_save_path "$work/nemo/intermediate.json" \
  --id_language1 en --id_language2 es --dataset_size_required_hrs "$hours")
nemo2=$(t "$py" "$nemo/code_switching_audio_data_creation.py" --manifest_path "$work/nemo/intermediate.json" \
  --audio_save_folder_path "$work/nemo/audio" --manifest_save_path "$work/nemo/manifest.json" --workers 2)
ours=$(t "$mezcla" datagen cs --manifest "en=$work/en/manifest.json" --manifest "es=$work/es/manifest.json" \
  --out "$work/mezcla" --hours "$hours" --seed 1)
nemo_h=$("$py" -c "import json,sys; print(sum(json.loads(l)['duration'] for l in open(sys.argv[1]))/3600)" "$work/nemo/manifest.json")
ours_h=$("$py" -c "import json,sys; print(sum(json.loads(l)['duration'] for l in open(sys.argv[1]))/3600)" "$work/mezcla/manifest.json")
total_nemo=$("$py" -c "print($nemo1 + $nemo2)")
printf 'machine: %s cores, %s\n' "$(nproc)" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
printf 'NeMo   plan %6.2f s + audio (2 workers) %6.2f s = %6.2f s for %.3f h\n' "$nemo1" "$nemo2" "$total_nemo" "$nemo_h"
printf 'mezcla both steps, all cores            = %6.2f s for %.3f h\n' "$ours" "$ours_h"
printf 'speed-up (NeMo time / mezcla time, per hour of output): %.1fx\n' \
  "$("$py" -c "print(($total_nemo / $nemo_h) / ($ours / $ours_h))")"
