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
# Debian's postgresql package when its server binaries are missing (as test.sh does for docker-compose).
ensure_postgres() {
  [ -x "$PG_BIN/initdb" ] && return 0
  echo "PostgreSQL not found under $PG_BIN: installing Debian's postgresql package" >&2
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "error: postgresql is missing and cannot be installed (not root, no sudo)" >&2; return 1; }
    sudo=(sudo)
  fi
  command -v apt-get >/dev/null 2>&1 || { echo "error: postgresql is missing and this system has no apt-get" >&2; return 1; }
  export DEBIAN_FRONTEND=noninteractive
  if ! ${sudo[@]+"${sudo[@]}"} apt-get install -y -qq --no-install-recommends postgresql >/dev/null 2>&1; then
    ${sudo[@]+"${sudo[@]}"} apt-get update -qq && ${sudo[@]+"${sudo[@]}"} apt-get install -y -qq --no-install-recommends postgresql
  fi
  PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
  [ -x "$PG_BIN/initdb" ] || { echo "error: installing postgresql failed (see apt-get's output above)" >&2; return 1; }
}
ensure_postgres
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
