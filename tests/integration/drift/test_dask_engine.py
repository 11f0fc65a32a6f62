"""engine="dask": per-file summaries computed on a real Dask cluster and merged give the single-machine
verdicts. One ``distributed.LocalCluster`` of two worker processes (one thread each) for the module;
the data are real Parquet files and a real prediction log on disk. Nothing is mocked."""

from __future__ import annotations

import socket
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.core.drift import build_profile, detect_drift
from airflow_mlops.core.drift.current import summarize_path
from airflow_mlops.core.drift.distributed import dataset_files, summarize_on_dask
from airflow_mlops.core.drift.evaluate import evaluate_drift
from airflow_mlops.core.errors import MlopsInputError, MlopsServiceError
from tests.conftest import conn_env


@pytest.fixture(scope="module")
def cluster():
    """A real two-process Dask cluster on loopback; yields its scheduler address."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, host="127.0.0.1"
    ) as c:
        yield c.scheduler_address


def _frame(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "a": rng.normal(shift, 1, n),
            "b": rng.lognormal(shift, 1, n),
            "k": rng.integers(0, 40, n).astype(float),
            "c": rng.choice(["x", "y", "z"], n, p=[0.6 - shift / 2, 0.3, 0.1 + shift / 2]),
        }
    )


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """A partitioned Parquet dataset (4 files, 2 folders) drifting in 'a' and 'c', and its reference."""
    root = tmp_path_factory.mktemp("dataset")
    for i in range(4):
        folder = root / f"day={i // 2}"
        folder.mkdir(exist_ok=True)
        _frame(6000, 10 + i, shift=0.3).to_parquet(folder / f"part-{i}.parquet", index=False)
    return root, _frame(5000, 1)


def _spec(path: str, profile_path: str, **extra: object) -> dict:
    return {"reference": {"path": profile_path}, "current": {"path": path}, "mlflow_report": "never", **extra}


def test_partitioned_parquet_equals_the_single_machine_run(cluster, dataset, tmp_path) -> None:
    root, ref = dataset
    profile = tmp_path / "profile.json"
    import json

    profile.write_text(json.dumps(build_profile(ref)))
    local = evaluate_drift(_spec(str(root), str(profile)))
    on_dask = evaluate_drift(_spec(str(root), str(profile), engine="dask", dask_address=cluster))
    assert on_dask["current"].endswith("(on Dask)")
    assert on_dask["n_current"] == local["n_current"] == 24_000
    # Exact summaries: every score and verdict is the single machine's.
    assert on_dask["columns"] == local["columns"] and on_dask["drift_detected"] == local["drift_detected"]
    assert local["drift_detected"]


def test_sketched_partitions_give_the_same_verdicts(cluster, dataset) -> None:
    root, ref = dataset
    kinds = {"a": "numeric", "b": "numeric", "k": "numeric", "c": "categorical"}
    single = detect_drift(ref, summarize_path(root, kinds, exact_limit=5000))
    merged = detect_drift(ref, summarize_on_dask(cluster, dataset_files(root), kinds, exact_limit=5000))
    assert [(c.column, c.test, c.drifted) for c in merged.columns] == [
        (c.column, c.test, c.drifted) for c in single.columns
    ]
    by = {c.column: c for c in merged.columns}
    assert by["k"].score == {c.column: c for c in single.columns}["k"].score  # exact counts: 40 values
    assert by["a"].score == pytest.approx({c.column: c for c in single.columns}["a"].score, rel=0.05)


def test_prediction_log_window_on_dask(cluster, tmp_path) -> None:
    from airflow_mlops.core import prediction_log as plog

    end = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
    frame = _frame(3000, 3, shift=0.3)
    ts = pd.date_range(end=end - timedelta(seconds=1), periods=len(frame), freq="s", tz="UTC")
    frame[plog.PREDICTION] = 0
    frame[plog.MODEL_NAME], frame[plog.MODEL_VERSION] = "m", "1"
    frame[plog.REQUEST_ID] = [f"r{i}" for i in range(len(frame))]
    frame[plog.TIMESTAMP] = ts.astype("datetime64[us, UTC]")
    folder = tmp_path / "log" / "m" / f"date={end.date().isoformat()}"
    folder.mkdir(parents=True)
    for i in range(3):
        part = frame.iloc[i * 1000 : (i + 1) * 1000]
        part.to_parquet(folder / f"part-{i}-abcdef12.parquet", index=False)
    ref = tmp_path / "ref.parquet"
    _frame(2000, 4).to_parquet(ref, index=False)
    spec = {
        "reference": {"path": str(ref)},
        "current": {
            "prediction_log": str(tmp_path / "log"),
            "window_seconds": 1800,
            "window_end": end.isoformat(),
        },
        "model_name": "m",
        "mlflow_report": "never",
    }
    local = evaluate_drift(spec)
    on_dask = evaluate_drift({**spec, "engine": "dask", "dask_address": cluster})
    assert on_dask["n_current"] == local["n_current"] == 1800  # only the window's rows
    assert on_dask["columns"] == local["columns"] and on_dask["schema"]["extra"] == []


def test_a_dead_scheduler_is_reported_within_seconds(dataset, tmp_path) -> None:
    root, ref = dataset
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ref_path = tmp_path / "ref.parquet"
    ref.to_parquet(ref_path)
    t0 = time.monotonic()
    with pytest.raises(MlopsServiceError, match="Dask scheduler at tcp://127.0.0.1"):
        evaluate_drift(_spec(str(root), str(ref_path), engine="dask", dask_address=f"tcp://127.0.0.1:{port}"))
    assert time.monotonic() - t0 < 20
    with pytest.raises(MlopsInputError, match="engine='dask' needs a scheduler address"):
        evaluate_drift(_spec(str(root), str(ref_path), engine="dask"))
    with pytest.raises(MlopsInputError, match="engine='spark' is unknown"):
        evaluate_drift(_spec(str(root), str(ref_path), engine="spark"))


def test_the_sensor_resolves_a_dask_connection(cluster, dataset, tmp_path, monkeypatch) -> None:
    """The sensor's own evaluation (what poke and execute_complete run) with a real ``dask`` connection
    given as a bare host and a port."""
    from airflow_mlops.hooks.dask import DaskHook
    from airflow_mlops.sensors.drift import DriftSensor

    root, ref = dataset
    host, port = cluster.removeprefix("tcp://").rsplit(":", 1)
    monkeypatch.setenv(*conn_env("dask_test", {"conn_type": "dask", "host": host, "port": int(port)}))
    assert DaskHook("dask_test").address() == cluster
    ref_path = tmp_path / "ref.parquet"
    ref.to_parquet(ref_path)
    sensor = DriftSensor(
        task_id="drift", reference_path=str(ref_path), current_path=str(root), engine="dask",
        dask_conn_id="dask_test", mlflow_report="never",
    )  # fmt: skip
    spec = sensor.spec()
    assert spec["engine"] == "dask" and "dask_address" not in spec  # the trigger never sees the address
    summary = sensor._evaluate(spec)
    assert summary["drift_detected"] and summary["current"].endswith("(on Dask)")
