"""MlflowTarget: the embedded SQLite store is created once, safely, by whichever process comes first;
``client()`` changes no process-wide state. Real processes, real MLflow SQLite stores; nothing mocked."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tests.conftest import REPO_ROOT

# Each process imports MLflow first (slow), then all start creating the same fresh store at one instant.
_CREATE = """
import sys, time
from airflow_mlops.core.tracking import MlflowTarget
import mlflow.store.tracking.sqlalchemy_store, mlflow.store.model_registry.sqlalchemy_store
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.005)
client = MlflowTarget(sys.argv[1]).client()
client.search_experiments(max_results=1)
client.search_registered_models(max_results=1)
print("OK")
"""


def test_parallel_processes_create_one_fresh_sqlite_store(tmp_path):
    """Without the lock, 5 of 6 such processes failed (``Online migration expected to match one row``,
    ``table ... already exists``)."""
    db = tmp_path / "store" / "mlflow.db"
    uri = f"sqlite:///{db}"
    start = time.time() + 10.0  # after every process has imported MLflow
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CREATE, uri, str(start)],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        for _ in range(5)
    ]
    # Five interpreters importing MLflow at once took over 120 s on a loaded 2-core CI machine.
    outs = [p.communicate(timeout=600) for p in procs]
    failures = [
        err[-1500:] for (out, err), p in zip(outs, procs, strict=True) if p.returncode != 0 or "OK" not in out
    ]
    assert not failures, failures[0]
    assert db.exists() and (db.parent / "mlflow.db.lock").exists()


def test_client_leaves_the_environment_and_mlflow_globals_alone(monkeypatch):
    import mlflow

    from airflow_mlops.core.tracking import MlflowTarget

    for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    env_before, uri_before = dict(os.environ), mlflow.get_tracking_uri()
    target = MlflowTarget("http://127.0.0.1:9", username="u", password="secret")
    client = target.client()
    assert dict(os.environ) == env_before and mlflow.get_tracking_uri() == uri_before
    creds = client._tracking_client.store.get_host_creds()
    assert (creds.host, creds.username, creds.password) == ("http://127.0.0.1:9", "u", "secret")
    reg = client._get_registry_client().store.get_host_creds()
    assert (reg.username, reg.password, reg.token) == ("u", "secret", None)
    token = MlflowTarget("http://127.0.0.1:9", token="tok").client()
    assert token._tracking_client.store.get_host_creds().token == "tok"
