#!/usr/bin/env bash
# The English-Spanish code-switching recipe: text -> TTS corpora -> code-switched mixes -> tokenizer -> training
# -> evaluation. Run from anywhere; everything is written under --data (default data/en_es at the repository root).
#
#   recipes/en_es/run.sh                                  # all stages, full scale (>= 10 h per language, ~2 h training)
#   recipes/en_es/run.sh --smoke                          # the same at a few minutes of audio and a few dozen steps
#   recipes/en_es/run.sh --stage 5 --stop-stage 5         # one stage; every stage resumes where it stopped
#
# Stages: 0 tools and the release binary, 1 text, 2 TTS, 3 code-switched sets, 4 tokenizer and word LM,
# 5 training, 6 evaluation (greedy, and beam search with the LM), 7 the default model to ship (f16 + LM) and
# its evaluation. See recipes/en_es/README.md.
set -euo pipefail

RECIPE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$RECIPE/../.." && pwd)

stage=0
stop_stage=7
data="$ROOT/data/en_es"
exp=""              # experiment folder (training, evaluation, default model); default: DATA/exp
hours=10.8          # train hours asked per language (the estimate runs high: ~10.1 h en, ~10.8 h es measured)
dev_hours=0.4       # per language, for each of dev and test
cs_hours=""         # offline code-switched train hours (default 10)
cs_dev_hours=""     # code-switched dev and test hours each (default: = --dev-hours)
max_steps=""        # default: the value in train.toml
eval_every=""       # default: the value in train.toml
warmup=""           # default: the value in train.toml
batch_seconds=""    # default: the value in train.toml ([batch] max_duration)
festival=1
jobs=$(nproc)
seed=1
smoke=0

usage() {
  sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  cat <<EOF
Options:
  --stage N --stop-stage M   run stages N..M (default 0..7)
  --data DIR                 output folder (default data/en_es)
  --exp DIR                  experiment folder of stages 5-7 (default DATA/exp), e.g. to compare runs on one dataset
  --hours H                  train hours of TTS speech asked per language (default $hours, which measures >= 10 h)
  --dev-hours H              dev and test hours per language, each (default $dev_hours)
  --cs-hours H               offline code-switched train hours (default 10)
  --cs-dev-hours H           code-switched dev and test hours, each (default: --dev-hours)
  --max-steps N --eval-every N --warmup N --batch-seconds S   override train.toml
  --no-festival              English from espeak-ng and flite only
  --jobs N                   TTS and mixing threads (default: all cores)
  --seed N                   (default $seed)
  --smoke                    a 5-minute end-to-end check: --data data/en_es_smoke --hours 0.05 --dev-hours 0.02
                             --max-steps 30 --eval-every 15 --warmup 5 --batch-seconds 30 (later options override these)
EOF
}

args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  if [[ ${args[$i]} == --smoke ]]; then
    smoke=1; data="$ROOT/data/en_es_smoke"; hours=0.05; dev_hours=0.02; cs_hours=0.05; max_steps=30; eval_every=15; warmup=5; batch_seconds=30
  fi
done
while [[ $# -gt 0 ]]; do
  case $1 in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --hours|--hours-per-language) hours=$2; shift 2 ;;
    --dev-hours) dev_hours=$2; shift 2 ;;
    --cs-hours) cs_hours=$2; shift 2 ;;
    --cs-dev-hours) cs_dev_hours=$2; shift 2 ;;
    --max-steps) max_steps=$2; shift 2 ;;
    --eval-every) eval_every=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --batch-seconds) batch_seconds=$2; shift 2 ;;
    --no-festival) festival=0; shift ;;
    --jobs) jobs=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --smoke) shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
cs_hours=${cs_hours:-10}
cs_dev_hours=${cs_dev_hours:-$dev_hours}
mkdir -p "$data"
data=$(cd "$data" && pwd)
MEZCLA="$ROOT/target/release/mezcla"
PY="python3 $RECIPE/prepare_text.py"
exp=${exp:-$data/exp}
mkdir -p "$exp"
exp=$(cd "$exp" && pwd)

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
need() {  # need PROGRAM PACKAGES
  command -v "$1" >/dev/null 2>&1 || {
    echo "run.sh: $1 is not installed; install it with: apt-get install $2 (or run ../shared/tools/tts-packages.sh)" >&2
    exit 1
  }
}
# Runs a stage when it is in [stage, stop_stage].
want() { [[ $1 -ge $stage && $1 -le $stop_stage ]]; }

