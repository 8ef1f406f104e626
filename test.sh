#!/usr/bin/env bash
# The whole test suite (slow end-to-end tests included): sets up ./.venv on first use, then runs pytest.
# Extra arguments go to pytest, e.g. `bash test.sh -m "not slow"` or `bash test.sh tests/models`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$root/scripts/bootstrap.sh"
# The web demo's browser tests drive Debian's Chromium; install it where we can (root + apt), otherwise
# those tests skip and say why.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[test.sh] installing chromium and chromium-driver for the browser tests" >&2
    { apt-get update -q && apt-get install -y -q chromium chromium-driver; } >/dev/null 2>&1 || true
  fi
fi
cd "$root"
exec "$root/.venv/bin/python" -m pytest "$@"
