"""DaskHook: the scheduler address of a ``dask`` connection (an Airflow connection from the environment)."""

from __future__ import annotations

import pytest

from airflow_mlops.core.errors import MlopsInputError
from tests.conftest import conn_env


@pytest.mark.parametrize(
    ("conn", "address"),
    [
        ({"host": "tcp://sched:8786"}, "tcp://sched:8786"),
        ({"host": "sched"}, "tcp://sched:8786"),  # the default port
        ({"host": "sched", "port": 9000}, "tcp://sched:9000"),
        ({"host": "sched", "port": 9000, "schema": "tls"}, "tls://sched:9000"),
        ({"host": "tls://sched:8786/"}, "tls://sched:8786"),
    ],
)
def test_address(conn, address, monkeypatch) -> None:
    from airflow_mlops.hooks.dask import DaskHook

    monkeypatch.setenv(*conn_env("dask_unit", {"conn_type": "dask", **conn}))
    assert DaskHook("dask_unit").address() == address


def test_no_host_names_the_fix(monkeypatch) -> None:
    from airflow_mlops.hooks.dask import DaskHook

    monkeypatch.setenv(*conn_env("dask_unit", {"conn_type": "dask"}))
    with pytest.raises(MlopsInputError, match="has no host: set it to the Dask scheduler"):
        DaskHook("dask_unit").address()