# The voices. Spanish: espeak-ng es (Spain) and es-419 (Latin America), 12 variants, 4 speeds, 5 pitches.
ES_VOICES=es,es-419
ES_VARIANTS=m1,m2,m3,m4,m5,m6,m7,f1,f2,f3,f4,f5
ES_SPEEDS=130,150,170,190
ES_PITCHES=30,40,50,60,70
# English: espeak-ng accents with variants; flite's five voices; festival's kal (diphone) and slt (HTS).
EN_VOICES=en-us,en-gb,en-gb-scotland,en-gb-x-rp,en-029
EN_VARIANTS=m1,m2,m3,m4,m5,m6,m7,f1,f2,f3,f4,f5
EN_SPEEDS=130,150,170,190
EN_PITCHES=30,40,50,60,70
FLITE_VOICES=slt,kal,kal16,awb,rms
FLITE_SPEEDS=140,160,175,195
FESTIVAL_VOICES=kal,slt
FESTIVAL_STRETCHES=0.9,1.0,1.15
if [[ $festival == 1 ]]; then EN_PARTS=espeak=0.45,flite=0.35,festival=0.2; else EN_PARTS=espeak=0.55,flite=0.45; fi
ES_PARTS=espeak=1

log "data: $data  hours/language: $hours  dev/test: $dev_hours  cs: $cs_hours / $cs_dev_hours  stages $stage..$stop_stage"

