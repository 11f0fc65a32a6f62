"""The example DAGs: they load cleanly and cheaply, and the closed loop runs end to end.

The end-to-end test runs the README's demo (``scripts/demo.py``) in a subprocess against the session's
real MLflow server, with its own Airflow home, DVC repository and gateway, then checks the registry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

EXAMPLES = {"mlops_train_gate_deploy", "mlops_drift_monitor", "mlops_retrain"}
# Issue 14: the release chain with a human approval, and registry events (webhook and watcher).
EXAMPLES |= {"mlops_release_approval", "mlops_registry_webhook", "mlops_registry_watcher"}


def test_every_example_dag_loads_without_errors_or_cycles(airflow_db):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.dag_cycle_tester import check_cycle

    bag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
    assert bag.import_errors == {}
    assert set(bag.dags) == EXAMPLES
    for dag in bag.dags.values():
        check_cycle(dag)
        assert dag.tags and "example" in dag.tags
    retrain = bag.dags["mlops_retrain"]
    from airflow.timetables.assets import AssetOrTimeSchedule

    assert isinstance(retrain.timetable, AssetOrTimeSchedule)
    assert [a.uri for _key, a in retrain.timetable.asset_condition.iter_assets()] == [
        "mlops://retrain/breast_cancer"
    ]
    assert retrain.timetable.timetable.summary == "0 3 * * *"  # and nightly
    for dag in bag.dags.values():
        assert dag.catchup is False


@pytest.mark.parametrize("dag_id", ["mlops_train_gate_deploy", "mlops_retrain"])
def test_the_release_chain_is_train_gate_canary_online_gate_then_promote_or_roll_back(airflow_db, dag_id):
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO_ROOT / "dags")).dags[dag_id]
    up = {t.task_id: set(t.upstream_task_ids) for t in dag.tasks}
    assert up["offline_gate"] == {"train"} and up["deploy_canary"] == {"offline_gate"}
    assert up["online_gate"] == {"deploy_canary"}
    assert up["promote"] == {"online_gate"}  # the champion moves only after the online gate passed
    assert dag.get_task("promote").trigger_rule == "all_success"
    assert up["needs_rollback"] == {"deploy_canary", "online_gate"} and up["rollback"] == {"needs_rollback"}
    assert dag.get_task("needs_rollback").trigger_rule == "all_done"
    # Only the held canary of this run's candidate is rolled back, never a later deploy of someone else.
    rollback = dag.get_task("rollback")
    assert rollback.action == "rollback" and rollback.version == dag.get_task("online_gate").version
    assert "xcom_pull(task_ids='train')" in rollback.version
    source = (REPO_ROOT / "dags" / f"{dag_id}.py").read_text()
    assert "# [START howto_" in source and "# [END howto_" in source


class _TI:
    """Stands in for a task instance's ``xcom_pull`` (the guard reads nothing else)."""

    def __init__(self, xcoms: dict) -> None:
        self.xcoms = xcoms

    def xcom_pull(self, task_ids: str):
        return self.xcoms.get(task_ids)


@pytest.mark.parametrize(
    ("xcoms", "roll_back"),
    [
        ({}, False),  # nothing deployed (train or the offline gate failed): nothing to do
        ({"deploy_canary": {"versions": ["2"]}}, True),  # the online gate failed, errored or timed out
        ({"deploy_canary": {"versions": ["2"]}, "online_gate": {"status": "passed"}}, False),
    ],
)
def test_the_rollback_guard(airflow_db, xcoms, roll_back):
    import importlib
    import sys

    sys.path.insert(0, str(REPO_ROOT / "dags"))
    try:
        common = importlib.import_module("mlops_common")
    finally:
        sys.path.remove(str(REPO_ROOT / "dags"))
    assert common.canary_to_roll_back(_TI(xcoms)) is roll_back


def _run_example(dag_id: str, model: str, monkeypatch):
    """Run an example DAG with dag.test() for model ``model`` (the shared settings read the environment)."""
    import sys

    from tests.conftest import run_dag

    monkeypatch.setenv("MLOPS_MODEL_NAME", model)
    monkeypatch.delitem(sys.modules, "mlops_common", raising=False)
    try:
        dr = run_dag(dag_id)
        return dr, {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in dr.get_task_instances()}
    finally:
        sys.modules.pop("mlops_common", None)


@pytest.mark.parametrize("dag_id", ["mlops_retrain", "mlops_drift_monitor"])
def test_with_no_champion_the_scheduled_examples_do_nothing(
    airflow_db, mlflow_conn, model_name, dag_id, monkeypatch, caplog
):
    dr, states = _run_example(dag_id, model_name, monkeypatch)
    assert dr.state == "success", states
    assert states["champion"] == "skipped" and set(states.values()) <= {"skipped", "success"}
    assert "success" not in {s for t, s in states.items() if t not in ("needs_rollback",)}
    if "rollback" in states:
        assert (
            states["rollback"] == "skipped"
            and states["promote"] == "skipped"
            and states["train"] == "skipped"
        )


def test_failed_training_means_nothing_to_do_not_a_second_failure(
    airflow_db, mlflow_conn, model_name, tmp_path, monkeypatch
):
    from tests.conftest import conn_env

    monkeypatch.setenv(*conn_env("dvc_default", {"conn_type": "dvc", "host": str(tmp_path / "no-repo")}))
    dr, states = _run_example("mlops_train_gate_deploy", model_name, monkeypatch)
    assert states["train"] == "failed"
    assert states["needs_rollback"] == "success" and states["rollback"] == "skipped"
    failed = {t for t, s in states.items() if s == "failed"}
    assert failed == {"train"}, states


