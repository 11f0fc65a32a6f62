#!/usr/bin/env bash
# The main job: set up (idempotent), then run the embedded lifecycle demo (no Docker needed).
# The terminal shows one line per step and the summary; the set-up's and the demo's details (apt, pip,
# DVC, MLflow, Airflow) go to the log file named on the first line.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${MLOPS_DEMO_DIR:-$PWD/.mlops}
export MLOPS_DEMO_LOG=${MLOPS_DEMO_LOG:-$work/demo.log}
mkdir -p "$(dirname "$MLOPS_DEMO_LOG")"
: >"$MLOPS_DEMO_LOG"
echo "Demo log (every detail): $MLOPS_DEMO_LOG"
# Only the set-up's own progress lines reach the terminal.
if ! bash scripts/setup.sh 2>&1 | tee -a "$MLOPS_DEMO_LOG" | grep --line-buffered '^setup:'; then
  echo "setup failed; the last lines of $MLOPS_DEMO_LOG:" >&2
  tail -n 20 "$MLOPS_DEMO_LOG" >&2
  exit 1
fi
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/python scripts/demo.py "$@"
