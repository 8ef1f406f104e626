#!/usr/bin/env bash
# The whole test suite (slow end-to-end tests included): sets up ./.venv on first use, then runs pytest.
# Extra arguments go to pytest, e.g. `bash test.sh -m "not slow"` or `bash test.sh tests/models`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$root/scripts/bootstrap.sh"
cd "$root"
exec "$root/.venv/bin/python" -m pytest "$@"
