"""The gateway as a real process: models from a real MLflow server, uvicorn on loopback, the client,
hot changes through the admin API, and the prediction log on shutdown."""

from __future__ import annotations

import signal
from datetime import datetime, timedelta, timezone

import pytest

from airflow_mlops.core import prediction_log as contract
from airflow_mlops.core.tracking import MlflowTarget
from airflow_mlops.serving.client import GatewayClient, GatewayError, GatewayInputError, parse_metrics
from tests.integration.serving.conftest import ADMIN_TOKEN
from tests.servers import FEEDBACK_TOKEN, start_gateway, stop


@pytest.fixture
def gateway(tmp_path, mlflow_server, bc_versions):
    config = {"model_name": bc_versions["name"], "strategy": "single", "routes": [{"version": "@champion"}]}
    proc, url = start_gateway(tmp_path, mlflow_server, config, admin_token=ADMIN_TOKEN)
    client = GatewayClient(url, admin_token=ADMIN_TOKEN, feedback_token=FEEDBACK_TOKEN)
    yield {"proc": proc, "url": url, "client": client, "root": tmp_path}
    client.close()
    stop(proc)


def test_serves_the_registry_model_natively(gateway, bc_versions, mlflow_server):
    import mlflow.sklearn
    import numpy as np
    import pandas as pd

    c: GatewayClient = gateway["client"]
    name = bc_versions["name"]
    ready = c.wait_ready(timeout=30)
    assert ready["versions"] == ["1"] and ready["champion"] == "1"
    assert c.get_deployment()["routes"] == [{"version": "1", "weight": 1.0}]  # alias resolved
    records = bc_versions["records"][:25]
    answer = c.predict(records)
    with MlflowTarget(mlflow_server).activate():
        reference = mlflow.sklearn.load_model(f"models:/{name}/1")
    assert answer["model_version"] == "1"
    assert answer["predictions"] == reference.predict(pd.DataFrame(records)).tolist()
    np.testing.assert_allclose(
        answer["probabilities"], reference.predict_proba(pd.DataFrame(records)), atol=1e-12
    )
    one = c.predict(records[0])
    assert len(one["predictions"]) == 1 and one["request_id"] != answer["request_id"]


def test_input_errors_feedback_and_metrics(gateway, bc_versions):
    c: GatewayClient = gateway["client"]
    records, labels = bc_versions["records"], bc_versions["labels"]
    bad = dict(records[0])
    del bad["mean texture"]
    with pytest.raises(GatewayInputError) as e:
        c.predict(bad)
    assert e.value.status_code == 422 and "no column 'mean texture'" in e.value.detail
    for i in range(30):
        a = c.predict(records[i])
        assert c.feedback(a["request_id"], label=labels[i])["accepted"] == 1
    batch = c.predict(records[30:40])
    c.feedback(batch["request_id"], labels=labels[30:40])
    with pytest.raises(GatewayInputError) as e:
        c.feedback("0" * 32, label=1)
    assert e.value.status_code == 404
    m = parse_metrics(c.metrics_text())
    lab = frozenset({("model", bc_versions["name"]), ("version", "1")})
    assert m[("mlops_gateway_feedback_total", lab)] == 40
    assert m[("mlops_gateway_live_samples", lab)] == 40
    assert m[("mlops_gateway_live_accuracy", lab)] > 0.9
    assert m[("mlops_gateway_requests_total", lab | {("status", "200")})] == 31
    assert m[("mlops_gateway_requests_total", lab | {("status", "422")})] == 1
    assert m[("mlops_gateway_predictions_total", lab)] == 40


def test_admin_changes_routing_and_refuses_strangers(gateway, bc_versions):
    c: GatewayClient = gateway["client"]
    name = bc_versions["name"]
    with pytest.raises(GatewayError) as e:
        GatewayClient(gateway["url"]).get_deployment()
    assert e.value.status_code == 401
    with pytest.raises(GatewayError) as e:
        GatewayClient(gateway["url"], admin_token="guess").put_deployment(
            {"model_name": name, "routes": [{"version": "2"}]}
        )
    assert e.value.status_code == 401
    with pytest.raises(GatewayInputError) as e:
        c.put_deployment({"model_name": name, "routes": [{"version": "99"}]})
    assert (
        e.value.status_code == 422 and "no version 99" in e.value.detail and "not changed" in e.value.detail
    )
    assert c.get_deployment()["routes"][0]["version"] == "1"
    canary = {
        "model_name": name, "strategy": "canary", "champion": "1",
        "routes": [{"version": "1", "weight": 0.5}, {"version": "2", "weight": 0.5}],
    }  # fmt: skip
    assert c.put_deployment(canary)["strategy"] == "canary"
    served = {c.predict(bc_versions["records"][i])["model_version"] for i in range(60)}
    assert served == {"1", "2"}
    m = parse_metrics(c.metrics_text())
    assert m[("mlops_gateway_route_weight", frozenset({("model", name), ("version", "2")}))] == 0.5
    assert ADMIN_TOKEN not in (gateway["root"] / "gateway.log").read_text()


def test_prediction_log_is_written_on_sigterm_and_readable_as_a_drift_window(gateway, bc_versions):
    c: GatewayClient = gateway["client"]
    records = bc_versions["records"]
    ids = [c.predict(records[i * 3 : i * 3 + 3])["request_id"] for i in range(7)]
    start = datetime.now(timezone.utc) - timedelta(minutes=5)
    proc = gateway["proc"]
    proc.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully (lifespan end flushes the log), then re-raises the signal.
    assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in (gateway["root"] / "gateway.log").read_text()
    window = contract.read_window(
        gateway["root"] / "predictions",
        bc_versions["name"],
        start,
        start + timedelta(hours=1),
        keep_meta=True,
    )
    assert len(window) == 21
    # The log keys rows by the request id's random part (the rest is its signed payload).
    assert window[contract.REQUEST_ID].tolist() == [rid.split(".")[0] for rid in ids for _ in range(3)]
    assert window["mean radius"].tolist() == [r["mean radius"] for r in records[:21]]
    assert set(window[contract.MODEL_VERSION]) == {"1"}
    assert set(window[contract.PREDICTION]) <= {0, 1}
