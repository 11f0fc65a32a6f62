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
    assert (
        "mlops://retrain/" in str(retrain.timetable.summary) or retrain.timetable.asset_condition is not None
    )


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
    assert proc.returncode == 0, output[-5000:]
    assert "Champion history" in proc.stdout and "Airflow queued mlops_retrain" in proc.stdout

    from mlflow import MlflowClient

    from airflow_mlops.deploy.ledger import read_history

    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    versions = {mv.version: mv for mv in client.search_model_versions(f"name='{model_name}'")}
    assert set(versions) == {"1", "2"}
    assert client.get_registered_model(model_name).aliases["champion"] == "2"
    assert [(h["action"], h["version"]) for h in read_history(client, model_name)] == [
        ("promote", "1"),
        ("deploy", "2"),  # the canary, held for the online gate
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
    from airflow_mlops.triggers.drift import REPORT_JSON

    with open(client.download_artifacts(runs[0].info.run_id, REPORT_JSON)) as f:
        assert json.load(f)["drift_detected"] is True
