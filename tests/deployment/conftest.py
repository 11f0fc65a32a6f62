"""Fixtures of the deployment tier: a private PostgreSQL cluster and Redis for the whole session; each
test module builds its own Airflow deployment on them (see ``harness.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.deployment.harness import Postgres, start_redis
from tests.servers import stop


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A running private PostgreSQL cluster (Debian's binaries); ``.create_database(name)``."""
    cluster = Postgres().start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a running Debian ``redis-server`` on a free loopback port (the Celery broker)."""
    proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    stop(proc)
