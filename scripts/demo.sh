#!/usr/bin/env bash
# The main job: set up (idempotent), then run the embedded lifecycle demo (no Docker needed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/python scripts/demo.py "$@"
