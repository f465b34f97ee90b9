#!/bin/bash
# Runs once, when the postgres volume is first initialised (/docker-entrypoint-initdb.d): one
# role and one database for Dagster (runs, event logs, schedules, pool slots) and one for the
# MLflow backend store. Names and passwords come from docker-compose.yml's environment.
set -euo pipefail

create_db() {
    local db="$1" user="$2" password="$3"
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
        -v db="$db" -v user="$user" -v password="$password" <<-'SQL'
	CREATE ROLE :"user" LOGIN PASSWORD :'password';
	CREATE DATABASE :"db" OWNER :"user";
	REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
SQL
    echo "created database $db owned by $user"
}

create_db "$DAGSTER_POSTGRES_DB" "$DAGSTER_POSTGRES_USER" "$DAGSTER_POSTGRES_PASSWORD"
create_db "$MLFLOW_POSTGRES_DB" "$MLFLOW_POSTGRES_USER" "$MLFLOW_POSTGRES_PASSWORD"
