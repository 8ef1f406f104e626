#!/usr/bin/env bash
# The embedded default, end to end: sets up ./.venv on first use, then runs `locllm demo`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$root/scripts/bootstrap.sh"
exec "$root/.venv/bin/locllm" demo "$@"
