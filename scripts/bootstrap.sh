#!/usr/bin/env bash
# Create .venv and install exactly what uv.lock pins (the project, editable, + the dev extra and
# the postgres extra, which scripts/stack_test.sh runs Dagster's Postgres storage with).
# Idempotent and fast when nothing changed: the install is skipped while the hash of
# pyproject.toml + uv.lock matches the last install. Needs Python 3.11 or 3.12 and the package
# index; uv itself comes from the index too, at the version the lock pins.
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
[ -f uv.lock ] || { echo "error: uv.lock is missing (run \`uv lock\` to create it)" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  echo "creating .venv with $PY"
  "$PY" -m venv .venv
fi
stamp=.venv/.crypto_assets-installed
want="$(cat pyproject.toml uv.lock | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

# the uv that the lock pins (it is in the dev extra, so the sync below keeps it)
uv_version="$(.venv/bin/python -c '
import tomllib
lock = tomllib.load(open("uv.lock", "rb"))
print(next(p["version"] for p in lock["package"] if p["name"] == "uv"))')"
if [ "$(.venv/bin/python -m uv --version 2>/dev/null | cut -d' ' -f2)" != "$uv_version" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check "uv==$uv_version" \
    || { echo "error: could not install uv $uv_version from the package index" >&2; exit 1; }
fi
echo "installing crypto_assets and its locked dependencies into .venv (about a minute the first time)"
# --frozen: install the lock as it is (a pyproject.toml edit needs `uv lock` first, which
# `uv lock --check` in .ci/run enforces); never download a Python, use the .venv one.
UV_PROJECT_ENVIRONMENT="$PWD/.venv" UV_PYTHON_DOWNLOADS=never \
  .venv/bin/python -m uv sync --frozen --extra dev --extra postgres --python .venv/bin/python --quiet
echo "$want" > "$stamp"
