#!/usr/bin/env bash
# Create or reuse ./.venv with Python 3.10 and install eprop-lava with every
# extra (Lava, lava-dl, librosa, torch, pytest). Sourced by the README's two
# commands; safe to run again (it reinstalls only when pyproject.toml changed).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${EPROP_LAVA_VENV:-$ROOT/.venv}"

find_python310() {
  local candidate
  for candidate in "${PYTHON310:-}" python3.10; do
    if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 \
       && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1; then
      command -v "$candidate"; return 0
    fi
  done
  # pyenv installs that are not on the active version list
  for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.10*/bin/python3.10 /usr/bin/python3.10 /usr/local/bin/python3.10; do
    if [ -x "$candidate" ]; then echo "$candidate"; return 0; fi
  done
  if command -v uv >/dev/null 2>&1 && uv python find 3.10 >/dev/null 2>&1; then
    uv python find 3.10; return 0
  fi
  return 1
}

if [ ! -x "$VENV/bin/python" ]; then
  PY="$(find_python310)" || {
    echo "eprop-lava: Python 3.10 is required (lava-nc 0.10 and lava-dl 0.6 support only 3.10)." >&2
    echo "Install it (e.g. 'pyenv install 3.10' or your distribution's python3.10) or set PYTHON310=/path/to/python3.10." >&2
    exit 1
  }
  echo "eprop-lava: creating $VENV with $PY" >&2
  "$PY" -m venv "$VENV"
fi

STAMP="$VENV/.eprop-lava-installed"
WANT="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "eprop-lava: installing the project and its dependencies into $VENV (first run takes a few minutes)" >&2
  LOG="$VENV/install.log"
  if ! { "$VENV/bin/python" -m pip install --upgrade pip && "$VENV/bin/python" -m pip install -e "$ROOT[full]"; } >"$LOG" 2>&1; then
    tail -n 30 "$LOG" >&2
    echo "eprop-lava: installation failed; the full log is $LOG" >&2
    exit 1
  fi
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
