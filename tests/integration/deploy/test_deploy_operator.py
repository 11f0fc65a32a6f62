"""DeployOperator in a DAG run (dag.test()): real MLflow server, real gateway subprocess, real models."""

from __future__ import annotations

import time

import pytest

from airflow_mlops.core.registry import CHAMPION, alias_version
from airflow_mlops.deploy import ledger
from airflow_mlops.serving.client import GatewayClient
from tests.conftest import load_dag, run_dag

pytestmark = pytest.mark.timeout(600)


def _xcom(dr) -> dict:
    ti = next(t for t in dr.get_task_instances() if t.task_id == "deploy")
    return ti.xcom_pull(task_ids="deploy")


@pytest.fixture
def teardown_state(tmp_path, mlflow_server, model_name):
    """Stop the gateway the DAG runs started (the deployment is named after the model)."""
    state_dir = tmp_path / "state"
    yield str(state_dir)
    from airflow_mlops.core.tracking import MlflowTarget
    from airflow_mlops.deploy.backends import LocalBackend
    from airflow_mlops.deploy.rollout import Deployer
    from airflow_mlops.deploy.state import StateStore

    Deployer(model_name, LocalBackend(), MlflowTarget(mlflow_server), StateStore(state_dir)).teardown()


def test_deploy_by_alias_canary_then_rollback_in_dag_runs(
    airflow_db, mlflow_conn, mlflow_client, two_versions, records, model_name, teardown_state
):
    v1, v2 = two_versions
    mlflow_client.set_registered_model_alias(model_name, "candidate", v1)
    dr = run_dag("test_deploy_model", model_name=model_name, alias="candidate", state_dir=teardown_state)
    assert dr.state == "success"
    out = _xcom(dr)
    assert out["served_versions"] == [v1] and out["weights"] == {v1: 1.0} and out["promoted"]
    assert out["endpoint"].startswith("http://127.0.0.1:")
    assert "admin_token" not in str(out)  # the secret stays in the private state file
    assert GatewayClient(out["endpoint"]).predict(records[0])["model_version"] == v1

    dr = run_dag("test_deploy_model", model_name=model_name, version=v2, strategy="canary",
                 state_dir=teardown_state)  # fmt: skip
    assert dr.state == "success"
    out = _xcom(dr)
    assert out["served_versions"] == [v2] and out["champion"] == v2 and out["strategy"] == "replace"
    assert alias_version(mlflow_client, model_name, CHAMPION) == v2
    entry = ledger.read_history(mlflow_client, model_name)[-1]
    assert (
        entry["dag_run"] == f"test_deploy_model/{dr.run_id}" and entry["actor"] == "airflow:test_deploy_model"
    )

    dr = run_dag("test_deploy_model", model_name=model_name, action="rollback", state_dir=teardown_state)
    assert dr.state == "success"
    out = _xcom(dr)
    assert out["action"] == "rollback" and out["served_versions"] == [v1]
    assert alias_version(mlflow_client, model_name, CHAMPION) == v1
    assert GatewayClient(out["endpoint"]).predict(records[0])["model_version"] == v1


def test_bad_arguments_fail_the_task_and_change_nothing(
    airflow_db, mlflow_conn, mlflow_client, two_versions, model_name, teardown_state
):
    dr = run_dag("test_deploy_model", model_name=model_name, alias="nope", state_dir=teardown_state)
    assert dr.state == "failed"
    dr = run_dag("test_deploy_model", model_name=model_name, version="1", strategy="blue-green",
                 state_dir=teardown_state)  # fmt: skip
    assert dr.state == "failed"
    assert alias_version(mlflow_client, model_name, CHAMPION) is None
    from airflow_mlops.core.tracking import MlflowTarget
    from airflow_mlops.deploy.state import DeploymentRecords

    assert DeploymentRecords(MlflowTarget(mlflow_client.tracking_uri)).load(model_name) == (None, 0)


def test_dag_file_parses_without_heavy_imports(airflow_db):
    """DAG parsing stays cheap: the operator module imports no mlflow/sklearn/pandas/docker at top."""
    import subprocess
    import sys

    heavy = ("mlflow", "sklearn", "pandas", "docker", "numpy", "scipy", "pyarrow")
    code = (
        "import sys; import airflow.sdk; before = set(sys.modules); import airflow_mlops.operators.deploy; "
        f"print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in {heavy!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    out = out.strip().splitlines()[-1]
    assert out == "[]"
    t0 = time.perf_counter()
    load_dag("test_deploy_model")
    assert time.perf_counter() - t0 < 60


def test_external_gateway_gets_its_routing_from_dag_runs(
    airflow_db, mlflow_conn, mlflow_client, two_versions, records, model_name, teardown_state, tmp_path,
    monkeypatch,
):  # fmt: skip
    """backend='external': a gateway started by someone else (here: a real gateway process, as the
    docker-compose service would be), driven only through its admin API; it is never stopped by us."""
    from tests.servers import start_gateway, stop

    v1, v2 = two_versions
    proc, url = start_gateway(tmp_path / "gw", mlflow_conn, admin_token="s3cret", wait_ready=False)
    try:
        # Without the admin token the task fails with a clear error and nothing changes.
        monkeypatch.delenv("MLOPS_GATEWAY_ADMIN_TOKEN", raising=False)
        dr = run_dag("test_deploy_model", model_name=model_name, version=v1, backend="external",
                     gateway_url=url, state_dir=teardown_state)  # fmt: skip
        assert dr.state == "failed"
        assert alias_version(mlflow_client, model_name, CHAMPION) is None

        monkeypatch.setenv("MLOPS_GATEWAY_ADMIN_TOKEN", "s3cret")
        for version, strategy in ((v1, "replace"), (v2, "canary")):
            dr = run_dag("test_deploy_model", model_name=model_name, version=version, strategy=strategy,
                         backend="external", gateway_url=url, state_dir=teardown_state)  # fmt: skip
            assert dr.state == "success"
        out = _xcom(dr)
        assert out["endpoint"] == url and out["served_versions"] == [v2] and out["backend"] == "external"
        assert GatewayClient(url).predict(records[0])["model_version"] == v2
        assert alias_version(mlflow_client, model_name, CHAMPION) == v2
        dr = run_dag("test_deploy_model", model_name=model_name, action="rollback", backend="external",
                     gateway_url=url, state_dir=teardown_state)  # fmt: skip
        assert dr.state == "success"
        assert GatewayClient(url).predict(records[0])["model_version"] == v1
        assert proc.poll() is None  # still the same, externally owned process
    finally:
        stop(proc)
