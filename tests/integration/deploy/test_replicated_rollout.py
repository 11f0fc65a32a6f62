"""The deployer on two local gateway replicas behind Debian's nginx: its routing changes go through the
balancer to every replica (two-phase), its step watch reads the replicas' summed counters. Real MLflow,
real processes, nothing mocked."""

from __future__ import annotations

import json
import urllib.request

import pytest

from airflow_mlops.deploy.backends import LocalBackend
from airflow_mlops.deploy.plan import DeployRequest
from airflow_mlops.deploy.replicas import ReplicatedBackend
from airflow_mlops.serving.client import GatewayClient, request_counts

pytestmark = pytest.mark.timeout(400)


def _routes(endpoint: str) -> list[dict]:
    with urllib.request.urlopen(f"{endpoint}/ready", timeout=10) as r:
        return json.loads(r.read())["versions"]


def test_canary_then_promotion_on_every_replica(two_versions, deployers, records, model_name):
    v1, v2 = two_versions
    backend = ReplicatedBackend(LocalBackend(), 2)
    dep = deployers("replicated", backend=backend)
    first = dep.deploy(DeployRequest(model_name, v1, op_id="rep-1"))
    replicas = backend.endpoints(first.handle)
    assert len(replicas) == 2 and first.endpoint not in replicas  # the deployment's endpoint is nginx
    with GatewayClient(first.endpoint) as lb:
        for i in range(6):
            assert lb.predict(records[i])["model_version"] == v1
        # Through the balancer, /metrics is both replicas' counters summed.
        summed = request_counts(lb.metrics_text(), model_name)[v1]["200"]
    assert summed >= 6
    seen = []
    dep.step_check = lambda endpoint, cfg, new: seen.append([_routes(r) for r in replicas])
    second = dep.deploy(
        DeployRequest(model_name, v2, strategy="canary", canary_steps=(0.5,), step_seconds=1, op_id="rep-2")
    )
    assert second.promoted and second.served_versions == [v2]
    assert seen[0] == [[v1, v2], [v1, v2]]  # the held canary step was on both replicas
    assert [_routes(r) for r in replicas] == [[v2], [v2]]
    assert second.handle["replicas"] == first.handle["replicas"]  # hot swaps, no restart


@pytest.mark.docker
@pytest.mark.timeout(900)  # a cold build of the gateway image takes minutes
def test_docker_replicas_behind_nginx(gateway_image, two_versions, deployers, records, model_name):
    """Two containers (host network: the test MLflow listens on the host's loopback) behind nginx."""
    from airflow_mlops.deploy.docker_backend import DockerBackend

    v1, _ = two_versions
    backend = ReplicatedBackend(DockerBackend(image=gateway_image, network_mode="host", cpus=1.0), 2)
    dep = deployers("replicated-docker", backend=backend)
    first = dep.deploy(DeployRequest(model_name, v1, op_id="rep-docker-1"))
    assert [h["backend"] for h in first.handle["replicas"]] == ["docker", "docker"]
    with GatewayClient(first.endpoint) as lb:
        answers = [lb.predict(records[i]) for i in range(6)]
    assert {a["model_version"] for a in answers} == {v1}
    replicas = backend.endpoints(first.handle)
    per = [request_counts(GatewayClient(u).metrics_text(), model_name)[v1]["200"] for u in replicas]
    assert sum(per) >= 6 and min(per) > 0, per  # round robin: both containers answered
