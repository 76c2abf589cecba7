#!/usr/bin/env bash
# The whole test suite: set up (first run only), then pytest.
# pytest's exit code 5 (no tests collected) is a failure here.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/env.sh" || exit 1
cd "$ROOT"
python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "eprop-lava: pytest collected no tests; treating that as a failure" >&2
  exit 1
fi
exit "$rc"
