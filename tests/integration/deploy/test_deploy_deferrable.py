"""DeployOperator with deferrable=True in DAG runs: dag.test() runs the DeployStepTrigger inline, against
a real gateway subprocess, a real MLflow server and real models. Nothing is mocked."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from airflow_mlops.core.registry import CHAMPION, alias_version
from airflow_mlops.core.tracking import MlflowTarget
from airflow_mlops.deploy import ledger
from airflow_mlops.serving.client import GatewayClient
from tests.conftest import run_dag

pytestmark = pytest.mark.timeout(600)


def _ti(dr):
    return next(t for t in dr.get_task_instances() if t.task_id == "deploy")


@pytest.fixture
def deployment(tmp_path, mlflow_server, model_name):
    """The test's work folder; the gateway the DAG runs start is stopped afterwards."""
    from airflow_mlops.deploy.backends import LocalBackend
    from airflow_mlops.deploy.rollout import Deployer
    from airflow_mlops.deploy.state import StateStore

    state_dir = tmp_path / "state"
    yield str(state_dir)
    Deployer(model_name, LocalBackend(), MlflowTarget(mlflow_server), StateStore(state_dir)).teardown()


def test_canary_steps_wait_in_the_trigger_then_promote(
    airflow_db, mlflow_conn, mlflow_client, two_versions, records, model_name, deployment
):
    v1, v2 = two_versions
    common = {"model_name": model_name, "state_dir": deployment, "validate": False}
    dr = run_dag("test_deploy_deferrable", version=v1, **common)
    assert dr.state == "success"
    dr = run_dag("test_deploy_deferrable", version=v2, strategy="canary", canary_steps=[0.2, 0.5],
                 step_seconds=1, **common)  # fmt: skip
    assert dr.state == "success"
    out = _ti(dr).xcom_pull(task_ids="deploy")
    # Two canary steps and the final routing: each held stage was a deferral, none slept in the worker.
    assert out["deferred_stages"] == 3
    assert out["served_versions"] == [v2] and out["promoted"] and out["champion"] == v2
    assert alias_version(mlflow_client, model_name, CHAMPION) == v2
    with GatewayClient(out["endpoint"]) as api:
        assert api.predict(records[0])["model_version"] == v2
    assert [h["action"] for h in ledger.read_history(mlflow_client, model_name)] == ["promote", "promote"]


def test_gateway_killed_during_a_deferred_step_is_rolled_back(
    airflow_db, mlflow_conn, mlflow_client, two_versions, records, model_name, deployment
):
    """The trigger sees the gateway stop answering (a connection error), the task resumes, restores
    the champion's routing on a new gateway and fails; @champion never moved."""
    from airflow_mlops.deploy.state import DeploymentRecords

    v1, v2 = two_versions
    common = {"model_name": model_name, "state_dir": deployment, "validate": False}
    dr = run_dag("test_deploy_deferrable", version=v1, **common)
    first = _ti(dr).xcom_pull(task_ids="deploy")
    records_ = DeploymentRecords(MlflowTarget(mlflow_conn))

    def kill_during_canary() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state, _ = records_.load(model_name)
            if state and state.config and state.config.strategy == "canary":
                time.sleep(1)
                os.killpg(first["handle"]["pid"], signal.SIGKILL)
                return
            time.sleep(0.3)

    killer = threading.Thread(target=kill_during_canary)
    killer.start()
    dr = run_dag("test_deploy_deferrable", version=v2, strategy="canary", step_seconds=30, **common)
    killer.join()
    assert dr.state == "failed"
    state, _ = records_.load(model_name)
    assert (
        state.config.to_dict()["routes"] == [{"version": v1, "weight": 1.0}]
        and state.op.status == "rolled_back"
    )
    assert state.handle["pid"] != first["handle"]["pid"]
    with GatewayClient(first["endpoint"]) as api:
        assert api.predict(records[0])["model_version"] == v1
    assert alias_version(mlflow_client, model_name, CHAMPION) == v1
    entry = ledger.read_history(mlflow_client, model_name)[-1]
    assert entry["action"] == "rollback_auto" and "did not answer" in entry["reason"]
