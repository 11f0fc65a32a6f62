"""The embedded demo: the model lifecycle on this machine, no Docker, through real Airflow DAG runs.

Everything it makes lives in ``.mlops/`` (git-ignored): a SQLite Airflow database, a local MLflow store,
a git+DVC data repository with a local remote, and the logs.

Run: ``bash scripts/demo.sh`` (sets up, then runs this file with the project's virtualenv).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = Path(os.environ.get("MLOPS_DEMO_DIR", ROOT / ".mlops")).resolve()
MODEL = "breast_cancer"


def configure_environment() -> dict[str, str]:
    """Point Airflow and the connections at the embedded stores (before Airflow is imported)."""
    mlflow_dir = WORK / "mlflow"
    env = {
        "AIRFLOW_HOME": str(WORK / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps(
            {
                "conn_type": "mlflow",
                "host": f"sqlite:///{mlflow_dir / 'mlflow.db'}",
                "extra": {"artifact_location": str(mlflow_dir / "artifacts")},
            }
        ),
        "AIRFLOW_CONN_DVC_DEFAULT": json.dumps(
            {"conn_type": "dvc", "host": str(WORK / "data-repo"), "extra": {"remote": "local"}}
        ),
        "GIT_PYTHON_REFRESH": "quiet",
        "DVC_NO_ANALYTICS": "1",
    }
    os.environ.update(env)
    return env


def run(cmd: list[str], cwd: Path | None = None) -> str:
    return subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def make_data_repo() -> None:
    """A git+DVC repository holding the first training data (breast_cancer), pushed to a local remote."""
    from sklearn.datasets import load_breast_cancer

    repo, remote = WORK / "data-repo", WORK / "dvc-remote"
    repo.mkdir(parents=True)
    remote.mkdir(parents=True, exist_ok=True)
    run(["git", "init", "-q", "-b", "main"], repo)
    run(["git", "config", "user.email", "demo@airflow-mlops.local"], repo)
    run(["git", "config", "user.name", "airflow-mlops demo"], repo)
    run([sys.executable, "-m", "dvc", "init", "-q"], repo)
    run([sys.executable, "-m", "dvc", "remote", "add", "-d", "local", str(remote)], repo)
    (repo / "data").mkdir()
    load_breast_cancer(as_frame=True).frame.to_csv(repo / "data" / "training.csv", index=False)
    run([sys.executable, "-m", "dvc", "add", "-q", "data/training.csv"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "training data v1"], repo)
    run([sys.executable, "-m", "dvc", "push", "-q"], repo)


def run_dag(dag_id: str, **conf: object) -> str:
    """Run one DAG through Airflow (``dag.test()``) and return its final state."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    started = time.monotonic()
    dr = bag.dags[dag_id].test(run_conf=conf or None)
    print(f"  DAG {dag_id}: {dr.state} in {time.monotonic() - started:.0f}s")
    return str(dr.state)


def summary() -> None:
    """Print the model versions with their metrics and aliases, and where everything is."""
    from mlflow import MlflowClient

    uri = json.loads(os.environ["AIRFLOW_CONN_MLFLOW_DEFAULT"])["host"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    aliases = client.get_registered_model(MODEL).aliases
    print(f"\nModel {MODEL}:")
    print(f"  {'version':>7}  {'f1':>6}  {'accuracy':>8}  {'roc_auc':>7}  aliases")
    for mv in sorted(client.search_model_versions(f"name='{MODEL}'"), key=lambda m: int(m.version)):
        m = client.get_run(mv.run_id).data.metrics
        names = ",".join(a for a, v in aliases.items() if str(v) == str(mv.version)) or "-"
        print(f"  {mv.version:>7}  {m.get('f1', 0):6.3f}  {m.get('accuracy', 0):8.3f}  {m.get('roc_auc', 0):7.3f}  {names}")
    print(f"\nMLflow store: {uri}")
    print(f"Open the MLflow UI: .venv/bin/mlflow ui --backend-store-uri {uri} --port 5000")
    print(f"DVC data repository: {WORK / 'data-repo'}; Airflow home and task logs: {WORK / 'airflow'}")


def main() -> None:
    started = time.monotonic()
    if WORK.exists():
        shutil.rmtree(WORK)  # every demo starts from nothing
    WORK.mkdir(parents=True)
    configure_environment()
    print(f"Embedded demo in {WORK}")
    make_data_repo()
    run(["airflow", "db", "migrate"]) if shutil.which("airflow") else run([sys.executable, "-m", "airflow", "db", "migrate"])
    print("1. Train a first model from DVC-tracked data and register it")
    if run_dag("mlops_train_gate_deploy") != "success":
        raise SystemExit("the training DAG failed: see the task logs above")
    summary()
    print(f"\nDemo finished in {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
