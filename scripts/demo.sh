#!/usr/bin/env bash
# Set up and run the whole pipeline end to end on the embedded defaults (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
export SPARK_LOCAL_IP="${SPARK_LOCAL_IP:-127.0.0.1}"
exec .venv/bin/crypto-assets demo "$@"
