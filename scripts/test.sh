#!/usr/bin/env bash
# Set up (idempotent), start the Docker engine when one can run, and run the test suite: given test paths,
# one pytest session on them; given none, the whole suite as parallel sessions (scripts/run_suite.py) that
# end with one pytest summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -f scripts/start_dockerd.sh ]; then
  bash scripts/start_dockerd.sh || echo "test: no Docker engine could start; Docker tests will say so and skip"
fi
export PYTHONDONTWRITEBYTECODE=1
for arg in "$@"; do
  case "$arg" in
    -*) ;;
    *) exec .venv/bin/python -m pytest "$@" ;;
  esac
done
exec .venv/bin/python scripts/run_suite.py "$@"
