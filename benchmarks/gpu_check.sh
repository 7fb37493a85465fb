#!/usr/bin/env bash
# The one prepared command for a lent GPU machine (no internet; its python3 has torch and an older
# transformers, not trl or datasets):
#     bash scripts/gpu_wheels.sh                      # here, once: fills wheels/ (git-ignored, ~17 MiB)
#     run(command="bash benchmarks/gpu_check.sh", carry=["wheels"], timeout_s=560)
# 1. Prints the GPU and the package versions. When a package this check needs is missing or too old
#    (trl 1.16, transformers >= 5.20, accelerate, datasets, peft), installs the carried wheels/ into the
#    python it runs with, offline: pip install --no-index --find-links wheels (nothing is fetched).
# 2. benchmarks/gpu_step.py: one process, PACT vs GRPO step cost on a Qwen3-0.6B-sized random model.
# 3. benchmarks/gpu_multiproc.py: 2 processes on this machine (on one GPU both use it, over gloo), a few
#    PACT steps under DDP, then FSDP2; the replicas' parameter hashes must agree.
# 4. One PACT step with a colocated vLLM engine, where vllm imports.
# Every figure is printed as `name: value`. Output and JSON land in $OUT.
#
# GPU_CHECK_CPU=1 runs the same code path on CPU with a tiny model (the check of this script itself):
#     GPU_CHECK_CPU=1 PYTHON=/tmp/venv/bin/python bash benchmarks/gpu_check.sh
set -u
cd "$(dirname "$0")/.." || exit 1
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu_check_out}
CPU=${GPU_CHECK_CPU:-0}
mkdir -p "$OUT"
status=0

echo "== machine"
if [ "$CPU" = 1 ]; then echo "GPU_CHECK_CPU=1: the check's code path on CPU, tiny model"; export CUDA_VISIBLE_DEVICES=""; \
  else nvidia-smi || echo "(nvidia-smi failed)"; fi

versions() {
  $PY - <<'PYEOF'
import importlib, platform, sys
print("python", platform.python_version(), sys.executable)
for name in ("torch", "transformers", "trl", "datasets", "accelerate", "peft", "tokenizers", "huggingface_hub", "pyarrow", "vllm"):
    try:
        mod = importlib.import_module(name)
        print(f"  {name:16s} {getattr(mod, '__version__', '?')}")
    except Exception as err:  # noqa: BLE001
        print(f"  {name:16s} MISSING ({type(err).__name__}: {str(err)[:80]})")
import torch
print("cuda available:", torch.cuda.is_available(), torch.version.cuda,
      torch.cuda.get_device_name() if torch.cuda.is_available() else "")
PYEOF
}

# The requirements that are missing or too old, as the pins in wheels/ to install (nothing when all hold).
missing_requirements() {
  $PY - <<'PYEOF'
from importlib.metadata import PackageNotFoundError, version
from packaging.version import Version
need = {  # name: (lowest accepted, below this, the pin scripts/gpu_wheels.sh downloads)
    "trl": ("1.16", "1.17", "1.16.0"), "transformers": ("5.20", "5.24", "5.23.0"),
    "accelerate": ("1.10", None, "1.16.0"), "datasets": ("4.7", None, "5.2.0"), "peft": ("0.17", None, "0.22.0"),
}
for name, (low, high, pin) in need.items():
    try:
        have = Version(version(name))
    except PackageNotFoundError:
        print(f"{name}=={pin}"); continue
    if have < Version(low) or (high and have >= Version(high)):
        print(f"{name}=={pin}")
PYEOF
}

echo "== versions"
versions
todo=$(missing_requirements | tr '\n' ' ')
if [ -n "${todo// /}" ]; then
  echo "== missing or too old: $todo"
  if ls wheels/*.whl >/dev/null 2>&1; then
    echo "installing from the carried wheels/ (offline: --no-index --find-links wheels)"
    # shellcheck disable=SC2086
    if ! $PY -m pip install -q --no-index --find-links wheels --no-cache-dir $todo 2>&1 | tail -20; then :; fi
    still=$(missing_requirements | tr '\n' ' ')
    if [ -n "${still// /}" ]; then
      echo "!! still missing or too old after installing wheels/: $still"
      echo "!! run scripts/gpu_wheels.sh here (see its header for what it leaves out) and carry wheels/"
      exit 2
    fi
    versions
  else
    echo "!! no wheels/ folder was carried: run 'bash scripts/gpu_wheels.sh' where PyPI is reachable, then"
    echo "!! rerun with carry=[\"wheels\"]"
    exit 2
  fi
fi

echo "== this package"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if ! $PY -c "import pact_cotrain.recipes.train, pact_cotrain.training.trainer"; then
  echo "!! pact_cotrain does not import here: see the error above"
  exit 2
fi

set -o pipefail
if [ "$CPU" = 1 ]; then
  STEP_ARGS=(--tiny --prompts 2 --k 2 --steps 2 --max-new-tokens 16 --max-turns 2 --repeats 1 --micro-batches 1 2)
  MP_STEPS=2
else
  STEP_ARGS=("$@")
  MP_STEPS=3
fi
echo "== 1 process: benchmarks/gpu_step.py ${STEP_ARGS[*]}"
timeout 300 $PY benchmarks/gpu_step.py "${STEP_ARGS[@]}" 2>&1 | tee "$OUT/gpu_step.log"
rc=$?
echo "gpu_step_exit_code: $rc (124: stopped by its 300 s timeout; partial JSON in \$OUT/gpu_step.json)"
[ $rc = 0 ] || status=1

for mode in ddp fsdp2; do
  echo "== 2 processes: $mode, $MP_STEPS PACT steps"
  if [ "$CPU" = 1 ] && [ "$mode" = fsdp2 ]; then
    echo "multiproc_fsdp2: skipped on CPU (accelerate does not shard on CPU; tests/test_sharded_parameters.py runs FSDP2 on gloo)"
    continue
  fi
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} timeout 240 $PY -m torch.distributed.run --standalone --nproc_per_node 2 \
    benchmarks/gpu_multiproc.py "$mode" "$OUT/multiproc" "$MP_STEPS" >"$OUT/multiproc_$mode.log" 2>&1
  rc=$?
  grep -E "^(RANK|multiproc_)" "$OUT/multiproc_$mode.log"
  hashes=$(grep -oE "params=[0-9a-f]+" "$OUT/multiproc_$mode.log" | sort -u | wc -l)
  ranks=$(grep -c "^RANK" "$OUT/multiproc_$mode.log")
  echo "multiproc_${mode}_exit_code: $rc  ranks_reporting: $ranks/2  distinct_parameter_hashes: $hashes (1 = replicas agree)"
  if [ $rc != 0 ] || [ "$ranks" != 2 ] || [ "$hashes" != 1 ]; then
    status=1; echo "!! $mode failed: the end of $OUT/multiproc_$mode.log:"; tail -15 "$OUT/multiproc_$mode.log"
  fi
done

echo "== vLLM colocate: one PACT step"
if $PY -c "import vllm" 2>/dev/null; then
  timeout 300 $PY benchmarks/gpu_vllm_step.py "$OUT/vllm" 2>&1 | tee "$OUT/vllm_step.log" | grep -E "^(vllm_|!!)" 
  rc=$?
  echo "vllm_step_exit_code: $rc"
  [ $rc = 0 ] || status=1
else
  echo "vllm_step: skipped (vllm does not import here)"
fi
echo "gpu_check_status: $status (0: every stage ran)"
exit $status
