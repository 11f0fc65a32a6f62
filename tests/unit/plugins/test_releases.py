"""The releases view's parts that need no api-server: reading gate tags, rendering (escaped, secrets
kept out), and the bounds on dead services. Servers here are real (a closed port, a real HTTP server
on loopback that records what it was sent); the whole view on a real api-server, with a real release,
is tests/deployment/test_releases_view.py."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from airflow_mlops.core.errors import MlopsServiceError
from airflow_mlops.core.tracking import MlflowTarget
from airflow_mlops.plugins import releases
from tests.servers import free_port

METRICS = """# TYPE mlops_gateway_route_weight gauge
mlops_gateway_route_weight{model="bc",version="1"} 0.7
mlops_gateway_route_weight{model="bc",version="2"} 0.3
mlops_gateway_route_weight{model="other",version="9"} 1.0
# TYPE mlops_gateway_champion_version gauge
mlops_gateway_champion_version{model="bc"} 1
# TYPE mlops_gateway_requests counter
mlops_gateway_requests_total{model="bc",version="1",status="200"} 14
mlops_gateway_requests_total{model="bc",version="1",status="500"} 2
mlops_gateway_requests_total{model="bc",version="2",status="200"} 6
# TYPE mlops_gateway_live_f1 gauge
mlops_gateway_live_f1{model="bc",version="1"} 0.95
mlops_gateway_live_f1{model="bc",version="2"} 0.9
"""


@pytest.fixture
def gateway():
    """A real HTTP server on loopback that answers like a gateway and records the Authorization headers."""
    seen: list[tuple[str, str | None]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # http.server calls it by this name
            seen.append((self.path, self.headers.get("Authorization")))
            if self.path == "/metrics":
                body, kind = METRICS.encode(), "text/plain; version=0.0.4"
            else:
                body, kind = json.dumps({"strategy": "canary", "routes": []}).encode(), "application/json"
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", seen
    server.shutdown()


def test_gate_tags_become_verdicts_with_their_tables():
    rows = [{"metric": "f1", "check": "min", "status": "passed", "observed": 0.93, "threshold": 0.8}]
    tags = {
        "mlops.gate.offline": "passed",
        "mlops.gate.offline.details": json.dumps({"status": "passed", "rows": rows}),
        "mlops.gate.online": "failed",
        "mlops.gate.online.details": "not json",
        "mlops.airflow.dag_id": "d",
    }
    gates = releases.version_gates(tags)
    assert gates == [
        {"name": "offline", "status": "passed", "details": {"status": "passed", "rows": rows}},
        {"name": "online", "status": "failed", "details": "not json"},
    ]


def _data(**model) -> dict:
    base = {"name": "bc", "champion": "1", "aliases": {"champion": "1"}, "versions": [], "history": [],
            "endpoint": None, "drift": None, "gateway": None}  # fmt: skip
    return {"mlflow": {"conn_id": "mlflow_default", "uri": "http://mlflow", "status": "ok"},
            "generated_at": "now", "elapsed_ms": 3, "models": [{**base, **model}]}  # fmt: skip


def test_the_page_escapes_what_the_registry_holds():
    evil = "<script>alert(1)</script>"
    gate = {"name": "offline", "status": "failed",
            "details": {"source": "mlflow", "rows": [{"metric": "f1", "status": "failed", "reason": evil}]}}  # fmt: skip
    version = {"version": "2", "aliases": [], "created": None, "run_id": "r", "metrics": {"f1": 0.5},
               "gates": [gate], "dag_id": evil, "run_url": None, "model_version_url": None}  # fmt: skip
    page = releases.render(
        _data(name=evil, versions=[version], history=[{"action": "promote", "version": "1", "actor": evil}])
    )
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "gate offline" in page and "failed" in page


def test_metrics_of_the_model_are_read_per_version(gateway):
    url, seen = gateway
    state = releases.gateway_state(url, "bc", (None, None))
    assert state["status"] == "ok" and state["champion"] == "1"
    by_version = {v["version"]: v for v in state["versions"]}
    assert set(by_version) == {"1", "2"}  # another model's series stay out
    assert by_version["1"]["weight"] == 0.7 and by_version["1"]["requests"] == 14  # 5xx not counted
    assert by_version["2"]["f1"] == 0.9
    assert seen == [("/metrics", None)]  # no admin token configured: none sent, no admin call


def test_the_admin_token_goes_only_to_the_configured_gateway(gateway):
    url, seen = gateway
    # An endpoint read from the registry that is not the configured gateway gets no token.
    releases.gateway_state(url, "bc", ("http://127.0.0.1:1", "s3cret-token"))
    assert all(auth is None for _, auth in seen)
    seen.clear()
    state = releases.gateway_state(url, "bc", (url, "s3cret-token"))
    assert ("/admin/deployment", "Bearer s3cret-token") in seen and state["strategy"] == "canary"
    assert "s3cret-token" not in json.dumps(state)


def test_a_dead_gateway_is_unreachable_within_seconds():
    started = time.monotonic()
    dead = f"http://127.0.0.1:{free_port()}"
    state = releases.gateway_state(dead, "bc", (None, None))
    assert time.monotonic() - started < 5
    assert state["status"] == "unreachable" and dead in state["error"], state
    assert "unreachable" in releases.render(_data(gateway=state, endpoint=state["endpoint"]))


def test_a_dead_mlflow_is_reported_within_seconds(monkeypatch):
    dead = f"http://ci:pw@127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(MlopsServiceError, match="unreachable"):
        releases.collect_mlflow(MlflowTarget(dead))
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow", "host": dead}))
    data = asyncio.run(releases.gather())
    assert time.monotonic() - started < 10
    assert data["mlflow"]["status"] == "unreachable" and data["models"] == []
    page = releases.render(data)
    assert "unreachable" in page and "pw" not in page and "***" in page


def test_the_gateway_connection_gives_its_url_and_admin_token(monkeypatch):
    assert releases._gateway_auth() == (None, None)  # none configured
    monkeypatch.setenv("AIRFLOW__MLOPS__RELEASES_GATEWAY_CONN_ID", "gw")
    monkeypatch.setenv(
        "AIRFLOW_CONN_GW",
        json.dumps({"conn_type": "http", "host": "gateway", "port": 8080, "password": "tok"}),
    )
    assert releases._gateway_auth() == ("http://gateway:8080", "tok")


def test_versions_show_their_logged_models_metrics(tmp_path):
    """A version registered from an MLflow 3 LoggedModel shows that model's id and its own metrics (what
    the gate compares), not the run's; a version registered from a run shows the run's. A real local
    MLflow store (SQLite) and a real scikit-learn model."""
    from concurrent.futures import ThreadPoolExecutor

    import mlflow
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    target = MlflowTarget(
        f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_location=str(tmp_path / "artifacts")
    )
    client = target.client()
    X, y = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 0, 1, 1])
    with target.activate():
        mlflow.set_experiment("releases-view")
        with mlflow.start_run() as run:
            info = mlflow.sklearn.log_model(LogisticRegression().fit(X, y), name="model")
            mlflow.log_metrics({"f1": 0.91}, model_id=info.model_id)
        client.log_metric(run.info.run_id, "f1", 0.5)  # the run's own value, not linked to the model
        v1 = mlflow.register_model(info.model_uri, "bc")
        v2 = client.create_model_version("bc", f"runs:/{run.info.run_id}/model", run.info.run_id)
    with ThreadPoolExecutor(4) as pool:
        model = releases._model(client, target, client.get_registered_model("bc"), 10, pool)
    rows = {v["version"]: v for v in model["versions"]}
    assert rows[str(v1.version)]["model_id"] == info.model_id
    assert rows[str(v1.version)]["metrics"] == {"f1": 0.91}
    assert rows[str(v2.version)]["model_id"] is None
    assert rows[str(v2.version)]["metrics"] == {"f1": 0.5}
    page = releases._versions(model)
    assert info.model_id in page and "(run)" in page