# ---------------------------------------------------------------------------------------------------------------
if want 0; then
  log "stage 0: tools and the release binary"
  need python3 python3
  need espeak-ng espeak-ng
  need flite flite
  [[ $festival == 1 ]] && need text2wave "festival festvox-kallpc16k festvox-us-slt-hts"
  [[ -d /usr/share/games/fortunes ]] || { echo "run.sh: the fortunes are missing; install them with: apt-get install fortune-mod fortunes fortunes-es" >&2; exit 1; }
  [[ -d /usr/share/games/fortunes/es ]] || { echo "run.sh: the Spanish fortunes are missing; install them with: apt-get install fortunes-es" >&2; exit 1; }
  for v in ${ES_VOICES//,/ } ${EN_VOICES//,/ }; do
    espeak-ng -v "$v" -q "a" 2>/dev/null || { echo "run.sh: espeak-ng has no voice $v; install espeak-ng-data" >&2; exit 1; }
  done
  for v in ${FLITE_VOICES//,/ }; do
    flite -lv | grep -qw "$v" || { echo "run.sh: flite has no voice $v; install flite" >&2; exit 1; }
  done
  need cargo "the Rust toolchain (https://rustup.rs)"
  (cd "$ROOT" && cargo build --release -p mezcla-asr)
fi
[[ -x $MEZCLA ]] || { echo "run.sh: $MEZCLA is missing; run stage 0 (cargo build --release -p mezcla-asr)" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------------------------
if want 1; then
  log "stage 1: text from fortunes (en) and fortunes-es (es) -> $data/text"
  $PY text --out "$data/text" --seed "$seed" >/dev/null
  python3 -c "import json,sys; s=json.load(open(sys.argv[1]))
for l in s:
  print(l, ' '.join(f'{k}={v[\"lines\"]}' for k,v in s[l].items()))" "$data/text/stats.json"
fi

# ---------------------------------------------------------------------------------------------------------------
# tts LANG SPLIT KIND HOURS PARTS: draws the text for each engine, synthesizes it, normalises the transcripts.
tts() {
  local lang=$1 split=$2 kind=$3 h=$4 parts=$5
  local sel="$data/select/$lang/$split.$kind"
  mkdir -p "$data/select/$lang"
  if [[ -s $sel.args && $(cat "$sel.args") != "$h $parts $seed" ]]; then
    echo "run.sh: $data was made with other settings for $lang $split $kind ($(cat "$sel.args"), now $h $parts $seed);" \
      "use another --data or delete $data/select and $data/tts" >&2
    exit 1
  fi
  echo "$h $parts $seed" > "$sel.args"
  if [[ ! -s $sel.done ]]; then
    $PY select --input "$data/text/$lang/$split.$kind.txt" --out-prefix "$sel" --hours "$h" --parts "$parts" \
      --seed "$seed" > "$sel.done"
  fi
  local engine out t0 t1
  for engine in $(echo "$parts" | tr ',' '\n' | cut -d= -f1); do
    out="$data/tts/$lang/$split.$kind.$engine"
    if [[ -s $out/manifest.norm.json ]]; then continue; fi
    mkdir -p "$(dirname "$out")"
    t0=$(date +%s.%N)
    case $lang/$engine in
      es/espeak)
        "$MEZCLA" datagen tts --text "$sel.$engine.txt" --lang es --out "$out" --voices $ES_VOICES \
          --variants $ES_VARIANTS --speeds $ES_SPEEDS --pitches $ES_PITCHES --seed "$seed" --jobs "$jobs" --json \
          > "$out.summary.json" ;;
      en/espeak)
        "$MEZCLA" datagen tts --text "$sel.$engine.txt" --lang en --out "$out" --voices $EN_VOICES \
          --variants $EN_VARIANTS --speeds $EN_SPEEDS --pitches $EN_PITCHES --seed "$seed" --jobs "$jobs" --json \
          > "$out.summary.json" ;;
      en/flite)
        "$MEZCLA" datagen tts --engine flite --text "$sel.$engine.txt" --lang en --out "$out" \
          --voices $FLITE_VOICES --speeds $FLITE_SPEEDS --seed "$seed" --jobs "$jobs" --json > "$out.summary.json" ;;
      en/festival)
        $PY festival --text "$sel.$engine.txt" --lang en --out "$out" --voices $FESTIVAL_VOICES \
          --stretches $FESTIVAL_STRETCHES --seed "$seed" --jobs "$jobs" > "$out.summary.json" ;;
      *) echo "run.sh: no engine $engine for $lang" >&2; exit 1 ;;
    esac
    t1=$(date +%s.%N)
    $PY normalize --input "$out/manifest.json" --output "$out/manifest.norm.json" --lang "$lang" >/dev/null
    python3 - "$out/manifest.norm.json" "$t0" "$t1" "$lang" "$engine" "$jobs" >> "$data/tts/throughput.jsonl" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
h = sum(r["duration"] for r in rows) / 3600
wall = float(sys.argv[3]) - float(sys.argv[2])
print(json.dumps({"manifest": sys.argv[1], "lang": sys.argv[4], "engine": sys.argv[5], "jobs": int(sys.argv[6]),
                  "utterances": len(rows), "hours": round(h, 4), "wall_s": round(wall, 1),
                  "audio_hours_per_wall_minute": round(h / (wall / 60), 4) if wall > 0 else None}))
EOF
    log "  $lang $split $kind $engine: $(tail -n1 "$data/tts/throughput.jsonl")"
  done
}

if want 2; then
  log "stage 2: TTS corpora -> $data/tts, manifests -> $data/manifests"
  mkdir -p "$data/tts" "$data/manifests"
  for lang in en es; do
    if [[ $lang == en ]]; then parts=$EN_PARTS; else parts=$ES_PARTS; fi
    for split in train dev test; do
      if [[ $split == train ]]; then h=$hours; else h=$dev_hours; fi
      # 3/4 of the hours as whole sentences, 1/4 as 2-6 word clauses and phrases.
      hs=$(python3 -c "print($h*0.75)"); hc=$(python3 -c "print($h*0.25)")
      tts $lang $split sentences "$hs" "$parts"
      tts $lang $split clauses "$hc" "$parts"
      engines=$(echo "$parts" | tr ',' '\n' | cut -d= -f1)
      $PY merge --output "$data/manifests/${lang}_${split}.json" \
        $(for e in $engines; do echo "$data/tts/$lang/$split.sentences.$e/manifest.norm.json"; \
                                echo "$data/tts/$lang/$split.clauses.$e/manifest.norm.json"; done) >/dev/null
    done
  done
  $PY stats "$data"/manifests/{en,es}_{train,dev,test}.json
