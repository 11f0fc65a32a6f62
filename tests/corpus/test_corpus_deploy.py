"""Corpus of bad input and faults for deploys: arguments, versions, aliases, tokens, busy deployments,
dead services, a gateway that dies mid-canary.

Every case is a row of a table, run against one deployment made once for the module: a real MLflow server
(``mlflow_server``), real registered scikit-learn models and a real gateway subprocess serving version 1
as champion. Each row asserts the exception type, a message that names the problem and the fix (a regex
each), the time taken (< 15 s against a dead service), and that nothing changed: the routing the gateway
serves, the champion alias, the promotion ledger and the version tags. The gateway-death row instead
asserts the automatic rollback: the same routing and champion as before, and one ``rollback_auto`` entry.
Nothing is mocked.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_mlops.core.errors import MlopsInputError, MlopsServiceError
from airflow_mlops.core.registry import CHAMPION, alias_version
from airflow_mlops.core.tracking import MlflowTarget
from airflow_mlops.deploy import ledger
from airflow_mlops.deploy.backends import ExternalBackend, LocalBackend
from airflow_mlops.deploy.plan import DeployRequest
from airflow_mlops.deploy.rollout import Deployer, RolledBackError
from airflow_mlops.deploy.state import DeploymentBusyError, Operation, StateStore
from airflow_mlops.serving.client import GatewayClient

pytestmark = pytest.mark.timeout(600)

DEAD_SERVICE_SECONDS = 15.0
TOKEN = "corpus-admin-token"
NAME = "corpus-deploy"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


@dataclass
class World:
    """The module's deployment: model ``model`` (v1 champion, served; v2 registered), ``bare`` (v1, no
    champion), the MLflow server, and a folder for other workers' work folders."""

    uri: str
    model: str
    bare: str
    root: Path
    endpoint: str = ""

    def deployer(self, name: str = NAME, *, token: str | None = TOKEN, target: str | None = None,
                 backend: Any = None, folder: str = "worker-a", **kw: Any) -> Deployer:  # fmt: skip
        return Deployer(name, backend or LocalBackend(), MlflowTarget(target or self.uri),
                        StateStore(self.root / folder), admin_token=token, **kw)  # fmt: skip

    def snapshot(self) -> dict[str, Any]:
        client = MlflowTarget(self.uri).client()
        with GatewayClient(self.endpoint, TOKEN) as api:
            routing = api.get_deployment()
        tags = {
            k: v for k, v in client.get_model_version(self.model, "2").tags.items() if k.startswith("mlops.")
        }
        return {
            "routing": {"strategy": routing["strategy"], "routes": routing["routes"]},
            "champion": alias_version(client, self.model, CHAMPION),
            "bare_champion": alias_version(client, self.bare, CHAMPION),
            "ledger": ledger.read_history(client, self.model),
            "v2_tags": tags,
        }


