#!/usr/bin/env bash
# The scale rehearsal on a GPU machine, as one short script (issue #16): vit_b at 1024 px on a
# few images, every method and prompt mode, on CUDA, native numerics (portable pins CPU kernels
# only; CUDA kernels are the GPU's). Needs the suite's environment there (`python3 -m nox -s
# rehearse` builds it where the package registries can be reached; otherwise point SPT_PYTHON at
# a Python that has the pinned packages). Writes everything under ${OUT:-work}/rehearsal_cuda.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-work}/rehearsal_cuda"
mkdir -p data "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.csv" || true
export SPT_NUMERICS=native
if [ -n "${SPT_PYTHON:-}" ]; then
    "$SPT_PYTHON" -m spt.cli rehearse --device cuda --out "$out" "$@"
else
    python3 -m pip install --quiet "nox==2026.10.20" && python3 -m nox -s rehearse -- --device cuda --out "$out" "$@"
fi
