"""Deploy flows on the local backend: a real gateway subprocess, a real MLflow server, real models.

Nothing is mocked. Each test owns its registered model (``model_name``) and its state folder.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from airflow_mlops.core.errors import MlopsInputError
from airflow_mlops.core.registry import CHAMPION, AliasConflictError, alias_version
from airflow_mlops.deploy import ledger
from airflow_mlops.deploy.plan import DeployRequest
from airflow_mlops.deploy.rollout import RolledBackError
from airflow_mlops.deploy.state import Operation
from airflow_mlops.deploy.validation import InfraValidationError
from airflow_mlops.serving.client import GatewayClient
from airflow_mlops.serving.config import DeploymentConfig

pytestmark = pytest.mark.timeout(300)


def _served_by(endpoint: str, records: list[dict], n: int = 1) -> set[str]:
    api = GatewayClient(endpoint)
    return {api.predict(records[i % len(records)])["model_version"] for i in range(n)}


def test_replace_canary_promote_and_rollback(two_versions, deployers, records, mlflow_client, model_name):
    v1, v2 = two_versions
    dep = deployers("bc")
    first = dep.deploy(DeployRequest(model_name, v1, op_id="run-1"))
    assert first.promoted and first.served_versions == [v1] and first.weights == {v1: 1.0}
    assert first.validation["p95_ms"] < 500 and first.validation["rows"] == 5
    assert alias_version(mlflow_client, model_name, CHAMPION) == v1
    assert _served_by(first.endpoint, records, 5) == {v1}
    pid = first.handle["pid"]

    # Canary: v2 takes 50 % for a held step, then everything; the champion alias moves at the end.
    seen: list[dict] = []
    dep.step_check = lambda endpoint, cfg, new: seen.append(cfg.to_dict())
    second = dep.deploy(
        DeployRequest(model_name, v2, strategy="canary", canary_steps=(0.5,), step_seconds=1, op_id="run-2")
    )
    assert [c["strategy"] for c in seen] == ["canary", "replace"]
    assert seen[0]["routes"] == [{"version": v1, "weight": 0.5}, {"version": v2, "weight": 0.5}]
    assert second.promoted and second.served_versions == [v2] and second.champion == v2
    assert second.handle["pid"] == pid and second.endpoint == first.endpoint  # no restart: a hot swap
    assert alias_version(mlflow_client, model_name, CHAMPION) == v2
    assert _served_by(second.endpoint, records, 5) == {v2}

    # The ledger: version tags and the model's history, who/when/from which/which run.
    mv = mlflow_client.get_model_version(model_name, v2)
    assert mv.tags["mlops.deploy.action"] == "promote" and mv.tags["mlops.deploy.from_version"] == v1
    assert mv.tags["mlops.deploy.infra_validation"] == "passed"
    history = ledger.read_history(mlflow_client, model_name)
    assert [(h["action"], h["version"], h.get("from_version")) for h in history] == [
        ("promote", v1, None),
        ("promote", v2, v1),
    ]
    assert all(h["at"] and h["actor"] for h in history)

    # Rollback: champion and routing back to v1; a retry of the same rollback changes nothing.
    back = dep.rollback(model_name, op_id="rb-1")
    assert back.served_versions == [v1] and back.champion == v1
    assert alias_version(mlflow_client, model_name, CHAMPION) == v1
    assert _served_by(back.endpoint, records, 5) == {v1}
    again = dep.rollback(model_name, op_id="rb-1")
    assert again.reused and again.served_versions == [v1]
    assert ledger.read_history(mlflow_client, model_name)[-1]["action"] == "rollback"
    # Nothing left to roll back to: a clear error, nothing changed.
    with pytest.raises(MlopsInputError, match="no earlier routing"):
        dep.rollback(model_name, op_id="rb-2")
    assert alias_version(mlflow_client, model_name, CHAMPION) == v1


def test_retry_of_a_finished_deploy_changes_nothing(two_versions, deployers, mlflow_client, model_name):
    v1, _ = two_versions
    dep = deployers("bc")
    first = dep.deploy(DeployRequest(model_name, v1, op_id="dag/run/deploy", validate=False))
    retry = dep.deploy(DeployRequest(model_name, v1, op_id="dag/run/deploy", validate=False))
    assert retry.reused and retry.handle["pid"] == first.handle["pid"]
    assert len(ledger.read_history(mlflow_client, model_name)) == 1


def test_failed_infra_validation_changes_nothing(two_versions, deployers, records, mlflow_client, model_name):
    v1, v2 = two_versions
    dep = deployers("bc")
    first = dep.deploy(DeployRequest(model_name, v1, validate=False))
    with pytest.raises(InfraValidationError, match="exceeds the budget"):
        dep.deploy(DeployRequest(model_name, v2, latency_budget_ms=0.001))
    assert alias_version(mlflow_client, model_name, CHAMPION) == v1
    assert _served_by(first.endpoint, records, 3) == {v1}
    assert dep.status()["config"]["routes"] == [{"version": v1, "weight": 1.0}]


@pytest.mark.parametrize("strategy", ["shadow", "ab", "bandit"])
def test_comparison_strategies_route_both_and_keep_the_champion(
    strategy, two_versions, deployers, records, mlflow_client, model_name
):
    v1, v2 = two_versions
    dep = deployers("bc")
    dep.deploy(DeployRequest(model_name, v1, validate=False))
    out = dep.deploy(
        DeployRequest(model_name, v2, strategy=strategy, validate=False, sticky_key="mean radius")
    )
    assert not out.promoted and out.champion == v1 and out.strategy == strategy
    assert set(out.served_versions) == {v1, v2}
    assert alias_version(mlflow_client, model_name, CHAMPION) == v1
    api = GatewayClient(out.endpoint)
    answers = [api.predict(records[i % 10], key=f"user-{i}")["model_version"] for i in range(40)]
    if strategy == "shadow":
        assert set(answers) == {v1}  # the champion answers; the challenger only gets copies
    else:
        assert set(answers) <= {v1, v2}
    if strategy == "ab":  # sticky: the same key always meets the same version
        assert {api.predict(records[0], key="user-7")["model_version"] for _ in range(5)} == {answers[7]}
    assert out.weights[v1] + (out.weights[v2] if strategy != "shadow" else 0) == pytest.approx(1.0)


def test_strategies_that_need_a_champion_refuse_without_one(
    two_versions, deployers, mlflow_client, model_name
):
    dep = deployers("bc")
    with pytest.raises(MlopsInputError, match="deploy a champion first"):
        dep.deploy(DeployRequest(model_name, two_versions[1], strategy="shadow", validate=False))
    assert dep.status() is None or not dep.status()["handle"]
    assert alias_version(mlflow_client, model_name, CHAMPION) is None


def test_bad_requests_are_refused_before_anything_changes(deployers, model_name):
    dep = deployers("bc")
    with pytest.raises(MlopsInputError, match="Unknown strategy"):
        dep.deploy(DeployRequest(model_name, "1", strategy="blue-green"))
    with pytest.raises(MlopsInputError, match="canary_steps"):
        dep.deploy(DeployRequest(model_name, "1", strategy="canary", canary_steps=(0.5, 0.2)))
    with pytest.raises(MlopsInputError, match="not a version number"):
        dep.deploy(DeployRequest(model_name, "latest"))
    with pytest.raises(MlopsInputError, match="Deployment name"):
        deployers("../etc")
    assert dep.status() is None


def test_gateway_killed_during_canary_leaves_the_champion_serving(
    two_versions, deployers, records, mlflow_client, model_name
):
    """A SIGKILL of the gateway mid-canary: the deploy fails, rolls back by itself (a new gateway on
    the same port with the champion's routing), and the champion alias never moved."""
    v1, v2 = two_versions
    dep = deployers("bc")
    first = dep.deploy(DeployRequest(model_name, v1, validate=False))
    old_pid = first.handle["pid"]
    errors: list[BaseException] = []

    def run() -> None:
        try:
            dep.deploy(DeployRequest(model_name, v2, strategy="canary", step_seconds=60, validate=False))
        except BaseException as e:  # noqa: BLE001 - inspected below
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    api = GatewayClient(first.endpoint, dep.store.local_token("bc"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and api.get_deployment()["strategy"] != "canary":
        time.sleep(0.2)
    assert api.get_deployment()["strategy"] == "canary"
    os.killpg(old_pid, signal.SIGKILL)
    t.join(timeout=120)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], RolledBackError), errors
    assert "rolled back" in str(errors[0])
    state = dep.status()
    assert state["alive"] and state["handle"]["pid"] != old_pid and state["port"] == first.handle["port"]
    assert state["config"]["routes"] == [{"version": v1, "weight": 1.0}]
    assert _served_by(first.endpoint, records, 5) == {v1}
    assert alias_version(mlflow_client, model_name, CHAMPION) == v1
    assert ledger.read_history(mlflow_client, model_name)[-1]["action"] == "rollback_auto"


def test_champion_moved_meanwhile_is_not_overwritten(
    two_versions, deployers, records, mlflow_client, model_name
):
    """Compare-and-set: another promotion during the canary wins; this deploy restores its routing."""
    from tests.conftest import REPO_ROOT  # noqa: F401 - the session's MLflow is the same server
    from tests.models import register_versions

    v1, v2 = two_versions
    dep = deployers("bc")
    dep.deploy(DeployRequest(model_name, v1, validate=False))
    (v3,) = register_versions(mlflow_client.tracking_uri, model_name, [{"C": 10.0}])

    def someone_else_promotes(endpoint, cfg, new):
        if cfg.strategy == "canary":
            mlflow_client.set_registered_model_alias(model_name, CHAMPION, v3)

    dep.step_check = someone_else_promotes
    with pytest.raises(AliasConflictError, match="another promotion"):
        dep.deploy(DeployRequest(model_name, v2, strategy="canary", canary_steps=(0.5,), step_seconds=0.5,
                                 validate=False))  # fmt: skip
    assert alias_version(mlflow_client, model_name, CHAMPION) == v3
    assert dep.status()["config"]["routes"] == [{"version": v1, "weight": 1.0}]
    assert _served_by(dep.status()["endpoint"], records, 3) == {v1}


def test_retry_of_an_interrupted_deploy_starts_from_what_the_first_try_saw(
    two_versions, deployers, records, mlflow_client, model_name
):
    """The first try died mid-canary (its record says in_progress, the gateway is left in canary): the
    retry plans from the champion and routing the first try recorded, and finishes the promotion."""
    v1, v2 = two_versions
    dep = deployers("bc")
    first = dep.deploy(DeployRequest(model_name, v1, validate=False))
    state, rev = dep.records.load("bc")
    half_done = {"model_name": model_name, "strategy": "canary", "champion": v1,
                 "routes": [{"version": v1, "weight": 0.9}, {"version": v2, "weight": 0.1}]}  # fmt: skip
    GatewayClient(first.endpoint, dep.store.local_token("bc")).put_deployment(half_done)
    state.op = Operation(id="dag/run/deploy", action="deploy", version=v2, strategy="canary",
                         expected_champion=v1, previous_config=state.config, stage=0,
                         lease_until=time.time() + 600)  # fmt: skip
    state.config = DeploymentConfig.parse(half_done)
    dep.records.save(state, "bc", rev)

    seen: list[dict] = []
    dep.step_check = lambda endpoint, cfg, new: seen.append(cfg.to_dict())
    out = dep.deploy(DeployRequest(model_name, v2, strategy="canary", canary_steps=(0.5,), step_seconds=0.5,
                                   validate=False, op_id="dag/run/deploy"))  # fmt: skip
    assert seen[0]["routes"] == [{"version": v1, "weight": 0.5}, {"version": v2, "weight": 0.5}]
    assert out.promoted and out.served_versions == [v2]
    assert alias_version(mlflow_client, model_name, CHAMPION) == v2
    # Rollback goes to the routing from before the interrupted try, not to its half-done canary.
    back = dep.rollback(model_name)
    assert back.served_versions == [v1] and back.strategy == "replace"
    assert _served_by(back.endpoint, records, 3) == {v1}


def test_held_canary_then_promote_or_roll_back(two_versions, deployers, records, mlflow_client, model_name):
    """``promote=False`` keeps the canary at its last step so that an online gate can judge it."""
    v1, v2 = two_versions
    dep = deployers("bc")
    dep.deploy(DeployRequest(model_name, v1, validate=False, op_id="first"))
    held = dep.deploy(
        DeployRequest(
            model_name,
            v2,
            strategy="canary",
            canary_steps=(0.3,),
            step_seconds=0,
            promote=False,
            validate=False,
            op_id="canary",
        )  # fmt: skip
    )
    assert not held.promoted and held.weights == {v1: 0.7, v2: 0.3} and held.champion == v1
    assert alias_version(mlflow_client, model_name, CHAMPION) == v1
    assert _served_by(held.endpoint, records, 40) == {v1, v2}
    # The gate failed: roll back to the routing from before the canary; the champion never moved.
    back = dep.rollback(model_name, op_id="rb")
    assert back.served_versions == [v1] and alias_version(mlflow_client, model_name, CHAMPION) == v1
    # Canary again, and this time the gate passed: promote the held version.
    dep.deploy(DeployRequest(model_name, v2, strategy="canary", canary_steps=(0.3,), step_seconds=0,
                             promote=False, validate=False, op_id="canary-2"))  # fmt: skip
    promoted = dep.deploy(DeployRequest(model_name, v2, strategy="replace", validate=False, op_id="promote"))
    assert promoted.promoted and promoted.served_versions == [v2]
    assert alias_version(mlflow_client, model_name, CHAMPION) == v2
    # A later rollback returns to v1 alone (what served before the canary), not to the canary split.
    final = dep.rollback(model_name, op_id="rb-2")
    assert final.served_versions == [v1] and alias_version(mlflow_client, model_name, CHAMPION) == v1
