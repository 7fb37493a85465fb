#!/usr/bin/env bash
# The main job: prepare SmolLM2-135M-Instruct, evaluate it on held-out toolworld tasks, run a short
# format warm-up and a fixed number of PACT steps (about 20 minutes on 2 idle CPU cores), evaluate
# again, save runs/demo/final and write runs/demo/report.md with training curves.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/pact demo --out runs/demo "$@"
