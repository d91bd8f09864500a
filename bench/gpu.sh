#!/usr/bin/env bash
# The GPU checks and speed benchmarks in one call, for a lent CUDA device:
#   bash bench/gpu.sh [OUT_DIR]        (default bench/results/gpu; each JSON names the device)
# 1. the tests that need CUDA or tiny-cuda-nn (they skip on the CPU);
# 2. bench/field_throughput.py on CUDA (tiny-cuda-nn rows when it imports);
# 3. the main command on CUDA (bench/fit_run042.py -- --device cuda): EM's projector runs its
#    torch backend there (the numba kernels are the CPU path);
# 4. the hash grid through the grid solver from EM's fit on CUDA (recon fit, README "The grid
#    solver"; its metrics.json has the device, the fit's seconds and FSC-0.5 against the truth).
# Written on a machine without a GPU: run it where one is lent before quoting any figure.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench/results/gpu}"
mkdir -p "$out"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu.sh: torch sees no CUDA device')" \
  || exit 1
python -c "import torch; print('device:', torch.cuda.get_device_name(0))" | tee "$out/device.txt"
status=0
python -m pytest -q -m "requires_cuda or requires_tcnn" tests 2>&1 | tee "$out/pytest_cuda.txt" || status=1
python bench/field_throughput.py --out "$out/field_throughput.json" || status=1
python bench/fit_run042.py --out "$out/fit_run042.json" -- --device cuda || status=1
printf 'field = "hashgrid"\nsolver = "grid"\ngrid_start = "em"\nsubsets = 4\nlr = 1e-3\nlr_final = 1e-4\ndevice = "cuda"\n' \
  > "$out/grid_em.toml"
recon fit --views data/run042 --config "$out/grid_em.toml" --out "$out/grid_em" --overwrite --quiet || status=1
exit "$status"
