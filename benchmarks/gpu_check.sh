#!/usr/bin/env bash
# The one prepared command for a lent GPU machine (no internet; its python3 has torch and transformers,
# not trl or datasets):
#     bash benchmarks/gpu_check.sh [gpu_step.py flags]       e.g. run(command="bash benchmarks/gpu_check.sh", timeout_s=560)
# Prints the GPU and package versions, makes trl/datasets importable from carried wheels when missing
# (put them in wheels/ or .whl/ and name that folder in the run's carry), puts this package on the path,
# and runs benchmarks/gpu_step.py under `timeout 480`. Its output and JSON land in $OUT.
set -u
cd "$(dirname "$0")/.." || exit 1
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"

echo "== nvidia-smi"
nvidia-smi || echo "(nvidia-smi failed)"

versions() {
  $PY - <<'EOF'
import importlib, platform, sys
print("python", platform.python_version(), sys.executable)
for name in ("torch", "transformers", "trl", "datasets", "accelerate", "tokenizers", "huggingface_hub", "pyarrow", "yaml"):
    try:
        mod = importlib.import_module(name)
        print(f"  {name:16s} {getattr(mod, '__version__', '?')}  {getattr(mod, '__file__', '')}")
    except Exception as err:  # noqa: BLE001
        print(f"  {name:16s} MISSING ({type(err).__name__}: {err})")
import torch
print("cuda available:", torch.cuda.is_available(), torch.version.cuda,
      torch.cuda.get_device_name() if torch.cuda.is_available() else "")
EOF
}
echo "== versions"
versions

if ! $PY -c "import trl, datasets" 2>/dev/null; then
  WHEELS=""
  for d in wheels .whl; do
    if ls "$d"/*.whl >/dev/null 2>&1; then WHEELS=$d; break; fi
  done
  if [ -n "$WHEELS" ]; then
    echo "== trl/datasets missing: installing the carried wheels from $WHEELS/ (no index, no deps) into /tmp/site"
    ls "$WHEELS"
    # --no-deps --target: nothing can be fetched, so install exactly what was carried and put it first on
    # the path (a carried transformers then shadows the machine's own).
    if $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl; then
      export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    else
      echo "!! pip could not install the wheels in $WHEELS/"
    fi
    versions
  else
    echo "!! trl and/or datasets are missing on this machine and no wheels/ (or .whl/) folder was carried."
    echo "!! Download them here (python 3.12, manylinux x86_64; see /work/.library/device/README.md), e.g."
    echo "!!   trl==1.16.* datasets dill multiprocess (and transformers==5.23.* if the machine's is older than 5.20),"
    echo "!! then rerun with carry=[\"wheels\"]."
  fi
fi

echo "== this package"
# Editable install without fetching a build backend; the PYTHONPATH below makes it importable either way.
$PY -m pip install -q --no-deps --no-build-isolation --no-index -e . >"$OUT/pip_install.log" 2>&1 \
  || echo "(pip install -e . failed, see pip_install.log; using PYTHONPATH=$PWD instead)"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if ! $PY -c "import pact_cotrain.recipes.train, pact_cotrain.training.trainer"; then
  echo "!! pact_cotrain does not import here: see the error above"
  exit 2
fi

echo "== benchmarks/gpu_step.py $*"
set -o pipefail
timeout 480 $PY benchmarks/gpu_step.py "$@" 2>&1 | tee "$OUT/gpu_step.log"
rc=$?
echo "== gpu_step.py exit code $rc (124: stopped by the 480 s timeout; partial JSON in \$OUT/gpu_step.json)"
exit $rc
