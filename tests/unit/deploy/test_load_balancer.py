"""The load balancer's nginx config (checked by Debian's real nginx, ``nginx -t``), the replicated
backend's argument checks, and the counter sums the balancer's ``/metrics`` serves."""

from __future__ import annotations

import subprocess

import pytest

from airflow_mlops.core.errors import MlopsInputError
from airflow_mlops.deploy.backends import ExternalBackend, LocalBackend
from airflow_mlops.deploy.docker_backend import DockerBackend
from airflow_mlops.deploy.load_balancer import nginx_binary, nginx_config
from airflow_mlops.deploy.replicas import ReplicatedBackend
from airflow_mlops.serving.app import sum_counters


def test_nginx_accepts_the_config(tmp_path):
    (tmp_path / "tmp").mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginx_config(["127.0.0.1:18001", "127.0.0.1:18002"], "127.0.0.1:18000", tmp_path))
    out = subprocess.run(
        [nginx_binary(), "-t", "-c", str(conf), "-p", str(tmp_path)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    text = conf.read_text()
    assert "server 127.0.0.1:18002 max_fails=1" in text and "non_idempotent" in text


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda: ReplicatedBackend(LocalBackend(), 0), "whole number from 1 to 64"),
        (lambda: ReplicatedBackend(LocalBackend(), True), "whole number from 1 to 64"),
        (
            lambda: ReplicatedBackend(ExternalBackend("http://gw:8080"), 2),
            "needs the 'local' or 'docker' backend",
        ),
        (lambda: ReplicatedBackend(DockerBackend(network_mode="bridge"), 2), "network_mode='host'"),
    ],
)
def test_bad_replica_arguments_are_refused_before_anything_starts(make, fragment):
    with pytest.raises(MlopsInputError, match=fragment):
        make()


def test_every_replica_gets_the_secret_the_peers_and_its_own_state(tmp_path):
    from airflow_mlops.deploy.backends import GatewaySpec
    from airflow_mlops.serving.config import DeploymentConfig

    backend = ReplicatedBackend(LocalBackend(), 3, request_secret="s" * 32)
    spec = GatewaySpec(
        "d",
        DeploymentConfig.parse({"model_name": "m", "routes": [{"version": "1"}]}),
        "http://mlflow",
        workdir=tmp_path,
    )
    specs = [backend.replica_spec(spec, i, [9001, 9002, 9003], "s" * 32) for i in range(3)]
    assert [s.port for s in specs] == [9001, 9002, 9003]
    assert {s.credentials["MLOPS_GATEWAY_PEERS"] for s in specs} == {
        "http://127.0.0.1:9001,http://127.0.0.1:9002,http://127.0.0.1:9003"
    }
    assert len({s.credentials["MLOPS_GATEWAY_STATE_FILE"] for s in specs}) == 3
    assert {s.credentials["MLOPS_GATEWAY_REQUEST_SECRET"] for s in specs} == {"s" * 32}


def test_counter_pages_add_up_by_name_and_labels():
    a = (
        "# TYPE mlops_gateway_requests_total counter\n"
        'mlops_gateway_requests_total{model="m",status="200",version="1"} 3.0\n'
        'mlops_gateway_requests_created{model="m",status="200",version="1"} 1.7e9\n'
        "# TYPE mlops_gateway_route_weight gauge\n"
        'mlops_gateway_route_weight{model="m",version="1"} 1.0\n'
    )
    b = a.replace(" 3.0", " 4.0")
    from airflow_mlops.serving.client import request_counts

    summed = sum_counters([a, b])
    assert request_counts(summed, "m") == {"1": {"200": 7.0}}
    assert request_counts(sum_counters([summed, a]), "m") == {"1": {"200": 10.0}}
    assert "route_weight" not in summed and "_created" not in summed


def _operator(**kwargs):
    from airflow_mlops.operators.deploy import DeployOperator

    return DeployOperator(task_id="deploy", model_name="m", version=1, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"replicas": 0}, "whole number of gateway replicas"),
        ({"replicas": "2"}, "whole number of gateway replicas"),
        ({"replicas": 2, "backend": "external"}, "replicas applies to the 'local' and 'docker' backends"),
    ],
)
def test_deploy_operator_checks_replicas_first(kwargs, fragment):
    with pytest.raises(MlopsInputError, match=fragment):
        _operator(**kwargs)._check_args()


def test_deploy_operator_wraps_its_backend_for_replicas():
    backend = _operator(replicas=3)._backend()
    assert isinstance(backend, ReplicatedBackend) and backend.replicas == 3 and backend.inner.kind == "local"
    assert _operator()._backend().kind == "local"


def test_replicas_not_ready_yet_stay_in_the_balancer(tmp_path):
    """Before the first deployment every replica answers /ready 503 (and /health 200): polling /ready
    through the balancer passes the 503 on and takes no replica out, so /health still answers 200.
    Two small HTTP servers stand in for replicas (only their status codes matter); nginx is real."""
    import http.server
    import threading
    import urllib.error
    import urllib.request

    from airflow_mlops.deploy.load_balancer import start_nginx, stop_nginx

    class NotReady(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotReady) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    handle = start_nginx([f"127.0.0.1:{s.server_address[1]}" for s in servers], tmp_path / "lb")
    try:
        for _ in range(4):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(f"{handle['endpoint']}/ready", timeout=5)
            assert err.value.code == 503
        with urllib.request.urlopen(f"{handle['endpoint']}/health", timeout=5) as r:
            assert r.status == 200
    finally:
        stop_nginx(handle)
        for server in servers:
            server.shutdown()
