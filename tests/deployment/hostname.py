"""``[core] hostname_callable`` of the deployment tier: each component names itself, so that the task
instances' ``hostname`` (REST API) tells which Celery worker ran a task, though all run on one machine."""

from __future__ import annotations

import os
import socket


def name() -> str:
    """``$MLOPS_TEST_HOSTNAME`` (set per component by the harness), else the machine's FQDN."""
    return os.environ.get("MLOPS_TEST_HOSTNAME") or socket.getfqdn()
