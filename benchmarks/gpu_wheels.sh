#!/usr/bin/env bash
# Run here (not on the GPU machine), from the project's root, after ../shared/device/prepare.sh: adds to
# .whl/ the test extras the GPU machine's image lacks (torchjd, jsonschema and what jsonschema needs), as
# CPython 3.12 x86-64 wheels, so that prepare.sh's install line installs them there too and the test suite
# runs whole on the GPU machine. The image already has onnx, onnxscript, onnxruntime, matplotlib, hypothesis,
# attrs and pytest (../.library/device/KINDS.md).
set -eu
mkdir -p .whl
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --no-deps -d .whl \
  torchjd jsonschema jsonschema-specifications referencing rpds-py 2>&1 | grep -v "^WARNING: Location" || true
ls .whl
