#!/usr/bin/env bash
# /entrypoint of the Airflow stand-in base image (a test fixture). Written for this project; it does
# what docker-compose.yaml relies on from the official image's entrypoint, in the same order:
#   1. refuse a gid other than 0 (uid 50000 only warns); umask 0002 (group-writable files on volumes);
#   2. an arbitrary uid without a passwd entry gets one (home AIRFLOW_USER_HOME_DIR);
#   3. wait for the metadata database (`airflow db check`, CONNECTION_CHECK_MAX_COUNT tries, 0 = skip,
#      CONNECTION_CHECK_SLEEP_TIME seconds apart);
#   4. _AIRFLOW_DB_MIGRATE (or the old _AIRFLOW_DB_UPGRADE): `airflow db migrate`;
#   5. _AIRFLOW_WWW_USER_CREATE: `airflow users create` from _AIRFLOW_WWW_USER_{USERNAME,PASSWORD,
#      PASSWORD_CMD,FIRSTNAME,LASTNAME,EMAIL,ROLE} (an existing user is not an error);
#   6. _PIP_ADDITIONAL_REQUIREMENTS: pip install them next to the image's Airflow, then `pip check`;
#   7. `bash ...` and `python ...` run as given; otherwise the command is an airflow subcommand, with or
#      without a leading `airflow`; scheduler and celery wait for the Celery broker first.
# Differences (README.md beside this file): a failed migration stops here (the official image goes on),
# and the container does not restart itself after 10 minutes when extra requirements were installed.
set -euo pipefail

command="${1:-}"
unset PIP_USER

if [[ "$(id -g)" != "0" ]]; then
    if [[ "$(id -u)" == "50000" ]]; then
        echo "WARNING: run the image with group 0 (you use uid $(id -u), gid $(id -g))" >&2
    else
        echo "ERROR: run the image with group 0 (user: \"\${AIRFLOW_UID}:0\"); you use uid $(id -u), gid $(id -g)" >&2
        exit 1
    fi
fi
umask 0002

: "${CONNECTION_CHECK_MAX_COUNT:=20}"
: "${CONNECTION_CHECK_SLEEP_TIME:=3}"

if ! whoami >/dev/null 2>&1; then
    if [[ -w /etc/passwd ]]; then
        echo "${USER_NAME:-default}:x:$(id -u):0:${USER_NAME:-default} user:${AIRFLOW_USER_HOME_DIR}:/sbin/nologin" \
            >>/etc/passwd
    fi
    export HOME="${AIRFLOW_USER_HOME_DIR}"
fi

# retry DESCRIPTION CMD...: run CMD until it succeeds, at most CONNECTION_CHECK_MAX_COUNT times.
retry() {
    local what="$1" left="${CONNECTION_CHECK_MAX_COUNT}" out
    shift
    until out="$("$@" 2>&1)"; do
        left=$((left - 1))
        if ((left <= 0)); then
            echo "ERROR: ${what} failed ${CONNECTION_CHECK_MAX_COUNT} times; last output:" >&2
            echo "${out}" >&2
            exit 1
        fi
        sleep "${CONNECTION_CHECK_SLEEP_TIME}"
    done
}

tcp_open() {
    python - "$1" <<'PY'
import socket, sys
from urllib.parse import urlsplit

url = urlsplit(sys.argv[1])
ports = {"redis": 6379, "rediss": 6379, "amqp": 5672, "pyamqp": 5672, "postgresql": 5432, "mysql": 3306}
port = url.port or ports.get(url.scheme.split("+")[0], 0)
socket.create_connection((url.hostname or "localhost", port), timeout=3).close()
PY
}

if ((CONNECTION_CHECK_MAX_COUNT > 0)); then
    retry "waiting for the metadata database (airflow db check)" airflow db check
fi

if [[ -n "${_AIRFLOW_DB_MIGRATE:-}" || -n "${_AIRFLOW_DB_UPGRADE:-}" ]]; then
    airflow db migrate
fi

if [[ -n "${_AIRFLOW_WWW_USER_CREATE:-}" ]]; then
    password=""
    if [[ -n "${_AIRFLOW_WWW_USER_PASSWORD_CMD:-}" ]]; then
        password="$(eval "${_AIRFLOW_WWW_USER_PASSWORD_CMD}")"
    elif [[ -n "${_AIRFLOW_WWW_USER_PASSWORD:-}" ]]; then
        password="${_AIRFLOW_WWW_USER_PASSWORD}"
    fi
    unset _AIRFLOW_WWW_USER_PASSWORD _AIRFLOW_WWW_USER_PASSWORD_CMD
    if [[ -z "${password}" ]]; then
        echo "ERROR: set _AIRFLOW_WWW_USER_PASSWORD (or _AIRFLOW_WWW_USER_PASSWORD_CMD) to create the user" >&2
        exit 1
    fi
    airflow users create \
        --username "${_AIRFLOW_WWW_USER_USERNAME:-admin}" \
        --firstname "${_AIRFLOW_WWW_USER_FIRSTNAME:-Airflow}" \
        --lastname "${_AIRFLOW_WWW_USER_LASTNAME:-Admin}" \
        --email "${_AIRFLOW_WWW_USER_EMAIL:-airflowadmin@example.com}" \
        --role "${_AIRFLOW_WWW_USER_ROLE:-Admin}" \
        --password "${password}" || true
fi

if [[ -n "${_PIP_ADDITIONAL_REQUIREMENTS:-}" ]]; then
    echo "WARNING: installing _PIP_ADDITIONAL_REQUIREMENTS on every start; build an image instead" >&2
    # shellcheck disable=SC2086 # a space-separated list, as in the official image
    pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" ${_PIP_ADDITIONAL_REQUIREMENTS}
    pip check
fi

case "${command}" in
    bash) shift; exec /bin/bash "$@" ;;
    python) shift; exec python "$@" ;;
    airflow) command="${2:-}"; shift ;;
esac

if [[ "${command}" =~ ^(scheduler|celery)$ ]] && ((CONNECTION_CHECK_MAX_COUNT > 0)); then
    if [[ "$(airflow config get-value core executor)" == "CeleryExecutor" ]]; then
        broker="$(airflow config get-value celery broker_url)"
        retry "waiting for the Celery broker" tcp_open "${broker}"
    fi
fi

exec airflow "$@"
