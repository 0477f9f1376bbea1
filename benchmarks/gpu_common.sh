# Sourced by the gpu_*.sh scripts: output folder, caches, a step header, and what machine this is.
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HYDRANET_CACHE=/tmp/hncache
step() { echo; echo "=== $1 ($(date +%T))"; }

step "environment"
python3 -c "import torch, torchvision, sys; print(sys.version.split()[0], torch.__version__, torchvision.__version__, torch.cuda.get_device_name(0))"
echo "$(nproc) cores"