fi

# ---------------------------------------------------------------------------------------------------------------
if want 3; then
  log "stage 3: code-switched sets (datagen cs on each split's sentences and clauses) -> $data/cs"
  mkdir -p "$data/cs"
  for split in train dev test; do
    if [[ $split == train ]]; then h=$cs_hours; else h=$cs_dev_hours; fi
    case $split in train) s=$seed ;; dev) s=$((seed + 100)) ;; test) s=$((seed + 200)) ;; esac
    "$MEZCLA" datagen cs --manifest en="$data/manifests/en_${split}.json" --manifest es="$data/manifests/es_${split}.json" \
      --out "$data/cs/$split" --hours "$h" --seed "$s" --min-duration 6 --max-duration 18 --prefer-unused \
      --pause-join 50 --db-norm=-25 --jobs "$jobs" --json > "$data/cs/$split.summary.json.tmp"
    mv "$data/cs/$split.summary.json.tmp" "$data/cs/$split.summary.json"
    # A sample that is one long sentence has no switch: dropped (about 1 in 10).
    $PY merge --min-languages 2 --output "$data/manifests/cs_${split}.json" "$data/cs/$split/manifest.json"
  done
  # Validation during training: the first 0.1 h of the CS dev set (a full pass over dev costs minutes on 2 cores).
  $PY merge --max-hours 0.1 --output "$data/manifests/cs_dev_val.json" "$data/manifests/cs_dev.json" >/dev/null
  $PY stats "$data"/manifests/cs_{train,dev,test,dev_val}.json
fi

# ---------------------------------------------------------------------------------------------------------------
# Vocabulary: 256 pieces per language (see README: Tokenizer).
VOCAB_EN=256
VOCAB_ES=256
if want 4; then
  log "stage 4: tokenizer (unigram, en=$VOCAB_EN es=$VOCAB_ES, concatenated) -> $data/tokenizer"
  rm -rf "$data/tokenizer"
  "$MEZCLA" tokenizer train --input en="$data/text/en/tokenizer_corpus.txt" --input es="$data/text/es/tokenizer_corpus.txt" \
    --vocab-size en=$VOCAB_EN --vocab-size es=$VOCAB_ES --character-coverage 1.0 --out "$data/tokenizer"
  # The word LM for beam-search decoding: a trigram of both languages' train transcripts (the same sentences
  # and clauses the acoustic model learns from; no dev or test sentence is in them).
  log "stage 4: word trigram LM (modified Kneser-Ney) of the train transcripts -> $data/lm/lm3.arpa"
  mkdir -p "$data/lm"
  "$MEZCLA" lm train --manifest "$data/manifests/en_train.json" "$data/manifests/es_train.json" --order 3 \
    --out "$data/lm/lm3.arpa" $( ((smoke)) && echo --discount-fallback )
fi

# ---------------------------------------------------------------------------------------------------------------
if want 5; then
  mkdir -p "$exp"
  # The run's config: train.toml with its data paths pointed at $data and the overrides applied.
  python3 - "$RECIPE/train.toml" "$exp/train.toml" "$data" "$exp" "$max_steps" "$eval_every" "$warmup" "$batch_seconds" <<'EOF'
import re, sys
src, dst, data, exp, steps, every, warmup, batch = sys.argv[1:]
t = open(src).read().replace("../../data/en_es/exp/", exp + "/").replace("../../data/en_es/", data + "/")
if steps: t = re.sub(r"(?m)^max_steps = .*$", f"max_steps = {steps}", t)
if every: t = re.sub(r"(?m)^every = .*$", f"every = {every}", t)
if warmup: t = re.sub(r"(?m)^warmup_steps = .*$", f"warmup_steps = {warmup}", t)
if batch:  # the first max_duration after [batch] ([cs_mixing] has one too)
    head, tail = t.split("[batch]", 1)
    t = head + "[batch]" + re.sub(r"(?m)^max_duration = .*$", f"max_duration = {batch}", tail, count=1)
