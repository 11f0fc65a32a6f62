"""Gateway faults in-process: a big predict off the event loop, a stuck model load, failing log writes.

Starlette's TestClient runs the app's lifespan, threads and event loop for real; models are real fitted
pipelines handed over by an in-memory loader (loading from a real MLflow server, and the uvicorn
process, are covered in tests/integration/serving).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from starlette.testclient import TestClient

from airflow_mlops.core import prediction_log as contract
from airflow_mlops.core.errors import MlopsServiceError
from airflow_mlops.serving.app import GatewaySettings, create_app
from airflow_mlops.serving.client import parse_metrics
from airflow_mlops.serving.config import DeploymentConfig
from airflow_mlops.serving.feedback_log import FeedbackLogWriter
from airflow_mlops.serving.models import Batch, LoadedModel
from airflow_mlops.serving.prediction_writer import PredictionLogWriter

pytestmark = [
    pytest.mark.filterwarnings("ignore:X does not have valid feature names"),
    pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`"),
]
ADMIN = "faults-admin-token"
FEEDBACK = "faults-feedback-token"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


def _single(version: str) -> dict:
    return {"model_name": "bc", "strategy": "single", "routes": [{"version": version}]}


@contextlib.contextmanager
def _gateway(models: dict, config: dict | None = None, load_model=None, probe=None, **settings) -> Iterator:
    opts = {"admin_token": ADMIN, "feedback_token": FEEDBACK, **settings}
    app = create_app(
        GatewaySettings(**opts),
        config=DeploymentConfig.parse(config) if config else None,
        load_model=load_model or (lambda name, v: models[v]),
        resolve=lambda name, ref: ref,
        probe=probe,
    )
    with TestClient(app, headers={"Authorization": f"Bearer {FEEDBACK}"}) as client:
        if config:
            deadline = time.monotonic() + 30
            while client.get("/ready").status_code != 200:
                assert time.monotonic() < deadline, client.get("/ready").json()
                time.sleep(0.02)
        yield client


def _metric(client: TestClient, name: str, **labels: str) -> float:
    want = frozenset(labels.items())
    return sum(
        v for (n, lab), v in parse_metrics(client.get("/metrics").text).items() if n == name and want <= lab
    )


def _slow(X):  # a FunctionTransformer step
    if len(X) >= 1500:
        time.sleep(1.5)  # a heavy model: sleeping releases the interpreter as numpy/BLAS work does
    return X


@pytest.fixture(scope="module")
def slow_model(bc_frame) -> LoadedModel:
    """A real fitted pipeline with a step that takes 1.5 s on big batches (it stands for a heavy model)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    X, y = bc_frame.drop(columns="target"), bc_frame["target"]
    pipe = make_pipeline(FunctionTransformer(_slow), StandardScaler(), LogisticRegression()).fit(X, y)
    return LoadedModel(name="bc", version="1", estimator=pipe, columns=())


def test_a_big_predict_runs_off_the_event_loop(slow_model, bc_records):
    """While a 2,000-row predict is being scored, /health and small predicts still answer at once
    (before: the scoring held the event loop and /health waited for it)."""
    rows = (bc_records * 4)[:2000]
    with _gateway({"1": slow_model}, _single("1"), offload_rows=1000) as c:
        big: dict = {}

        def send() -> None:
            t0 = time.monotonic()
            big["response"] = c.post("/predict", json={"inputs": rows})
            big["seconds"] = time.monotonic() - t0

        sender = threading.Thread(target=send)
        sender.start()
        time.sleep(0.5)  # the batch is being scored now
        t0 = time.monotonic()
        assert c.get("/health").status_code == 200
        health_seconds = time.monotonic() - t0
        small = c.post("/predict", json={"inputs": bc_records[0]})
        still_scoring = sender.is_alive()
        sender.join()
    assert small.status_code == 200
    assert still_scoring, "the big predict finished before /health was asked: the test proves nothing"
    assert health_seconds < 0.5, f"/health took {health_seconds:.2f}s while a big predict ran"
    assert big["response"].status_code == 200 and len(big["response"].json()["predictions"]) == 2000
    assert big["seconds"] >= 1.5


