"""Two-phase deployment changes over HTTP: three gateway apps served by real uvicorn servers (threads of this
process, each with its own state, as replicas have), one of which cannot load version 2."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest

from airflow_mlops.core.net import free_port
from airflow_mlops.serving.app import GatewaySettings, create_app
from airflow_mlops.serving.config import DeploymentConfig

TOKEN = "fanout-admin-token"
SINGLE = {"model_name": "bc", "strategy": "replace", "routes": [{"version": "1"}]}


def _serve(app, port: int):
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    return server, thread


@pytest.fixture
def replicas(bc_models):
    ports = [free_port() for _ in range(3)]
    peers = tuple(f"http://127.0.0.1:{p}" for p in ports)
    servers = []

    def loader(broken: bool):
        def load(name: str, version: str):
            if broken and version == "2":
                raise RuntimeError("this replica's artifact store lost version 2")
            return bc_models[version]

        return load

    for i, port in enumerate(ports):
        settings = GatewaySettings(admin_token=TOKEN, peers=peers, peer_sync_seconds=60)
        app = create_app(
            settings, config=DeploymentConfig.parse(SINGLE), load_model=loader(i == 2), resolve=lambda n, r: r
        )
        servers.append(_serve(app, port))
    for url in peers:
        _wait_ready(url)
    yield peers
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)


def _wait_ready(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/ready", timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(url)


def _call(url: str, method: str, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, data, headers, method=method), timeout=30
        ) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _served(peers) -> list[list[str]]:
    return [[r["version"] for r in _call(f"{p}/admin/deployment", "GET")[1]["routes"]] for p in peers]


def test_one_replica_that_cannot_load_rolls_back_the_whole_change(replicas):
    status, body = _call(f"{replicas[0]}/admin/deployment", "PUT", {**SINGLE, "routes": [{"version": "2"}]})
    assert status == 503 and "No replica changed" in body["detail"] and replicas[2] in body["detail"], body
    assert _served(replicas) == [["1"], ["1"], ["1"]]
    # The replicas that had loaded it hold nothing staged any more.
    for p in replicas:
        assert _call(f"{p}/admin/deployment/stage", "DELETE")[1] == {"discarded": False}


def test_a_change_sent_to_any_replica_lands_on_all(replicas):
    change = {**SINGLE, "sticky_key": "user_id"}  # every replica can load it
    status, body = _call(f"{replicas[1]}/admin/deployment", "PUT", change)
    assert status == 200 and body["sticky_key"] == "user_id", body
    assert [_call(f"{p}/admin/deployment", "GET")[1] for p in replicas] == [body] * 3


def test_commit_of_an_unknown_stage_is_refused(replicas):
    status, body = _call(f"{replicas[0]}/admin/deployment/commit", "POST", {"stage_id": "nope"})
    assert status == 409 and "stage the change again on every replica" in body["detail"]


def test_replicas_page_sums_counters_and_never_gauges(replicas, bc_records):
    """``/metrics/replicas`` (the balancer's ``/metrics``): counters add up over the replicas; a gauge that
    all of them report alike (the route weight) appears once with its value, not tripled; one that
    differs (a per-replica live window) is left out."""
    from prometheus_client.parser import text_string_to_metric_families

    from airflow_mlops.serving.app import common_gauges
    from airflow_mlops.serving.client import request_counts

    for i, url in enumerate(replicas):
        req = urllib.request.Request(
            f"{url}/predict", json.dumps({"inputs": bc_records[: i + 1]}).encode(),
            {"Content-Type": "application/json"}, method="POST",
        )  # fmt: skip
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 200
    with urllib.request.urlopen(f"{replicas[1]}/metrics/replicas", timeout=30) as r:
        page = r.read().decode()
    assert request_counts(page, "bc") == {"1": {"200": 3.0}}
    assert 'mlops_gateway_predictions_total{model="bc",version="1"} 6.0' in page
    weights = [line for line in page.splitlines() if line.startswith("mlops_gateway_route_weight")]
    assert weights == ['mlops_gateway_route_weight{model="bc",version="1"} 1.0'], page
    assert 'mlops_gateway_champion_version{model="bc"} 1.0' in page
    # The gauges keep their type, so the page parses as the replicas' own pages do.
    types = {f.name: f.type for f in text_string_to_metric_families(page)}
    assert types["mlops_gateway_route_weight"] == "gauge"
    a = '# TYPE g gauge\ng{v="1"} 0.9\ng{v="2"} 1.0\n'
    assert common_gauges([a, a.replace("0.9", "0.7")]) == '# TYPE g gauge\ng{v="2"} 1.0\n'
