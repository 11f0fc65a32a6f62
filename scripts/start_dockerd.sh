#!/usr/bin/env bash
# Start a Docker engine in the background when none answers; idempotent.
#
# Usage: scripts/start_dockerd.sh [LOG_FILE]
#   LOG_FILE   where dockerd writes its log (default: /tmp/dockerd.log)
# Env:
#   DOCKERD_WAIT   seconds to wait for `docker info` (default 60)
#   DOCKERD_ARGS   extra dockerd arguments (e.g. "--storage-driver=vfs")
# Exit codes: 0 the engine answers; 1 it could not start (see the log); 2 dockerd is not installed.
set -euo pipefail

LOG_FILE="${1:-/tmp/dockerd.log}"
WAIT="${DOCKERD_WAIT:-60}"

if docker info >/dev/null 2>&1; then
    echo "docker engine already running"
    exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
    echo "dockerd not found: install Debian's docker.io package (apt-get install -y docker.io)" >&2
    exit 2
fi
if [ "$(id -u)" != "0" ]; then
    echo "dockerd needs root here; run this script as root (or start the engine some other way)" >&2
    exit 1
fi

# A dockerd we started earlier may still be coming up: wait for it instead of starting a second one.
if ! pgrep -x dockerd >/dev/null 2>&1; then
    # setsid: the engine must not die with the shell (or the test session) that started it.
    # shellcheck disable=SC2086
    setsid nohup dockerd ${DOCKERD_ARGS:-} >"$LOG_FILE" 2>&1 </dev/null &
fi

for _ in $(seq 1 "$WAIT"); do
    if docker info >/dev/null 2>&1; then
        echo "docker engine started (log: $LOG_FILE)"
        exit 0
    fi
    sleep 1
done
echo "docker engine did not answer within ${WAIT}s; last log lines:" >&2
tail -n 30 "$LOG_FILE" >&2 || true
exit 1