open(dst + ".tmp", "w").write(t)
import os; os.replace(dst + ".tmp", dst)
EOF
  resume=()
  if compgen -G "$exp/run/checkpoints/step-*" >/dev/null; then resume=(--resume); fi
  log "stage 5: training ${resume[*]:-from scratch} ($exp/train.toml, log $exp/train.log)"
  "$MEZCLA" train --config "$exp/train.toml" "${resume[@]}" --json 2> >(tee -a "$exp/train.log" >&2) \
    > "$exp/train_summary.json"
  cat "$exp/train_summary.json"
fi

# ---------------------------------------------------------------------------------------------------------------
if want 6; then
  log "stage 6: evaluation -> $exp/eval"
  mkdir -p "$exp/eval"
  for set in cs_test en_test es_test cs_dev en_dev es_dev; do
    "$MEZCLA" eval --model "$exp/run/model" --manifest "$data/manifests/$set.json" --json > "$exp/eval/$set.json.tmp"
    mv "$exp/eval/$set.json.tmp" "$exp/eval/$set.json"
  done
  $PY table "$exp/eval" cs_test en_test es_test cs_dev en_dev es_dev
  # Beam search (32) with the word LM: alpha and beta chosen on the code-switched validation set, then applied
  # to every set.
  log "stage 6: LM weights on cs_dev_val -> $exp/eval-lm/grid.json"
  mkdir -p "$exp/eval-lm"
  "$MEZCLA" eval --model "$exp/run/model" --manifest "$data/manifests/cs_dev_val.json" --lm "$data/lm/lm3.arpa" \
    --lm-alpha 0.3,0.5,0.7,0.9 --lm-beta 0.5,1.5,2.5,3.5 --json > "$exp/eval-lm/grid.json.tmp"
  mv "$exp/eval-lm/grid.json.tmp" "$exp/eval-lm/grid.json"
  read -r alpha beta < <(python3 -c 'import json,sys; b=json.load(open(sys.argv[1]))["best"]; print(b["alpha"], b["beta"])' \
    "$exp/eval-lm/grid.json")
  log "stage 6: evaluation with the LM (alpha $alpha, beta $beta) -> $exp/eval-lm"
  for set in cs_test en_test es_test cs_dev en_dev es_dev; do
    "$MEZCLA" eval --model "$exp/run/model" --manifest "$data/manifests/$set.json" --lm "$data/lm/lm3.arpa" \
      --lm-alpha "$alpha" --lm-beta "$beta" --json > "$exp/eval-lm/$set.json.tmp"
    mv "$exp/eval-lm/$set.json.tmp" "$exp/eval-lm/$set.json"
  done
  $PY table "$exp/eval-lm" cs_test en_test es_test cs_dev en_dev es_dev
fi

# ---------------------------------------------------------------------------------------------------------------
# The model to ship (mezcla's built-in default model): f16 weights (7 MB for the 4-layer model) with the word LM
# and the weights stage 6 chose, so that it decodes with them by default; evaluated on the test sets as shipped.
# `cp -r $exp/model-default/. asr/default_model/` ships it.
if want 7; then
  log "stage 7: the default model (f16 + LM) -> $exp/model-default, evaluation -> $exp/eval-default"
  read -r alpha beta < <(python3 -c 'import json,sys; b=json.load(open(sys.argv[1]))["best"]; print(b["alpha"], b["beta"])' \
    "$exp/eval-lm/grid.json")
  rm -rf "$exp/model-default"
  "$MEZCLA" convert "$exp/run/model" --out "$exp/model-default" --weights f16 --lm "$data/lm/lm3.arpa" \
    --lm-alpha "$alpha" --lm-beta "$beta"
  mkdir -p "$exp/eval-default"
  for set in cs_test en_test es_test; do
    "$MEZCLA" eval --model "$exp/model-default" --manifest "$data/manifests/$set.json" --json > "$exp/eval-default/$set.json.tmp"
    mv "$exp/eval-default/$set.json.tmp" "$exp/eval-default/$set.json"
  done
  $PY table "$exp/eval-default" cs_test en_test es_test
fi
log "done"
