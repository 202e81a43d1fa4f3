#!/usr/bin/env bash
# Where mezcla's time goes in the two acoustic-model benchmarks: `perf record` (frame-pointer-free sampling, no
# call graphs) of one pass of bench/rtfx.py's inference and of 6 steps of bench/train_step.py's training run,
# then the share of samples per thread and symbol, per binary (kernel vs user space), and per thread.
#
# Run after bench/rtfx.py and bench/train_step.py (it reuses their model, audio and train.toml):
#     bench/perf_asr.sh
set -eu  # no pipefail: `head` closes the report pipes early
cd "$(dirname "$0")/.."
out=bench/out/asr/perf
mkdir -p "$out"
files=$(/work/pyref/bin/python -c "
import json
print(' '.join(json.loads(l)['audio_filepath'] for l in open('bench/out/asr/rtfx_audio/eval_manifest.json')))")
report() {
  echo "== $1: samples per binary"
  perf report -i "$2" --no-children --sort dso --stdio -g none 2>/dev/null | grep '%' | head -4
  echo "== $1: samples per thread"
  perf report -i "$2" --no-children --sort comm,pid --stdio -g none 2>/dev/null | grep '%' | head -6
  echo "== $1: top symbols (all threads)"
  perf report -i "$2" --no-children --sort symbol --stdio -g none 2>/dev/null | grep '%' | head -25 | cut -c1-120
}

RAYON_NUM_THREADS=2 perf record -F 999 -o "$out/rtfx.data" target/release/examples/rtfx_bench \
  bench/out/asr/small_bpe256.nemo 1 $files > "$out/rtfx.json" 2> "$out/rtfx.log"
report "inference (rtfx_bench, warm-up + 1 pass over the rtfx files)" "$out/rtfx.data"

sed -e "s#^out_dir = .*#out_dir = \"$PWD/$out/train_run\"#" -e 's/^max_steps = .*/max_steps = 6/' \
  -e 's/^every = .*/every = 6/' bench/out/asr/train_mezcla/train.toml > "$out/train.toml"
rm -rf "$out/train_run"
RAYON_NUM_THREADS=2 perf record -F 499 -o "$out/train.data" target/release/mezcla train --config "$out/train.toml" \
  --json > "$out/train.json" 2> "$out/train.log"
report "training (mezcla train, 6 steps of the train_step batch)" "$out/train.data"

# Call graphs (DWARF unwinding) of 2 training steps: what the main thread's time is spent under.
sed -e 's/^max_steps = .*/max_steps = 2/' -e 's/^every = .*/every = 2/' "$out/train.toml" > "$out/train2.toml"
rm -rf "$out/train_run"
RAYON_NUM_THREADS=2 perf record -F 79 --call-graph dwarf,32768 -o "$out/train_dwarf.data" target/release/mezcla \
  train --config "$out/train2.toml" --json > /dev/null 2> "$out/train_dwarf.log"
echo "== training, 2 steps with call graphs: inclusive share of selected functions (all threads)"
perf report -i "$out/train_dwarf.data" --children --sort symbol --stdio -g none 2>/dev/null | grep '%' |
  grep -E 'train::run |Tensor>::backward |ConformerEncoder::forward |storage::Storage::reduce_op |AdamW::update |\] asm_exc_page_fault ' |
  head -12 | cut -c1-130
echo "== training, 2 steps: callers of candle's Map1::map (self time)"
perf report -i "$out/train_dwarf.data" --no-children --symbols='candle_core::cpu_backend::utils::Map1::map' \
  -g caller,0.5,callee,function,percent --stdio 2>/dev/null | grep -E '%|ReduceSum|backward|sum_keepdim' | head -12 |
  cut -c1-130
