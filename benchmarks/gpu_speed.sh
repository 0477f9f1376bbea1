#!/usr/bin/env bash
# One prepared GPU measurement for the speed targets (issue 3), sized for one call of under 10 minutes on
# an H100: UTKFace-sized synthetic data (23,708 JPEGs at 200 px), the decode benchmark at 128 and 32 px,
# then hydranet alone (no article loop: its figures are in docs/guides/performance.md) at 32 px / batch 512
# and 128 px / batch 256, each with the recorded whole step (the default) against the compiler's CUDA graphs
# (cuda_graphs=compiler), plus the recorded step without torch.compile (32 px) and the default with cuDNN's
# benchmark mode (128 px, where convolutions are most of the step); cold caches, 3 epochs. Last, at 32 px,
# compiling in the background
# (train.compile_in_background) over 60 epochs, long enough for the compiled model to take over.
# Every figure goes to $OUT/*.json, the tables to stdout.
# Usage (after ../shared/device/prepare.sh's install line): OUT=/some/dir bash benchmarks/gpu_speed.sh
# "setup" profiles the start before the first step (benchmarks/profile_setup.py, $OUT/setup-*.txt).
# PARTS picks what runs (default: all, about 11 minutes): PARTS="setup decode 32" then PARTS="128 background"
# fit two calls; the synthetic folder is written once and reused while the machine stays warm.
# A dry run elsewhere: COUNT=300 EXTRA="--backbone tiny --device cpu" bash benchmarks/gpu_speed.sh
. "$(dirname "$0")/gpu_common.sh"
COUNT=${COUNT:-23708}
EXTRA=${EXTRA:-}
PARTS=${PARTS:-setup decode 32 128 background}
part() { [[ " $PARTS " == *" $1 "* ]]; }

step "synthetic UTKFace-sized folder"
[ -d "/tmp/utk-$COUNT" ] && echo "reusing /tmp/utk-$COUNT" ||
  /usr/bin/time -f "synth %e s" hydranet synth "/tmp/utk-$COUNT" --count "$COUNT" --size 200 --no-progress 2>&1 | tail -n 2

if part setup; then
  step "where the start goes before the first step: cProfile of the setup, cold then warm decode cache (32 px)"
  for state in cold warm; do
    timeout 90 python3 benchmarks/profile_setup.py --root "/tmp/utk-$COUNT" --size 32 --rows 25 \
      --out "$OUT/setup-$state.txt" $EXTRA 2>&1 | head -n 1
  done
fi

if part decode; then
  step "decode $COUNT images (workers write in place vs pixels through pipes)"
  timeout 120 python3 benchmarks/decode.py --root "/tmp/utk-$COUNT" --size 128 --repeat 1 2>&1 | tail -n 8
  timeout 60 python3 benchmarks/decode.py --root "/tmp/utk-$COUNT" --size 32 --repeat 1 2>&1 | tail -n 8
fi

for cfg in "32 512 200 3 auto,cuda_graphs=compiler,cuda_graphs=step+compile=false" \
           "128 256 260 3 auto,cudnn_benchmark=true,cuda_graphs=compiler" \
           "32 512 150 60 compile_in_background=true background"; do
  set -- $cfg
  part "${6:-$1}" || continue
  variants=$5
  step "hydranet ${1}px batch ${2}, $4 epochs: $variants"
  timeout "$3" python3 benchmarks/speed.py --root "/tmp/utk-$COUNT" --size "$1" --batch-size "$2" --epochs "$4" --skip-baseline \
    --compile-modes "$variants" --json "$OUT/speed-$1-${6:-e$4}.json" $EXTRA 2>&1 | tail -n 12
  python3 - "$OUT/speed-$1-${6:-e$4}.json" <<'PY'
import json, sys
for loop in json.load(open(sys.argv[1]))["loops"]:
    print(loop["name"], "|", loop.get("error") or "", "|", loop.get("settings"), "|", loop.get("log_notes"),
          "|", {t: {m: round(v, 4) for m, v in ms.items()} for t, ms in (loop.get("final_metrics") or {}).items()})
PY
done
