#!/usr/bin/env bash
# Downloads, into .whl/ (git-ignored), the wheels of the peers that the lent GPU
# machines lack (they have no network): MONAI, segmentation_models_pytorch and
# exacta, the oracles of the compat tests and providers of the benchmark. Their
# other needs (numpy, timm, torchvision, huggingface_hub, safetensors, triton)
# are on those machines already. Pass `.whl` in the device call's carry;
# scripts/gpu_check.sh installs whatever it finds there.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
  monai==1.6.1 segmentation-models-pytorch==0.6.0 exacta==0.0.1a5
ls -l .whl
