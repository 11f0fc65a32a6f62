"""Fixtures of the deployment tier: a private PostgreSQL cluster and Redis for the whole session; each
test module builds its own Airflow deployment on them (see ``harness.py``)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.deployment.harness import Postgres, start_redis
from tests.servers import stop


@pytest.fixture(scope="session")
def tier_dir() -> Iterator[Callable[[str], Path]]:
    """``tier_dir(name)``: a new folder for a deployment's home, DAGs and logs, outside pytest's
    numbered temp folders (which concurrent pytest sessions on one host prune while a deployment
    still runs from them); removed at the end of the session, unless ``MLOPS_KEEP_TIER_DIR=1`` (to read
    the components' and tasks' logs after a failure; the folder is printed)."""
    root = Path(tempfile.mkdtemp(prefix="mlops-deployment-tier-"))
    yield lambda name: Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))
    if os.environ.get("MLOPS_KEEP_TIER_DIR") == "1":
        print(f"\nthe deployment tier's folder is kept: {root}")
        return
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A running private PostgreSQL cluster (Debian's binaries); ``.create_database(name)``."""
    cluster = Postgres().start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def redis_url(tier_dir: Callable[[str], Path]) -> Iterator[str]:
    """URL of a running Debian ``redis-server`` on a free loopback port (the Celery broker)."""
    proc, url = start_redis(tier_dir("redis"))
    yield url
    stop(proc)
