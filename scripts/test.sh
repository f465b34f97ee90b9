#!/usr/bin/env bash
# Set up and run the whole test suite. Extra arguments go to pytest (e.g. -k pull, -m "not slow").
set -uo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh || exit 1

# Debian packages the suite uses, installed when missing: docker-compose (test_compose.py
# validates docker-compose.yml with `docker-compose config`, offline, no engine needed) and
# Chromium with its driver (test_ui_check.py looks at pages in a headless browser).
./scripts/ensure_debian.sh docker-compose docker-compose || exit 1
./scripts/ensure_debian.sh chromedriver chromium chromium-driver || exit 1

export SPARK_LOCAL_IP="${SPARK_LOCAL_IP:-127.0.0.1}"
# The suite checks the documented defaults: environment overrides of them are not for tests.
unset KAFKA_BOOTSTRAP_SERVERS DAGSTER_HOME CRYPTO_ASSETS_FAULT CRYPTO_AUTOMATION SENSOR_INTERVAL_SECONDS \
  BACKLOG_MIN_MESSAGES BACKLOG_MAX_WAIT_SECONDS INCREMENTAL_DRAIN_SECONDS RETRAIN_CRON PREDICTIONS_CRON REPORT_CRON REPORT_KEEP \
  MAINTENANCE_CRON RUN_RETENTION_HOURS
# Two pytest-xdist workers: the suite spends two thirds of its time waiting on subprocesses,
# brokers and Spark, so two workers on two cores take ~9 instead of ~13 minutes. TEST_WORKERS=0
# runs it in one process (e.g. to debug with -s or --pdb).
workers="${TEST_WORKERS:-2}"
if [ "$workers" = "0" ]; then
  .venv/bin/python -m pytest "$@"
else
  .venv/bin/python -m pytest -n "$workers" "$@"
fi
code=$?
if [ "$code" -eq 5 ]; then
  # The full suite always collects tests: an empty selection is a typo in -k/-m or a path.
  echo "error: pytest collected no tests for this selection (${*:-the whole suite}): check -k/-m and paths" >&2
  exit 5
fi
exit "$code"
