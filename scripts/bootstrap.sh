#!/usr/bin/env bash
# Create .venv and install the project (+ dev extras) into it. Idempotent and fast when nothing
# changed: the install is skipped while pyproject.toml's hash matches the last install.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3.12 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 13) else 1)'; then
      PY="$cand"; break
    fi
  done
fi
[ -n "$PY" ] || { echo "error: Python 3.11 or 3.12 is required" >&2; exit 1; }
command -v java >/dev/null 2>&1 || echo "warning: java not found; Spark (models) needs Java 17" >&2

if [ ! -x .venv/bin/python ]; then
  echo "creating .venv with $PY"
  "$PY" -m venv .venv
fi
stamp=.venv/.crypto_assets-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "installing crypto_assets and its dependencies into .venv (about a minute the first time)"
.venv/bin/python -m pip install -q --upgrade pip
if .venv/bin/python -m pip install -q uv 2>/dev/null; then
  .venv/bin/python -m uv pip install --python .venv/bin/python -q -e '.[dev]'
else
  .venv/bin/python -m pip install -q -e '.[dev]'
fi
echo "$want" > "$stamp"
