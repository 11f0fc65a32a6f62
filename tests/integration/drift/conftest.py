"""A real Prometheus Pushgateway for the drift tests."""

from __future__ import annotations

import pytest

from tests.servers import start_pushgateway, stop


@pytest.fixture(scope="session")
def pushgateway(tmp_path_factory: pytest.TempPathFactory):
    """URL of a real Pushgateway on 127.0.0.1."""
    proc, url = start_pushgateway(tmp_path_factory.mktemp("pushgateway"))
    yield url
    stop(proc)
