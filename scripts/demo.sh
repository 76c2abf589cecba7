#!/usr/bin/env bash
# The main job: set up (first run only), then run the end-to-end demo.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/env.sh"
cd "$ROOT"
exec eprop-lava demo "$@"
