#!/usr/bin/env bash
# Fill wheels/ (git-ignored) with what benchmarks/gpu_check.sh installs, offline, on a bare GPU machine
# whose python has torch but not this package's stack (the lent machines: python 3.12, torch, an older
# transformers, no trl or datasets). Run it here, where PyPI is reachable, then carry the folder:
#     bash scripts/gpu_wheels.sh                      # for the lent GPU machine (cp312, manylinux x86_64)
#     bash scripts/gpu_wheels.sh --python 3.11 --binary   # for GPU_CHECK_CPU=1 in a torch-only venv here
# Exact versions (the ones the tests pass with), --no-deps: pip installs them later with --no-index
# --find-links wheels, resolving every requirement against this folder and what the machine already has.
#
# Left out by default: torch (the machine's own), and the compiled packages the lent image already holds
# (pyarrow, pandas and its python-dateutil and tzdata, numpy, xxhash, psutil; KINDS.md lists them): pyarrow alone is ~55 MB, and the folder
# must travel in at most 64 MiB with the working tree. --binary adds them (for a venv that has only torch).
set -euo pipefail
cd "$(dirname "$0")/.."
PYV=3.12
BINARY=0
while [ $# -gt 0 ]; do
  case $1 in
    --python) PYV=$2; shift 2 ;;
    --binary) BINARY=1; shift ;;
    *) echo "usage: $0 [--python 3.12] [--binary]" >&2; exit 2 ;;
  esac
done
PURE=(
  trl==1.16.0 transformers==5.23.0 accelerate==1.16.0 datasets==5.2.0 peft==0.22.0
  dill==0.4.1 multiprocess==0.70.19 fsspec==2026.9.0 huggingface_hub==2.5.0
)
COMPILED=(pyarrow==26.0.1 pandas==3.1.1 python-dateutil==4.0.0 tzdata==2026.6 xxhash==4.1.0 psutil==7.2.2 tokenizers==0.23.3)
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  PLATFORMS+=(--platform "$p")
done
mkdir -p wheels
PIP=${PIP:-python3 -m pip}
$PIP download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp "${PLATFORMS[@]}" \
  -d wheels "${PURE[@]}"
if [ "$BINARY" = 1 ]; then
  $PIP download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp "${PLATFORMS[@]}" \
    -d wheels "${COMPILED[@]}"
fi
ls -l wheels
echo "wheels/: $(du -sb wheels | cut -f1) bytes ($(du -sm wheels | cut -f1) MiB); carry it: run(..., carry=[\"wheels\"])"
