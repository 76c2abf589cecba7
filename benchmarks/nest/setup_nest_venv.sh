#!/usr/bin/env bash
# Create .venv-nest (Python 3.11) in the repository root with the NEST 3.10.0
# wheel (cp311 manylinux, about 33.5 MB) and numpy.  NEST's wheels are built for
# CPython 3.11, so the venv must use python3.11.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON311:-}"
if [ -z "$PY" ]; then
  if command -v python3.11 >/dev/null 2>&1; then PY="$(command -v python3.11)";
  else
    for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.11*/bin/python3.11; do
      if [ -x "$candidate" ]; then PY="$candidate"; break; fi
    done
  fi
  if [ -z "$PY" ]; then echo "python3.11 not found; set PYTHON311=/path/to/python3.11" >&2; exit 1; fi
fi
cd "$ROOT"
[ -x .venv-nest/bin/python ] || "$PY" -m venv .venv-nest
.venv-nest/bin/pip install --quiet --upgrade pip
.venv-nest/bin/pip install --quiet "nest-simulator==3.10.0" numpy
.venv-nest/bin/python - <<'PY'
import nest, numpy
print("NEST", nest.GetKernelStatus("build_info")["version"], "numpy", numpy.__version__)
PY