def test_parsing_the_examples_imports_no_heavy_library():
    probe = (
        "import sys, runpy; sys.path.insert(0, sys.argv[1]);"
        "[runpy.run_path(f'{sys.argv[1]}/{n}.py') for n in sys.argv[2:]];"
        "print('HEAVY:' + ','.join(m for m in ('mlflow','sklearn','pandas','dvc','docker','scipy','numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe, str(REPO_ROOT / "dags"), *sorted(EXAMPLES)],
                         capture_output=True, text=True, check=True)  # fmt: skip
    (heavy,) = [line for line in out.stdout.splitlines() if line.startswith("HEAVY:")]
    assert heavy == "HEAVY:"


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_the_closed_loop_runs_by_itself(mlflow_server, model_name, tmp_path):
    env = {
        **os.environ,
        "MLOPS_DEMO_DIR": str(tmp_path / "demo"),
        "MLOPS_DEMO_MLFLOW_URI": mlflow_server,
        "MLOPS_MODEL_NAME": model_name,
    }
    env.pop("AIRFLOW_HOME", None)  # the demo makes its own
    for key in [k for k in env if k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))]:
        env.pop(key)
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "demo.py")], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=1100)  # fmt: skip
    output = proc.stdout + proc.stderr
    log = tmp_path / "demo" / "demo.log"
    assert proc.returncode == 0, output[-3000:] + (log.read_text()[-5000:] if log.exists() else "")
    assert "Champion history" in proc.stdout and "Airflow queued mlops_retrain" in proc.stdout
    # Quiet: a line per step and the summary on the terminal; DVC, MLflow and Airflow details in the log.
    assert len(output.splitlines()) < 40, output
    assert f"in the log: {log}" in proc.stdout.splitlines()[0] and log.stat().st_size > len(output)
    assert "Downloading artifacts" not in output and "dvc add" not in output.lower()

    from mlflow import MlflowClient

    from airflow_mlops.deploy.ledger import read_history

    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    versions = {mv.version: mv for mv in client.search_model_versions(f"name='{model_name}'")}
    assert set(versions) == {"1", "2"}
    assert client.get_registered_model(model_name).aliases["champion"] == "2"
    # Every version, the first too, is held as a canary and becomes @champion only after its online gate.
    assert [(h["action"], h["version"]) for h in read_history(client, model_name)] == [
        ("deploy", "1"),
        ("promote", "1"),
        ("deploy", "2"),
        ("promote", "2"),
    ]
    v2 = client.get_model_version(model_name, "2")
    assert v2.tags["mlops.gate.offline"] == "passed" and v2.tags["mlops.gate.online"] == "passed"
    assert v2.tags["mlops.airflow.dag_id"] == "mlops_retrain"
    # v2 learned from the labelled production traffic: its data revision is a new DVC snapshot.
    v1_run, v2_run = client.get_run(versions["1"].run_id), client.get_run(v2.run_id)
    assert v2_run.data.tags["mlops.dvc.commit"] != v1_run.data.tags["mlops.dvc.commit"]
    assert int(v2_run.data.params["n_train_rows"]) > int(v1_run.data.params["n_train_rows"])
    log = subprocess.run(["git", "log", "--format=%s"], cwd=tmp_path / "demo" / "data-repo",
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "labelled production rows" in log.splitlines()[0]
    _assert_judged_only_on_rows_never_trained_on(tmp_path / "demo", model_name, client, versions)
    # The drift report of the check that started it all is in MLflow.
    drift_exp = client.get_experiment_by_name("mlops-drift")
    runs = client.search_runs(
        [drift_exp.experiment_id], filter_string=f"tags.`mlops.model_name` = '{model_name}'"
    )
    assert (
        runs
        and runs[0].data.tags["mlops.drift_detected"] == "true"
        and runs[0].data.metrics["drift_share"] >= 0.5
    )
    from airflow_mlops.core.drift.evaluate import REPORT_JSON

    with open(client.download_artifacts(runs[0].info.run_id, REPORT_JSON)) as f:
        assert json.load(f)["drift_detected"] is True


def _assert_judged_only_on_rows_never_trained_on(demo, model_name, client, versions) -> None:
    """Each version's training file (its DVC revision: the train and the test split) holds no row twice,
    so the splits are disjoint, and no row of it is among the requests the version served (what the
    online gate judged it on, read from the gateway's prediction log)."""
    from datetime import datetime, timezone

    from airflow_mlops.core.dvc_data import read_dvc_frame
    from airflow_mlops.core.prediction_log import MODEL_VERSION, read_window

    served = read_window(demo / "predictions", model_name, datetime(1970, 1, 1, tzinfo=timezone.utc),
                         datetime.now(timezone.utc), keep_meta=True)  # fmt: skip
    for version, mv in versions.items():
        commit = client.get_run(mv.run_id).data.tags["mlops.dvc.commit"]
        trained, _ = read_dvc_frame(str(demo / "data-repo"), "data/training.csv", rev=commit)
        features = [c for c in trained.columns if c != "target"]
        assert not trained[features].round(6).duplicated().any(), f"v{version}: a row is in both splits"
        judged = served[served[MODEL_VERSION].astype(str) == str(version)]
        assert len(judged) >= 40, f"v{version} served {len(judged)} requests"
        rows = set(map(tuple, trained[features].round(6).itertuples(index=False)))
        seen = [r for r in map(tuple, judged[features].round(6).itertuples(index=False)) if r in rows]
        assert not seen, f"v{version} was judged on {len(seen)} rows it trained on"
