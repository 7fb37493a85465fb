#!/usr/bin/env bash
# The main job: prepare SmolLM2-135M-Instruct, evaluate it on held-out toolworld tasks, train PACT
# (~20 minutes on 2 CPU cores), evaluate again, and write runs/demo/report.md with training curves.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/pact demo --out runs/demo "$@"