def test_a_stuck_load_neither_blocks_serving_nor_the_next_change(bc_models, bc_records):
    """A deployment change whose model load hangs (say, MLflow stopped answering mid-download): the
    current deployment keeps serving, a second change is refused with 409 within the wait bound, the
    stuck change fails with 503 naming the fix after the load timeout, nothing changes, and the
    abandoned load is never swapped in when it finally returns."""
    release = threading.Event()

    def load_model(name: str, version: str) -> LoadedModel:
        if version == "2":
            release.wait(30)
        return bc_models[version]

    with _gateway(
        bc_models, _single("1"), load_model=load_model, load_timeout=1.5, put_wait_seconds=0.3
    ) as c:
        first: dict = {}

        def put() -> None:
            t0 = time.monotonic()
            first["response"] = c.put("/admin/deployment", json=_single("2"), headers=AUTH)
            first["seconds"] = time.monotonic() - t0

        putter = threading.Thread(target=put)
        putter.start()
        time.sleep(0.3)
        for record in bc_records[:5]:
            r = c.post("/predict", json={"inputs": record})
            assert r.status_code == 200 and r.json()["model_version"] == "1"
        t0 = time.monotonic()
        second = c.put("/admin/deployment", json=_single("1"), headers=AUTH)
        second_seconds = time.monotonic() - t0
        putter.join()
        assert second.status_code == 409 and second_seconds < 2, (second.status_code, second_seconds)
        assert "still loading" in second.json()["detail"] and "retry" in second.json()["detail"]
        assert first["response"].status_code == 503 and first["seconds"] < 5
        detail = first["response"].json()["detail"]
        assert "did not finish within 1.5 s" in detail and "--load-timeout" in detail
        assert "not changed" in detail
        assert c.get("/admin/deployment", headers=AUTH).json()["routes"][0]["version"] == "1"
        release.set()
        time.sleep(0.3)  # the abandoned load returns now: it must not be swapped in
        assert c.post("/predict", json={"inputs": bc_records[0]}).json()["model_version"] == "1"
        ok = c.put("/admin/deployment", json=_single("2"), headers=AUTH)
        assert ok.status_code == 200 and ok.json()["routes"][0]["version"] == "2"


def test_an_unreachable_model_store_fails_the_change_at_once(bc_models, bc_records):
    """The reachability probe runs before any load: a dead MLflow is a 503 naming it, in well under a second."""

    def probe() -> None:
        raise MlopsServiceError("MLflow at http://127.0.0.1:9 is unreachable: start the server.")

    loads: list[str] = []
    with _gateway(bc_models, None, load_model=lambda n, v: loads.append(v) or bc_models[v], probe=probe) as c:
        t0 = time.monotonic()
        r = c.put("/admin/deployment", json=_single("1"), headers=AUTH)
        assert r.status_code == 503 and time.monotonic() - t0 < 1
        assert "MLflow at http://127.0.0.1:9 is unreachable" in r.json()["detail"] and not loads
        assert c.get("/ready").status_code == 503


def test_a_state_file_that_cannot_be_written_changes_nothing(bc_models, bc_records, tmp_path):
    """Saving the state comes before the swap: a state path whose parent is a file gives 503 and the
    deployment stays as it was (before, the swap happened and the PUT answered 500)."""
    blocker = tmp_path / "state-dir"
    blocker.write_text("a file where a folder is expected")
    with _gateway(bc_models, _single("1"), state_file=str(blocker / "deployment.json")) as c:
        r = c.put("/admin/deployment", json=_single("2"), headers=AUTH)
        assert r.status_code == 503, r.text
        assert (
            "Cannot save the gateway state file" in r.json()["detail"]
            and "--state-file" in r.json()["detail"]
        )
        assert c.post("/predict", json={"inputs": bc_records[0]}).json()["model_version"] == "1"


# --- logs on a failing disk ------------------------------------------------------------------------


def _numeric(n: int) -> Batch:
    return Batch(["a", "b"], n, matrix=np.arange(2.0 * n).reshape(n, 2))


