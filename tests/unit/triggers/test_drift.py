"""DriftTrigger polls only cheap conditions: new files in the current data, with rows by their Parquet
footers. Real files on disk, the trigger's real event loop."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pandas as pd

from airflow_mlops.core.drift.evaluate import has_new_data, source_state
from airflow_mlops.triggers.drift import DriftTrigger
from tests.conftest import REPO_ROOT


def _first_event(trigger: DriftTrigger, during=None) -> dict:
    async def main() -> dict:
        task = asyncio.ensure_future(trigger.run().__anext__())
        if during:
            await asyncio.sleep(0.3)
            during()
        return (await asyncio.wait_for(task, 30)).payload

    return asyncio.run(main())


def test_serialize_round_trips(tmp_path):
    trigger = DriftTrigger({"current": {"path": str(tmp_path)}}, 123.0, 5.0, {"fingerprint": "x", "rows": 1})
    path, kwargs = trigger.serialize()
    assert path == "airflow_mlops.triggers.drift.DriftTrigger"
    assert DriftTrigger(**kwargs).serialize() == (path, kwargs)


def test_unchanged_data_ends_in_a_timeout(tmp_path):
    pd.DataFrame({"a": [1.0, 2.0]}).to_parquet(tmp_path / "p1.parquet")
    spec = {"current": {"path": str(tmp_path)}}
    event = _first_event(DriftTrigger(spec, time.time() + 1.0, 0.2, source_state(spec)))
    assert event["status"] == "timeout" and event["state"]["rows"] == 2


def test_a_new_file_wakes_the_task(tmp_path):
    pd.DataFrame({"a": [1.0, 2.0]}).to_parquet(tmp_path / "p1.parquet")
    spec = {"current": {"path": str(tmp_path)}}
    trigger = DriftTrigger(spec, time.time() + 20, 0.2, source_state(spec))
    event = _first_event(trigger, lambda: pd.DataFrame({"a": [3.0] * 5}).to_parquet(tmp_path / "p2.parquet"))
    assert event["status"] == "new_data" and event["state"]["rows"] == 7 and event["state"]["files"] == 2


def test_prediction_log_window_counts_rows_from_footers(tmp_path):
    end = datetime(2026, 5, 1, 12, tzinfo=timezone.utc)
    folder = tmp_path / "bc" / f"date={end.date().isoformat()}"
    folder.mkdir(parents=True)
    spec = {
        "model_name": "bc",
        "current": {"prediction_log": str(tmp_path), "window_seconds": 3600, "window_end": end.isoformat()},
    }
    empty = source_state(spec)
    assert empty["rows"] == 0 and not has_new_data(empty, None)  # nothing logged: nothing to test
    pd.DataFrame({"a": range(4)}).to_parquet(folder / "part-1-abcdef12.parquet")
    (folder / "part-2-abcdef12.parquet").write_bytes(b"PAR1 half written")  # counted as empty
    state = source_state(spec)
    assert state["rows"] == 4 and has_new_data(state, empty) and not has_new_data(state, state)
    old = {**spec, "current": {**spec["current"], "window_end": (end - timedelta(days=3)).isoformat()}}
    assert source_state(old)["files"] == 0


def test_bad_spec_is_an_input_error_event(tmp_path):
    spec = {"current": {"prediction_log": str(tmp_path)}}  # no model name
    event = _first_event(DriftTrigger(spec, time.time() + 5, 0.1))
    assert event["status"] == "error" and event["error_type"] == "input" and "model_name" in event["message"]


def test_the_trigger_computes_no_statistics_and_loads_no_mlflow(tmp_path):
    pd.DataFrame({"a": [1.0]}).to_parquet(tmp_path / "p.parquet")
    probe = (
        "import asyncio, sys, time\n"
        "import airflow_mlops.core.drift as drift, airflow_mlops.core.drift.engine as engine\n"
        "def refuse(*a, **k): raise AssertionError('statistics in the triggerer')\n"
        "drift.detect_drift = engine.detect_drift = refuse\n"
        "from airflow_mlops.triggers.drift import DriftTrigger\n"
        f"t = DriftTrigger({{'current': {{'path': {str(tmp_path)!r}}}}}, time.time() + 1, 0.1)\n"
        "status = asyncio.run(t.run().__anext__()).payload['status']\n"
        "heavy = [m for m in ('mlflow', 'scipy', 'sklearn', 'pandas') if m in sys.modules]\n"
        "print('RESULT', status, heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert [line for line in out.stdout.splitlines() if line.startswith("RESULT")] == ["RESULT new_data []"]
