#!/usr/bin/env bash
# Idempotent set-up of a fresh Debian 12 machine: system packages, a virtualenv (.venv), this package.
# Everything comes from the package registries (apt, PyPI); nothing else is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for bin in git prometheus prometheus-pushgateway promtool docker-compose debootstrap dockerd pg_ctlcluster redis-server nginx wrk chromium; do
  command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing system packages (missing: ${missing[*]})"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      git prometheus prometheus-pushgateway docker.io docker-compose debootstrap postgresql redis-server nginx-light wrk \
      chromium >/dev/null  # chromium: headless screenshots of the releases view (tests/deployment)
    # Debian starts these services on install; tests start their own on free loopback ports. Only right
    # after the install, and only in this PID namespace (--ns): a later run must not kill the servers of
    # tests running meanwhile, nor the redis-server / prometheus / nginx inside containers (the compose stack).
    for svc in prometheus prometheus-pushgateway prometheus-node-exporter redis-server nginx; do
      (command -v systemctl >/dev/null && systemctl stop "$svc" 2>/dev/null) \
        || pkill --ns $$ --nslist pid -x "$svc" 2>/dev/null || true
    done
  else
    echo "setup: missing ${missing[*]}; install them (Debian: prometheus prometheus-pushgateway docker.io docker-compose debootstrap)" >&2
  fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# The pins CI tested for this Python (constraints/, as Airflow's own constraints files pin its releases).
pins="constraints/airflow-3.3.2-python$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])').txt"
[ -f "$pins" ] && constraint=(-c "$pins") || constraint=()
stamp=".venv/.installed-$(cat pyproject.toml "${constraint[@]:1}" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing the package and its dependencies into .venv (a minute or two the first time)"
  # uv (from PyPI) resolves and installs the same requirements and pins as pip, several times faster
  # (pip took 12 min on a busy 2-core machine where uv took 1.5 min); pip stays in .venv for users.
  .venv/bin/pip install -q --upgrade pip uv
  .venv/bin/uv pip install -q --python .venv/bin/python -e ".[dev]" "${constraint[@]}"
  touch "$stamp"
fi
echo "setup: ready (.venv/bin/python, .venv/bin/airflow)"
