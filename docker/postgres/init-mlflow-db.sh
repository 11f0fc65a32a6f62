#!/usr/bin/env bash
# Runs once, on the first start of the Postgres container (docker-entrypoint-initdb.d): MLflow gets its
# own role and database next to Airflow's. The password comes from MLFLOW_DB_PASSWORD.
set -euo pipefail

: "${MLFLOW_DB_PASSWORD:?set MLFLOW_DB_PASSWORD (docker-compose.yaml gives it a default)}"

# psql's :'var' quoting keeps the password a literal, whatever characters it has.
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
    -v mlflow_password="${MLFLOW_DB_PASSWORD}" <<'EOSQL'
SELECT 'CREATE ROLE mlflow LOGIN'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mlflow')\gexec
ALTER ROLE mlflow WITH LOGIN PASSWORD :'mlflow_password';
SELECT 'CREATE DATABASE mlflow OWNER mlflow'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'mlflow')\gexec
EOSQL
