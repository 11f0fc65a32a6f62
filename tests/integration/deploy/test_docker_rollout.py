"""Deploy flows on the Docker backend: a real engine (dockerd), the real gateway image built from a
Debian base bootstrapped here, a real MLflow server and real models. Nothing is mocked.

The containers use ``network_mode="host"``: the test MLflow server listens on the host's loopback only,
which a bridged container cannot reach; the gateway then listens on 127.0.0.1 itself.
"""

from __future__ import annotations

import threading
import time

import pytest

from airflow_mlops.core.registry import CHAMPION, alias_version
from airflow_mlops.deploy import ledger
from airflow_mlops.deploy.plan import DeployRequest
from airflow_mlops.deploy.rollout import RolledBackError
from airflow_mlops.serving.client import GatewayClient

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]


def test_docker_deploy_canary_kill_and_rollback(
    gateway_image, two_versions, deployers, records, mlflow_client, model_name
):
    from airflow_mlops.deploy.docker_backend import DockerBackend

    v1, v2 = two_versions
    backend = DockerBackend(image=gateway_image, network_mode="host", cpus=1.0, memory="1g")
    dep = deployers("bc-docker", backend=backend)

    # 1. Deploy v1 (infra validation in a throwaway container first), predict through the container.
    first = dep.deploy(DeployRequest(model_name, v1, op_id="docker-1"))
    assert first.promoted and first.backend == "docker" and first.validation["p95_ms"] < 500
    api = GatewayClient(first.endpoint)
    assert {api.predict(records[i])["model_version"] for i in range(5)} == {v1}
    assert api.predict(records)["predictions"] and len(api.predict(records)["predictions"]) == 10

    # The container is hardened as promised.
    c = backend.client.containers.get(first.handle["container_id"])
    host = c.attrs["HostConfig"]
    assert c.attrs["Config"]["User"] == "10001:10001"
    assert host["ReadonlyRootfs"] is True and "/tmp" in host["Tmpfs"]
    assert host["NanoCpus"] == 1_000_000_000 and host["Memory"] == 1024**3
    assert host["CapDrop"] == ["ALL"] and "no-new-privileges" in host["SecurityOpt"]
    assert c.attrs["Config"]["Healthcheck"]["Test"][0] == "CMD"
    assert c.labels["org.airflow-mlops.deployment"] == "bc-docker"
    assert c.labels["org.airflow-mlops.model"] == model_name
    assert not [
        x
        for x in backend.client.containers.list(all=True)
        if x.labels.get("org.airflow-mlops.role") == "validation"
    ]
    assert c.exec_run("python -c 'import airflow'").exit_code != 0  # the image has no Airflow
    assert c.exec_run("touch /opt/venv/x").exit_code != 0  # read-only root filesystem

    # 2. A canary of v2; the container is killed in the middle: the deploy rolls back by itself.
    errors: list[BaseException] = []

    def canary() -> None:
        try:
            dep.deploy(DeployRequest(model_name, v2, strategy="canary", step_seconds=60, validate=False))
        except BaseException as e:  # noqa: BLE001 - inspected below
            errors.append(e)

    t = threading.Thread(target=canary)
    t.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (dep.status()["config"] or {}).get("strategy") != "canary":
        time.sleep(0.3)
    assert dep.status()["config"]["strategy"] == "canary"
    time.sleep(1)
    c.kill()
    t.join(timeout=300)
    assert not t.is_alive() and len(errors) == 1 and isinstance(errors[0], RolledBackError), errors
    state = dep.status()
    assert state["alive"] and state["handle"]["container_id"] != c.id
    assert state["config"]["routes"] == [{"version": v1, "weight": 1.0}]
    assert {api.predict(records[i])["model_version"] for i in range(5)} == {v1}
    assert alias_version(mlflow_client, model_name, CHAMPION) == v1
    assert ledger.read_history(mlflow_client, model_name)[-1]["action"] == "rollback_auto"

    # 3. The canary again, unharmed this time: stepped weights, then full promotion.
    out = dep.deploy(
        DeployRequest(model_name, v2, strategy="canary", canary_steps=(0.5,), step_seconds=2, validate=False)
    )
    assert out.promoted and out.served_versions == [v2]
    assert alias_version(mlflow_client, model_name, CHAMPION) == v2
    assert {api.predict(records[i])["model_version"] for i in range(5)} == {v2}

    # 4. Teardown removes the container.
    cid = out.handle["container_id"]
    dep.teardown()
    assert not [x for x in backend.client.containers.list(all=True) if x.id == cid]


def test_bridge_container_that_cannot_load_fails_clearly_and_leaves_nothing(gateway_image, tmp_path):
    """Bridge networking, port published on 127.0.0.1 only: the gateway answers /ready through the
    published port, reports that its model registry is unreachable, and the backend removes it."""
    from airflow_mlops.core.errors import MlopsServiceError
    from airflow_mlops.deploy.backends import GatewaySpec
    from airflow_mlops.deploy.docker_backend import DockerBackend
    from airflow_mlops.deploy.plan import alone

    backend = DockerBackend(
        image=gateway_image, network_mode="bridge", cpus=0.5, memory="768m",
        extra_env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"},
    )  # fmt: skip
    spec = GatewaySpec(
        name="bridge-probe",
        config=alone("m", "1"),
        tracking_uri="http://127.0.0.1:9",  # the container's own loopback: nothing listens there
        admin_token="t",
        workdir=tmp_path,
    )
    seen: list[dict] = []
    real_stop = backend.stop

    def inspect_then_stop(handle):
        seen.append(backend._container(handle).attrs)
        real_stop(handle)

    backend.stop = inspect_then_stop
    with pytest.raises(MlopsServiceError, match="could not load its models"):
        backend.start(spec, ready_timeout=120)
    (attrs,) = seen
    bindings = attrs["HostConfig"]["PortBindings"]["8080/tcp"]
    assert [b["HostIp"] for b in bindings] == ["127.0.0.1"]  # published on the loopback only
    assert attrs["Config"]["Labels"]["org.airflow-mlops.port"] == bindings[0]["HostPort"]
    assert attrs["Config"]["Cmd"][:2] == ["--host", "0.0.0.0"]  # inside the container's own network namespace
    left = backend.client.containers.list(
        all=True, filters={"label": "org.airflow-mlops.deployment=bridge-probe"}
    )
    assert left == []
