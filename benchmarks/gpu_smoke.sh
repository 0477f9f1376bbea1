#!/usr/bin/env bash
# One prepared GPU check (see ../shared/device): the test suite on the GPU
# machine's Python/torch, the demo on CUDA (compile, bf16, channels_last,
# fused AdamW), then UTKFace-sized synthetic data (23,708 images at 200 px)
# with resnet18 at 32 px / batch 512 and 128 px / batch 256.
# Usage: here, bash ../shared/device/prepare.sh && bash benchmarks/gpu_wheels.sh; there, prepare.sh's
# install line, then OUT=/some/dir bash benchmarks/gpu_smoke.sh
. "$(dirname "$0")/gpu_common.sh"

step "pytest"
# The image has pytest-xdist and 16 cores; torchjd and jsonschema come from benchmarks/gpu_wheels.sh.
workers=$(python3 -c "import xdist" 2>/dev/null && echo "-n 8" || echo "")
timeout 300 python3 -m pytest -q --maxfail=5 -p no:cacheprovider $workers tests 2>&1 | tail -n 25

step "demo on cuda"
timeout 150 hydranet train --out /tmp/runs/demo --no-progress 2>&1 | tail -n 16

# Paths CPU tests can only stand in for: a parameter-space gradient weighting on channels_last weights
# (fused AdamW refuses gradients of another layout), a feature-space one under the compiler's CUDA graphs,
# and batches through pinned host buffers (data.placement: host, events on the run's stream).
for variant in "weighting=pcgrad" "weighting=mgda" "data.placement=host"; do
  step "demo on cuda, 2 epochs, $variant"
  timeout 150 hydranet train --set "$variant" --set train.epochs=2 --out "/tmp/runs/demo-${variant%%=*}-${variant#*=}" \
    --no-progress 2>&1 | tail -n 7
done

# Two compiled runs in one process (torch._dynamo.reset between them, CUDA graph pools freed); the issue saw
# inductor fail compiling a second channels_last model in one process with torch 2.11.
step "sweep on cuda: three compiled runs in one process"
timeout 200 hydranet train --sweep weighting=sum,pcgrad,uncertainty --set train.epochs=2 --out /tmp/runs/sweep \
  --no-progress 2>&1 | grep -v "^epoch" | tail -n 14

step "linalg.eigh (one sync) against the Jacobi solver (no sync, many launches), as gram_root uses it"
timeout 60 python3 benchmarks/eigh.py 2>&1 | tail -n 6

step "synthetic UTKFace-sized folder"
/usr/bin/time -f "synth %e s" hydranet synth /tmp/utk --count 23708 --size 200 --no-progress 2>&1 | tail -n 2

for cfg in "32 512" "128 256"; do
  set -- $cfg
  step "resnet18 ${1}px batch ${2}"
  timeout 200 hydranet train utkface --set data.root=/tmp/utk --set image_size=$1 --set train.batch_size=$2 \
    --set train.epochs=4 --set data.workers=16 --out /tmp/runs/r18-$1 --no-progress 2>&1 | tail -n 14
  cp /tmp/runs/r18-$1/metrics.csv "$OUT/metrics-r18-$1.csv" 2>/dev/null
done
