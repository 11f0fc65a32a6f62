#!/usr/bin/env bash
# Lint and type checks of the project; exits non-zero on any finding (CI runs it).
#   scripts/lint.sh            # from the repository root, with the dev extra installed
#   PYTHON=.venv/bin/python scripts/lint.sh
set -u
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}"
status=0
run() {
    echo "+ $*"
    "$@" || status=1
}
run "$PYTHON" -m ruff check .
run "$PYTHON" -m ruff format --check .
run "$PYTHON" -m mypy airflow_mlops
exit "$status"
