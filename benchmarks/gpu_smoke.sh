#!/usr/bin/env bash
# One prepared GPU correctness check (see ../shared/device), for one call of under 10 minutes: the test
# suite on the GPU machine's Python/torch, the demo on CUDA (compile, bf16, channels_last, fused AdamW, the
# whole step recorded as a CUDA graph),
# the paths CPU tests can only stand in for, and a sweep (compiled runs one after another in one process).
# The speed targets are gpu_speed.sh's.
# Usage: here, bash ../shared/device/prepare.sh && bash benchmarks/gpu_wheels.sh, and carry .whl; there,
# prepare.sh's install line, then OUT=/some/dir bash benchmarks/gpu_smoke.sh
# PARTS picks what runs (default: all, about 9 minutes): pytest demo variants sweep capture.
# With the session's 15 minutes of device time, run gpu_speed.sh PARTS="setup 32 128" first (the issue's
# figures), then PARTS="demo capture variants" here at once (the machine goes back after 30 s idle).
. "$(dirname "$0")/gpu_common.sh"
PARTS=${PARTS:-pytest demo variants sweep capture}
part() { [[ " $PARTS " == *" $1 "* ]]; }

if part pytest; then
  step "pytest"
  # The image has pytest-xdist and 16 cores; torchjd and jsonschema come from benchmarks/gpu_wheels.sh.
  workers=$(python3 -c "import xdist" 2>/dev/null && echo "-n 8" || echo "")
  timeout 300 python3 -m pytest -q --maxfail=5 -p no:cacheprovider $workers tests 2>&1 | tail -n 25
fi

if part demo; then
  step "demo on cuda"
  timeout 150 hydranet train --out /tmp/runs/demo --no-progress 2>&1 | tail -n 16
  # the recorded step (auto's choice on CUDA) was kept, or why it was not
  grep -E "^model:|graph|warning" /tmp/runs/demo/train.log | cut -c 1-300
fi

# Paths CPU tests can only stand in for: a parameter-space gradient weighting on channels_last weights
# (fused AdamW refuses gradients of another layout), a feature-space one under the compiler's CUDA graphs,
# batches through pinned host buffers (data.placement: host, events on the run's stream, the step recorded),
# and the compiler's graphs (reduce-overhead), the default before the recorded step.
if part variants; then
  for variant in "weighting=pcgrad" "weighting=mgda" "data.placement=host" "train.cuda_graphs=compiler"; do
    step "demo on cuda, 2 epochs, $variant"
    timeout 150 hydranet train --set "$variant" --set train.epochs=2 --out "/tmp/runs/demo-${variant%%=*}-${variant#*=}" \
      --no-progress 2>&1 | tail -n 7
  done
fi

# Compiled runs one after another in one process (torch._dynamo.reset between them, CUDA graph pools
# freed); the issue saw inductor fail compiling a second channels_last model in one process with torch 2.11.
if part sweep; then
  step "sweep on cuda: three compiled runs in one process"
  timeout 200 hydranet train --sweep weighting=sum,pcgrad,uncertainty --set train.epochs=2 --out /tmp/runs/sweep \
    --no-progress 2>&1 | grep -v "^epoch" | tail -n 14
fi

# The recorded step (auto's choice on CUDA) against no graphs on the demo and variants (dwa's per-epoch state,
# dropout drawing inside the graph, pinned host batches), and stopped then resumed from last.pt.
if part capture; then
  step "recorded step against no graphs: demo variants, and a resume"
  timeout 300 python3 benchmarks/capture_check.py --variants demo,dwa,dropout,host --resume 2>&1 | tail -n 8
fi
