"""DeployOperator's arguments: the rollout defaults come from DeployRequest, the gateway URL from the
connection (one conn_url for every connection). Nothing is deployed here (tests/integration/deploy)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from airflow_mlops.core.errors import MlopsInputError
from airflow_mlops.deploy.plan import DeployRequest
from tests.conftest import conn_env

# A stand-in for the task instance: only its ids are read (a real one needs a DAG run in a database).
CONTEXT = {"ti": SimpleNamespace(dag_id="d", run_id="r", task_id="t", map_index=-1)}
IDS = {"op_id": "d/r/t/-1", "actor": "airflow:d", "dag_run": "d/r"}


def _operator(**kwargs):
    from airflow_mlops.operators.deploy import DeployOperator

    return DeployOperator(task_id="deploy", model_name="m", **kwargs)


def test_rollout_options_left_out_take_the_request_defaults():
    assert _operator(version=3)._request(CONTEXT, "3") == DeployRequest("m", "3", **IDS)


def test_given_options_are_read_as_their_types():
    op = _operator(version="3", strategy="canary", canary_steps=["0.2", "0.6"], step_seconds="5",
                   min_requests="7", promote=False, sticky_key="")  # fmt: skip
    req = op._request(CONTEXT, "3")
    want = DeployRequest("m", "3", strategy="canary", canary_steps=(0.2, 0.6), step_seconds=5.0,
                         min_requests=7, promote=False, **IDS)  # fmt: skip
    assert req == want and req.sticky_key is None


@pytest.mark.parametrize(
    ("conn", "url"),
    [
        ({"host": "gateway", "port": 8080}, "http://gateway:8080"),
        ({"host": "https://gw.example.com/serving/", "port": 8443}, "https://gw.example.com:8443/serving"),
        ({"host": "http://gateway:9000", "port": 8080}, "http://gateway:9000"),
    ],
)
def test_external_gateway_url_from_the_connection(monkeypatch, conn, url):
    monkeypatch.setenv(*conn_env("gw", {"conn_type": "mlops_gateway", "password": "tok", **conn}))
    assert _operator(version=1, backend="external", gateway_conn_id="gw")._external_url() == url


def test_external_gateway_needs_a_url_and_a_token(monkeypatch):
    monkeypatch.delenv("MLOPS_GATEWAY_URL", raising=False)
    monkeypatch.delenv("MLOPS_GATEWAY_ADMIN_TOKEN", raising=False)
    with pytest.raises(MlopsInputError, match="needs the gateway's URL"):
        _operator(version=1, backend="external")._external_url()
    with pytest.raises(MlopsInputError, match="needs the gateway's admin token"):
        _operator(version=1, backend="external", gateway_url="http://gw:8080")._external_url()
