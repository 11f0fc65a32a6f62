"""Gateway faults against real parts: a real gateway process scoring a big batch with a heavy model, and
the registry loader against the real MLflow server of the test session."""

from __future__ import annotations

import os
import threading
import time
import uuid

import pytest

from airflow_mlops.core.tracking import MlflowTarget
from airflow_mlops.serving.client import GatewayClient
from airflow_mlops.serving.models import ModelLoader
from tests.servers import start_gateway, stop


@pytest.fixture(scope="module")
def forest(mlflow_server: str) -> tuple[str, str]:
    """A registered 400-tree random forest on breast_cancer: scoring 10,000 rows takes a second or more."""
    from sklearn.datasets import load_breast_cancer

    from airflow_mlops.core.model_logging import DatasetInfo, ensure_experiment, log_model_run
    from airflow_mlops.core.training import Candidate, train_model

    frame = load_breast_cancer(as_frame=True).frame
    name = f"gateway-forest-{uuid.uuid4().hex[:6]}"
    outcome = train_model(
        frame,
        "target",
        [Candidate("sklearn.ensemble.RandomForestClassifier", {"n_estimators": 400, "n_jobs": 1})],
    )
    with MlflowTarget(mlflow_server).activate():
        eid = ensure_experiment(f"tests-{name}")
        info = log_model_run(
            outcome, model_name=name, experiment_id=eid, dataset=DatasetInfo(frame, "/data/bc.csv")
        )
    return name, info["version"]


def test_health_answers_while_a_10000_row_predict_is_scored(mlflow_server, forest, tmp_path):
    """A real gateway process scores 10,000 rows with a 400-tree forest while /health is polled: every
    /health answers within a second, well before the predict is done (before: the predict held the event
    loop, and /health waited for the whole batch, past the container healthcheck's timeout)."""
    from sklearn.datasets import load_breast_cancer

    name, version = forest
    config = {"model_name": name, "strategy": "single", "routes": [{"version": version}]}
    proc, url = start_gateway(tmp_path, mlflow_server, config, extra_args=("--max-rows", "10000"))
    records = load_breast_cancer(as_frame=True).frame.drop(columns="target").to_dict(orient="records")
    rows = (records * 18)[:10_000]
    try:
        with GatewayClient(url, timeout=120) as c, GatewayClient(url, timeout=30) as probe:
            done: dict = {}

            def big() -> None:
                t0 = time.monotonic()
                done["answer"] = c.predict(rows)
                done["seconds"] = time.monotonic() - t0

            sender = threading.Thread(target=big)
            sender.start()
            latencies = []
            while sender.is_alive():
                t0 = time.monotonic()
                assert probe.health()["status"] == "ok"
                latencies.append(time.monotonic() - t0)
                time.sleep(0.05)
            sender.join()
    finally:
        stop(proc)
    assert len(done["answer"]["predictions"]) == 10_000
    assert len(latencies) >= 3, f"the predict took {done['seconds']:.2f}s: too short to show anything"
    assert max(latencies) < 1.0 and max(latencies) < done["seconds"] / 2, (max(latencies), done["seconds"])


def test_the_gateway_loader_never_touches_os_environ(mlflow_server, forest, monkeypatch):
    """The gateway's loader (``process_env=True``) resolves and loads a version from the real MLflow
    server without writing to ``os.environ`` (shared by every request the process serves); the
    reachability probe of a dead server fails within seconds, naming it and the fix."""
    name, version = forest

    class Recording(os._Environ):  # type: ignore[name-defined]
        writes: list[str] = []

        def __setitem__(self, key: str, value: str) -> None:
            self.writes.append(key)
            super().__setitem__(key, value)

        def __delitem__(self, key: str) -> None:
            self.writes.append(key)
            super().__delitem__(key)

    from mlflow.tracking._model_registry import utils as reg_utils
    from mlflow.tracking._tracking_service import utils as trk_utils

    # The loader sets MLflow's process-wide URIs once, as the gateway process wants: undone after the test.
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.setenv(var, os.environ.get(var, ""))
        monkeypatch.delenv(var)
    monkeypatch.setattr(trk_utils, "_tracking_uri", trk_utils._tracking_uri)
    monkeypatch.setattr(reg_utils, "_registry_uri", reg_utils._registry_uri)
    env = os.environ
    recording = Recording(env._data, env.encodekey, env.decodekey, env.encodevalue, env.decodevalue)
    loader = ModelLoader(MlflowTarget(mlflow_server), process_env=True)
    try:
        os.environ = recording  # noqa: B003 - records writes; restored below
        loader.check()
        assert loader.resolve(name, version) == version
        model = loader.load(name, version)
    finally:
        os.environ = env  # noqa: B003 - the real mapping again
    assert model.version == version and model.is_classifier
    assert Recording.writes == [], Recording.writes

    dead = ModelLoader(MlflowTarget("http://127.0.0.1:9"), process_env=True)
    t0 = time.monotonic()
    with pytest.raises(Exception, match=r"MLflow at http://127\.0\.0\.1:9 is unreachable.*--tracking-uri"):
        dead.check()
    assert time.monotonic() - t0 < 15