@contextlib.contextmanager
def _tiny_disk(path: Path, size: str = "256k") -> Iterator[Path]:
    """A real tmpfs of ``size`` at ``path`` (root only); skips where mounting is not allowed."""
    path.mkdir(parents=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({done.stderr.decode().strip()}): the file-blocker test covers it"
        )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _wait(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_logs_on_a_full_disk_keep_their_rows_and_write_them_once_it_recovers(tmp_path):
    """Injected: a real 256 KiB tmpfs filled to the last byte (ENOSPC on every write). Both logs keep
    their rows, count each failed write, leave no half file behind, and write every row once the disk
    has room again (before: the feedback batch was gone after the first failure, and the prediction
    log lost its tables and never lowered its held-rows count)."""
    disk = tmp_path / "disk"
    with _tiny_disk(disk):
        filler = disk / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        with contextlib.suppress(OSError):  # ENOSPC: the disk is full
            while True:
                os.write(fd, b"\0" * 4096)
        os.close(fd)
        errors = {"predictions": 0, "feedback": 0}
        preds = PredictionLogWriter(disk / "log", flush_seconds=0.1, compact_seconds=0.05)
        preds.on_error = lambda: errors.__setitem__("predictions", errors["predictions"] + 1)
        labels = FeedbackLogWriter(disk / "log", flush_seconds=0.1)
        labels.on_error = lambda: errors.__setitem__("feedback", errors["feedback"] + 1)
        for i in range(5):
            preds.add("bc", "1", f"r{i}", _numeric(3), np.zeros(3, dtype=int))
            labels.add("bc", f"r{i}", [0, 1, 0])
        _wait(lambda: errors["predictions"] >= 2 and errors["feedback"] >= 2)  # retried, still failing
        assert preds.held_rows == 15 and labels.held_rows == 15
        assert preds.rows_dropped == 0 and labels.rows_dropped == 0
        assert not [p for p in (disk / "log").rglob("*") if p.is_file()]  # no half-written file
        filler.unlink()  # the disk recovers
        _wait(lambda: preds.held_rows == 0 and labels.held_rows == 0)
        preds.close()
        labels.close()
        written = [pq.read_table(f) for f in (disk / "log" / "bc").rglob("*.parquet")]
        ids = sorted(
            r
            for t in written
            if contract.PREDICTION in t.column_names
            for r in t.column(contract.REQUEST_ID).to_pylist()
        )
        assert ids == sorted(f"r{i}" for i in range(5) for _ in range(3))
        assert sum(t.num_rows for t in written if contract.LABEL in t.column_names) == 15


def test_the_gateway_counts_log_errors_and_drops_and_recovers(bc_models, bc_records, bc_frame, tmp_path):
    """Injected: the model's log folder is a file where a directory is expected (every write fails with
    an OSError, even for root). /metrics counts the failed writes of both logs and the rows dropped once
    more than ``log_max_held_rows`` wait; the oldest go, the newest are written when the folder is fixed."""
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    (log_dir / "bc").write_text("not a folder")
    y = bc_frame["target"].tolist()
    with _gateway(
        bc_models, _single("1"), log_dir=str(log_dir), log_flush_seconds=0.1, log_max_held_rows=4
    ) as c:
        for i in range(6):
            rid = c.post("/predict", json={"inputs": bc_records[i]}).json()["request_id"]
            assert c.post("/feedback", json={"request_id": rid, "label": y[i]}).status_code == 200
        _wait(lambda: _metric(c, "mlops_gateway_log_write_errors_total", log="predictions") >= 1
              and _metric(c, "mlops_gateway_log_write_errors_total", log="feedback") >= 1)  # fmt: skip
        assert _metric(c, "mlops_gateway_log_dropped_rows_total", log="predictions") == 2
        assert _metric(c, "mlops_gateway_log_dropped_rows_total", log="feedback") == 2
        assert _metric(c, "mlops_gateway_log_held_rows", log="predictions") == 4
        (log_dir / "bc").unlink()  # fixed
        _wait(lambda: _metric(c, "mlops_gateway_log_held_rows", log="predictions") == 0
              and _metric(c, "mlops_gateway_log_held_rows", log="feedback") == 0)  # fmt: skip
    predicted = [pq.read_table(f) for f in (log_dir / "bc").glob("date=*/*.parquet")]
    assert sum(t.num_rows for t in predicted) == 4  # the 4 newest; the 2 oldest were dropped and counted
    labelled = [pq.read_table(f) for f in (log_dir / "bc" / "feedback").rglob("*.parquet")]
    assert sum(t.num_rows for t in labelled) == 4


def test_the_writer_thread_survives_rows_that_can_never_be_written(tmp_path):
    """A request whose rows cannot become a table (its matrix lacks a named column) is dropped and
    counted; the thread lives on and writes the requests around it (before: any error other than
    OSError ended the thread, and memory grew without bound)."""
    w = PredictionLogWriter(tmp_path, flush_seconds=0.1, compact_seconds=0.05)
    w.add("bc", "1", "good-1", _numeric(2), np.zeros(2))
    w.add("bc", "1", "poison", Batch(["a", "b"], 2, matrix=np.zeros((2, 1))), np.zeros(2))
    w.add("bc", "1", "good-2", _numeric(2), np.zeros(2))
    _wait(lambda: w.rows_written == 4)
    assert w.rows_dropped == 2 and w.write_errors == 1 and w._thread.is_alive()
    w.add("bc", "1", "good-3", _numeric(1), np.zeros(1))
    _wait(lambda: w.rows_written == 5)
    w.close()
    ids = {
        r
        for f in tmp_path.rglob("*.parquet")
        for r in pq.read_table(f).column(contract.REQUEST_ID).to_pylist()
    }
    assert ids == {"good-1", "good-2", "good-3"}


def test_feedback_labels_of_mixed_types_are_written_as_text(tmp_path):
    """Labels pyarrow cannot put in one column (a number and a text) are written as text, not retried forever."""
    w = FeedbackLogWriter(tmp_path, flush_seconds=3600)
    w.add("m", "r1", [1, "two"])
    w.close()
    (f,) = tmp_path.rglob("*.parquet")
    assert pq.read_table(f).column(contract.LABEL).to_pylist() == ["1", "two"] and w.rows_dropped == 0
