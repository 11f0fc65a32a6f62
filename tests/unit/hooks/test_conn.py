"""conn_url: one reading of a connection's host, schema and port for every hook."""

from __future__ import annotations

import pytest

from airflow_mlops.core.errors import MlopsInputError
from airflow_mlops.hooks._conn import conn_url


def _conn(**fields):
    from airflow.sdk import Connection

    return Connection(conn_id="c", conn_type="http", **fields)


@pytest.mark.parametrize(
    ("fields", "url"),
    [
        ({"host": "prom", "port": 9090}, "http://prom:9090"),
        ({"host": "prom", "schema": "https"}, "https://prom"),
        ({"host": "http://prom/prefix/", "port": 9090}, "http://prom:9090/prefix"),  # the path stays after
        ({"host": "http://u:p@prom", "port": 9090}, "http://u:p@prom:9090"),  # credentials in the host
        ({"host": "http://prom:9091", "port": 9090}, "http://prom:9091"),  # the host's own port wins
        ({"host": "http://[::1]", "port": 9090}, "http://[::1]:9090"),
        ({"host": "sqlite:////data/m.db", "port": 5000}, "sqlite:////data/m.db"),  # not HTTP: no port
    ],
)
def test_conn_url(fields, url):
    assert conn_url(_conn(**fields), "the URL") == url


def test_verbatim_prefixes_and_bad_hosts():
    assert conn_url(_conn(host="file:/data/mlruns"), "x", verbatim=("file:",)) == "file:/data/mlruns"
    with pytest.raises(MlopsInputError, match="'c' has no host: set it to the Pushgateway URL"):
        conn_url(_conn(host="  "), "the Pushgateway URL")
    with pytest.raises(MlopsInputError, match="port is not a number"):
        conn_url(_conn(host="http://prom:abc"), "the URL")


@pytest.mark.parametrize("hook", ["mlflow", "prometheus", "pushgateway"])
def test_every_hook_reads_a_path_prefix_and_port_alike(hook, monkeypatch):
    from tests.conftest import conn_env

    monkeypatch.setenv(*conn_env("x", {"conn_type": hook, "host": "http://h/sub/", "port": 8000}))
    if hook == "mlflow":
        from airflow_mlops.hooks.mlflow import MlflowHook

        url = MlflowHook("x").target.tracking_uri
    elif hook == "prometheus":
        from airflow_mlops.hooks.prometheus import PrometheusHook

        url = PrometheusHook("x").client.base_url
    else:
        from airflow_mlops.hooks.pushgateway import PushgatewayHook

        url = PushgatewayHook("x").settings()[0]
    assert url == "http://h:8000/sub"
