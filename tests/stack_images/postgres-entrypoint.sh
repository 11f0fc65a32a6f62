#!/usr/bin/env bash
# Entrypoint of the postgres stand-in (a test fixture, written for this project). Like the public image:
# as root it owns PGDATA for the postgres user and re-runs itself as that user; on an empty PGDATA it
# runs initdb with POSTGRES_USER as the superuser and POSTGRES_PASSWORD, creates POSTGRES_DB, then runs
# /docker-entrypoint-initdb.d/* (executable *.sh run, others sourced, *.sql through psql) against a
# server that listens on the Unix socket only; then it starts the server on every address, password
# (scram-sha-256) auth from the network, trust on the local socket.
set -euo pipefail

: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=${POSTGRES_USER}}"
export POSTGRES_USER POSTGRES_DB

if [[ "${1:-postgres}" != "postgres" ]]; then
    exec "$@"
fi
shift || true

if [[ "$(id -u)" == "0" ]]; then
    mkdir -p "${PGDATA}" /var/run/postgresql
    chown -R postgres:postgres "${PGDATA}" /var/run/postgresql
    chmod 0700 "${PGDATA}"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" postgres "$@"
fi

if [[ ! -s "${PGDATA}/PG_VERSION" ]]; then
    if [[ -z "${POSTGRES_PASSWORD:-}" && "${POSTGRES_HOST_AUTH_METHOD:-}" != "trust" ]]; then
        echo "Error: set POSTGRES_PASSWORD (or POSTGRES_HOST_AUTH_METHOD=trust)" >&2
        exit 1
    fi
    pwfile="$(mktemp)"
    printf '%s\n' "${POSTGRES_PASSWORD:-}" >"${pwfile}"
    initdb --username="${POSTGRES_USER}" --pwfile="${pwfile}" --encoding=UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" >/dev/null
    rm -f "${pwfile}"
    echo "host all all all ${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" >>"${PGDATA}/pg_hba.conf"
    pg_ctl -D "${PGDATA}" -w -o "-c listen_addresses='' -c unix_socket_directories=/var/run/postgresql" start >/dev/null
    psql=(psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER}" --no-password --no-psqlrc)
    if [[ "${POSTGRES_DB}" != "postgres" ]]; then
        "${psql[@]}" --dbname postgres -v db="${POSTGRES_DB}" <<<'CREATE DATABASE :"db";' >/dev/null
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        case "${f}" in
            *.sh)
                if [[ -x "${f}" ]]; then echo "running ${f}"; "${f}"; else echo "sourcing ${f}"; . "${f}"; fi ;;
            *.sql) echo "running ${f}"; "${psql[@]}" --dbname "${POSTGRES_DB}" -f "${f}" ;;
            *) if [[ -e "${f}" ]]; then echo "ignoring ${f}"; fi ;;
        esac
    done
    pg_ctl -D "${PGDATA}" -m fast -w stop >/dev/null
    echo "PostgreSQL init process complete; ready for start up."
fi

exec postgres -D "${PGDATA}" -c listen_addresses='*' -c unix_socket_directories=/var/run/postgresql "$@"
