#!/usr/bin/env bash
# Set up (idempotent), start the Docker engine when one can run, and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -f scripts/start_dockerd.sh ]; then
  bash scripts/start_dockerd.sh || echo "test: no Docker engine could start; Docker tests will say so and skip"
fi
export PYTHONDONTWRITEBYTECODE=1
exec .venv/bin/python -m pytest "$@"
