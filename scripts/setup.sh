#!/usr/bin/env bash
# Create or reuse .venv and install pact-cotrain with what it needs. torch==2.13.0 (a CPU build) is
# installed first, so pip never resolves a multi-GB CUDA build; the range in pyproject.toml accepts it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
VPY=.venv/bin/python
"$VPY" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
"$VPY" -c "import torch" 2>/dev/null || "$VPY" -m pip install -q --disable-pip-version-check torch==2.13.0
"$VPY" -m pip install -q --disable-pip-version-check -e ".[test]"
# BFCL multi-turn (data, executable backends, checker) from the pinned wheel. --no-deps: a normal install
# pulls numpy==1.26.4, faiss, sentence-transformers and many API SDKs; the multi-turn checker needs only mpmath.
"$VPY" -m pip install -q --disable-pip-version-check --no-deps bfcl-eval==2026.3.23 mpmath
# bubblewrap isolates dataset-supplied tool code (FTRL, ToolHop); the sandbox falls back to rlimits
# alone, loudly, where it cannot be installed.
if ! command -v bwrap >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get install -y -q bubblewrap >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q bubblewrap >/dev/null 2>&1)) \
      || echo "warning: could not install bubblewrap; the tool sandbox will use rlimits only" >&2
  else
    echo "warning: bubblewrap (bwrap) is not installed; the tool sandbox will use rlimits only" >&2
  fi
fi
