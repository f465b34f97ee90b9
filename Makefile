# Conveniences around the two README commands (scripts/ work without make too).
.PHONY: setup demo test test-fast stack-test ui broker bench bench-models clean

setup:
	./scripts/bootstrap.sh

demo:
	./scripts/demo.sh

test:
	./scripts/test.sh

test-fast:
	./scripts/test.sh -m "not slow"

# the docker-compose services as local processes (Postgres, MLflow server, Spark standalone,
# Dagster webserver/daemon/code server, embedded broker): one incremental + one training run
stack-test:
	./scripts/stack_test.sh

# Dagster UI on http://127.0.0.1:3000 with runs stored under var/dagster; builds the market
# report first when var/reports/latest is missing or older than the warehouse.
ui: setup
	mkdir -p var/dagster && cp dagster.yaml var/dagster/dagster.yaml
	CRYPTO_HOME=$(CURDIR)/var DAGSTER_HOME=$(CURDIR)/var/dagster .venv/bin/python -m crypto_assets.ops.report_once
	CRYPTO_HOME=$(CURDIR)/var DAGSTER_HOME=$(CURDIR)/var/dagster .venv/bin/dagster dev -w workspace.yaml

broker: setup
	.venv/bin/crypto-assets broker --background

bench: setup
	.venv/bin/python bench/ingest.py

# the four models on real daily MSFT closes (pmdarima's, offline) and on a simulated market
bench-models: setup
	.venv/bin/python bench/models.py

clean:
	rm -rf var
