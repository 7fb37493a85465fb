#!/usr/bin/env bash
# The test suite, on a fresh machine or a reused one: set up .venv, then run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -p no:cacheprovider --timeout=600 "$@"