@pytest.fixture(scope="module")
def world(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    import uuid

    from tests.models import register_versions

    suffix = uuid.uuid4().hex[:6]
    w = World(
        mlflow_server, f"corpus-deploy-{suffix}", f"corpus-bare-{suffix}", tmp_path_factory.mktemp("corpus")
    )
    register_versions(mlflow_server, w.model, [{"C": 1.0}, {"C": 0.1}])
    register_versions(mlflow_server, w.bare, [{"C": 1.0}])
    out = w.deployer().deploy(DeployRequest(w.model, "1", validate=False, op_id="corpus/setup"))
    w.endpoint = out.endpoint or ""
    key, value = (
        f"AIRFLOW_CONN_{'corpus_mlflow'.upper()}",
        f'{{"conn_type": "mlflow", "host": "{mlflow_server}"}}',
    )
    os.environ[key] = value
    yield w
    os.environ.pop(key, None)
    w.deployer().teardown()


# -- the cases: each raises what it is about, or (gateway death) leaves what it leaves -----------------


def _deploy(**kw: Any) -> Callable[[World], Any]:
    def run(w: World) -> Any:
        args = {"model_name": w.model, "version": "2", "validate": False, "op_id": "corpus/case", **kw}
        return w.deployer().deploy(DeployRequest(**args))

    return run


def _alias_unset(w: World) -> Any:
    from airflow_mlops.operators.deploy import DeployOperator

    return DeployOperator(
        task_id="t", model_name=w.model, alias="nope", mlflow_conn_id="corpus_mlflow"
    )._resolve_version()


def _shadow_without_champion(w: World) -> Any:
    return w.deployer("corpus-bare").deploy(DeployRequest(w.bare, "1", strategy="shadow", validate=False))


def _second_worker_without_token(w: World) -> Any:
    return w.deployer(token=None, folder="worker-b").deploy(DeployRequest(w.model, "2", validate=False))


def _other_model_same_deployment(w: World) -> Any:
    return w.deployer().deploy(DeployRequest(w.bare, "1", validate=False))


def _busy(w: World) -> Any:
    dep = w.deployer()
    state, rev = dep.records.load(NAME)
    before = state.op
    state.op = Operation(id="other-worker/op", action="deploy", version="2", strategy="canary",
                         previous_config=state.config, lease_until=time.time() + 600, host="worker-c")  # fmt: skip
    rev = dep.records.save(state, NAME, rev)
    try:
        return w.deployer(folder="worker-b").deploy(
            DeployRequest(w.model, "2", validate=False, op_id="corpus/busy")
        )
    finally:
        state.op = before
        dep.records.save(state, NAME, rev)


def _mlflow_down(w: World) -> Any:
    return w.deployer(target=f"http://127.0.0.1:{_closed_port()}").deploy(
        DeployRequest(w.model, "2", validate=False)
    )


def _external_gateway_down(w: World) -> Any:
    backend = ExternalBackend(f"http://127.0.0.1:{_closed_port()}")
    return w.deployer("corpus-ext", backend=backend).deploy(DeployRequest(w.model, "2", validate=False))


def _gateway_dies_mid_canary(w: World) -> Any:
    dep = w.deployer(poll_seconds=0.2)
    pid = dep.status()["handle"]["pid"]

    def kill_when_canary() -> None:
        with GatewayClient(w.endpoint, TOKEN) as api:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    if (api.get_deployment() or {}).get("strategy") == "canary":
                        os.killpg(pid, signal.SIGKILL)
                        return
                except MlopsServiceError:
                    pass
                time.sleep(0.2)

    killer = threading.Thread(target=kill_when_canary)
    killer.start()
    try:
        return dep.deploy(DeployRequest(w.model, "2", strategy="canary", canary_steps=(0.5,), step_seconds=60,
                                        validate=False, op_id="corpus/canary"))  # fmt: skip
    finally:
        killer.join()


@dataclass
class Case:
    id: str
    run: Callable[[World], Any]
    error: type[BaseException]
    problem: str
    fix: str
    dead_service: bool = False
    rolls_back: bool = False


CASES = [
    Case("unknown-strategy", _deploy(strategy="blue-green"), MlopsInputError, r"Unknown strategy 'blue-green'",
         r"use one of \['replace', 'canary'"),
    Case("canary-steps-not-increasing", _deploy(strategy="canary", canary_steps=(0.5, 0.2)), MlopsInputError,
         r"canary_steps \[0\.5, 0\.2\]", r"increasing shares strictly between 0 and 1"),
    Case("canary-step-of-one", _deploy(strategy="canary", canary_steps=(0.5, 1.0)), MlopsInputError,
         r"canary_steps", r"full promotion follows the last step"),
    Case("ab-weight-out-of-range", _deploy(strategy="ab", ab_weight=1.5), MlopsInputError, r"ab_weight 1\.5",
         r"strictly between 0 and 1"),
    Case("version-not-a-number", _deploy(version="latest"), MlopsInputError, r"'latest' is not a version number",
         r"resolve aliases first"),
    Case("version-does-not-exist", _deploy(version="99"), MlopsInputError, r"has no version 99",
         r"give a registered version"),
    Case("alias-unset", _alias_unset, MlopsInputError, r"@nope is not set", r"set the alias, or give `version`"),
    Case("shadow-without-champion", _shadow_without_champion, MlopsInputError, r"compares version 1 with a "
         r"champion, but .* has no champion", r"deploy a champion first with strategy='replace'"),
    Case("other-model-on-the-deployment", _other_model_same_deployment, MlopsInputError,
         r"serves model 'corpus-deploy-\w+', not 'corpus-bare", r"use another deployment name"),
    Case("second-worker-without-admin-token", _second_worker_without_token, MlopsInputError,
         r"admin token this worker does not have", r"set MLOPS_GATEWAY_ADMIN_TOKEN"),
    Case("busy-deployment", _busy, DeploymentBusyError, r"is busy: operation 'other-worker/op'",
         r"Wait for it to finish and retry; .* lease runs out"),
    Case("mlflow-down", _mlflow_down, MlopsServiceError, r"MLflow at http://127\.0\.0\.1:\d+ is unreachable",
         r"start the server or fix the connection", dead_service=True),
    Case("external-gateway-down", _external_gateway_down, MlopsServiceError,
         r"external gateway at http://127\.0\.0\.1:\d+ does not answer /health", r"start it, or fix gateway_url",
         dead_service=True),
    Case("gateway-dies-mid-canary", _gateway_dies_mid_canary, RolledBackError,
         r"failed a health check and was rolled back to replace routing of versions \['1'\]", r"deploy again",
         rolls_back=True),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_deploy_corpus(case: Case, world: World) -> None:
    before = world.snapshot()
    t0 = time.monotonic()
    with pytest.raises(case.error) as info:
        case.run(world)
    elapsed = time.monotonic() - t0
    message = str(info.value)
    assert re.search(case.problem, message), message
    assert re.search(case.fix, message), message
    if case.dead_service:
        assert elapsed < DEAD_SERVICE_SECONDS, f"{elapsed:.1f}s: {message}"
    after = world.snapshot()
    if case.rolls_back:
        assert after["ledger"][:-1] == before["ledger"] and after["ledger"][-1]["action"] == "rollback_auto"
        assert after["v2_tags"]["mlops.deploy.action"] == "rollback_auto"
        after["ledger"], after["v2_tags"] = before["ledger"], before["v2_tags"]
    assert after == before
