"""A restarted gateway serves the deployment it had, from its state file (real processes, real MLflow)."""

from __future__ import annotations

import json

import pytest

from airflow_mlops.serving.client import GatewayClient, GatewayError
from tests.servers import start_gateway, stop

TOKEN = "state-test-token"


def test_restart_restores_the_last_applied_deployment(bc_versions, mlflow_server, tmp_path):
    name, (v1, v2) = bc_versions["name"], bc_versions["versions"]
    state = tmp_path / "state" / "deployment.json"
    first = {
        "model_name": name,
        "strategy": "single",
        "routes": [{"version": v1, "weight": 1.0}],
        "champion": v1,
    }
    args = ("--state-file", str(state))
    proc, url = start_gateway(
        tmp_path / "gw1", mlflow_server, config=first, admin_token=TOKEN, extra_args=args
    )
    try:
        with GatewayClient(url, admin_token=TOKEN) as client:
            client.put_deployment({**first, "routes": [{"version": v2, "weight": 1.0}], "champion": v2})
            assert client.predict(bc_versions["records"][0])["model_version"] == v2
    finally:
        stop(proc)
    assert json.loads(state.read_text())["champion"] == v2
    # Started again with the old --config: the saved routing (v2) wins, as it is the newer one.
    proc, url = start_gateway(
        tmp_path / "gw2", mlflow_server, config=first, admin_token=TOKEN, extra_args=args
    )
    try:
        with GatewayClient(url) as client:
            assert client.predict(bc_versions["records"][0])["model_version"] == v2
    finally:
        stop(proc)


def test_a_refused_deployment_is_not_saved(bc_versions, mlflow_server, tmp_path):
    name, (v1, _) = bc_versions["name"], bc_versions["versions"]
    state = tmp_path / "deployment.json"
    first = {
        "model_name": name,
        "strategy": "single",
        "routes": [{"version": v1, "weight": 1.0}],
        "champion": v1,
    }
    proc, url = start_gateway(tmp_path / "gw", mlflow_server, config=first, admin_token=TOKEN,
                              extra_args=("--state-file", str(state)))  # fmt: skip
    try:
        with GatewayClient(url, admin_token=TOKEN) as client:
            client.put_deployment(first)
            saved = state.read_text()
            bad = {**first, "routes": [{"version": "999", "weight": 1.0}], "champion": "999"}
            with pytest.raises(GatewayError, match="not changed"):
                client.put_deployment(bad)
        assert state.read_text() == saved
    finally:
        stop(proc)
