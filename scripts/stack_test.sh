#!/usr/bin/env bash
# The docker-compose stack without Docker: PostgreSQL (Debian package) as Dagster's storage and
# MLflow's backend, an MLflow tracking server with proxied artifacts, a Spark standalone master +
# worker, the embedded broker in place of Kafka, and Dagster's code server, webserver and daemon
# (default run launcher), all as local processes on 127.0.0.1. Runs the incremental job and one
# training run through them, checks what each service holds and stops everything
# (crypto_assets/ops/stack). `make stack-test`; .ci/run runs it after the suite.
# Arguments go to the driver (--keep keeps the temp dir with every service's log).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh

PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
# Debian's postgresql package when its server binaries are missing; Chromium + its driver for
# the look at the Dagster UI (crypto_assets/ops/ui_check.py).
if [ ! -x "$PG_BIN/initdb" ]; then
  # pg_ctlcluster (postgresql-common, on PATH) comes with the server package
  ./scripts/ensure_debian.sh pg_ctlcluster postgresql
  PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
  [ -x "$PG_BIN/initdb" ] || { echo "error: no PostgreSQL server under /usr/lib/postgresql: apt-get install postgresql (or set PG_BIN)" >&2; exit 1; }
fi
./scripts/ensure_debian.sh chromedriver chromium chromium-driver
export PG_BIN

root="$(mktemp -d "${TMPDIR:-/tmp}/crypto-stack-XXXXXX")"
driver=""
# If the driver dies without stopping its services (it empties its pid file once it has), stop
# the process groups it recorded, and only those; then remove the directory unless --keep was asked for.
cleanup() {
  [ -n "$driver" ] && kill "$driver" 2>/dev/null && wait "$driver" 2>/dev/null || true
  if [ -f "$root/pids" ]; then
    while read -r pid _name; do
      kill -KILL -- "-$pid" 2>/dev/null || true
    done < "$root/pids"
  fi
  case " $* " in *" --keep "*) echo "kept $root" ;; *) rm -rf "$root" ;; esac
}
trap 'cleanup "$@"' EXIT
start=$(date +%s)
.venv/bin/python -m crypto_assets.ops.stack --root "$root" --keep "$@" &
driver=$!
code=0
wait "$driver" || code=$?
driver=""
echo "stack test: exit $code after $(( $(date +%s) - start ))s"
exit "$code"
