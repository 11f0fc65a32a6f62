"""The deployment's state: a typed record (operation, configs) in MLflow, changed by compare-and-set."""

from __future__ import annotations

import json
import threading
import time

import pytest

from airflow_mlops.core.errors import MlopsInputError
from airflow_mlops.deploy.plan import alone
from airflow_mlops.deploy.state import DeploymentState, Operation, StateStore
from airflow_mlops.serving.config import DeploymentConfig


def test_state_round_trips_with_a_typed_operation_and_holds_no_secret():
    state = DeploymentState("bc", "bc-model", "local", port=8080, config=alone("bc-model", "2"))
    state.op = Operation(id="d/r/t/-1", action="deploy", version="2", strategy="canary", stage=1,
                         lease_until=time.time() + 60, previous_config=alone("bc-model", "1"))  # fmt: skip
    state.add_history(action="deploy", version="2")
    raw = json.loads(json.dumps(state.to_json()))
    loaded = DeploymentState.from_json({**raw, "from_a_newer_version": 1})
    assert loaded == state and isinstance(loaded.op, Operation) and loaded.op.holds()
    assert isinstance(loaded.config, DeploymentConfig) and loaded.op.previous_config == alone("bc-model", "1")
    assert loaded.served_versions() == ["2"] and loaded.weights() == {"2": 1.0}
    assert "token" not in json.dumps(raw)
    assert not Operation(id="x", action="deploy", lease_until=time.time() - 1).holds()  # a lease runs out
    assert not Operation(id="x", action="deploy", status="done", lease_until=time.time() + 60).holds()


def test_history_is_bounded():
    state = DeploymentState("bc", "m", "local")
    for i in range(DeploymentState.MAX_HISTORY + 10):
        state.add_history(version=str(i))
    assert len(state.history) == DeploymentState.MAX_HISTORY and state.history[-1]["version"] == str(
        DeploymentState.MAX_HISTORY + 9
    )


def test_generated_admin_token_is_private_to_this_worker(tmp_path):
    store = StateStore(tmp_path / "s")
    assert store.local_token("bc") is None
    token = store.new_local_token("bc")
    path = tmp_path / "s" / "bc.admin-token"
    assert oct(path.stat().st_mode & 0o777) == "0o600" and store.local_token("bc") == token
    assert StateStore(tmp_path / "other").local_token("bc") is None  # another worker's folder
    store.forget("bc")
    assert store.local_token("bc") is None
    with pytest.raises(MlopsInputError, match="Deployment name"):
        store.workdir("../x")


def _sqlite_target(tmp_path):
    from airflow_mlops.core.tracking import MlflowTarget

    return MlflowTarget(f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_location=str(tmp_path / "artifacts"))


def test_records_compare_and_set_on_the_sqlite_store(tmp_path):
    """The real embedded store (sqlite:///): a second writer of the same revision loses with a typed
    conflict, readers take the highest revision, a deleted deployment reads as never deployed."""
    from airflow_mlops.deploy.state import DeploymentRecords, StateConflictError

    records = DeploymentRecords(_sqlite_target(tmp_path))
    assert records.load("bc") == (None, 0)
    state = DeploymentState("bc", "m", "local", port=1)
    assert records.save(state, "bc", 0) == 1
    other = DeploymentRecords(_sqlite_target(tmp_path))  # another worker: its own client
    with pytest.raises(StateConflictError, match="changed by another operation"):
        other.save(DeploymentState("bc", "m", "local", port=2), "bc", 0)
    loaded, rev = other.load("bc")
    assert rev == 1 and loaded.port == 1
    big = DeploymentState("bc", "m", "local", handle={"pad": "x" * 20000})
    assert other.save(big, "bc", 1) == 2
    assert records.load("bc")[0].handle["pad"] == "x" * 20000  # chunked over several params
    records.save(None, "bc", 2)
    assert records.load("bc") == (None, 3)


def test_concurrent_writers_of_one_revision_exactly_one_wins(tmp_path):
    from airflow_mlops.deploy.state import CasRecord, DeploymentRecords, StateConflictError

    target = _sqlite_target(tmp_path)
    DeploymentRecords(target).save(DeploymentState("bc", "m", "local"), "bc", 0)
    barrier = threading.Barrier(6)
    outcomes: list[str] = []

    def write(i: int) -> None:
        rec = CasRecord(target.client(), "deployment", "bc")
        rec.run_id()
        barrier.wait()
        try:
            rec.write(2, {"writer": i})
            outcomes.append(f"won-{i}")
        except StateConflictError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [o for o in outcomes if o.startswith("won")]
    assert len(winners) == 1 and outcomes.count("conflict") == 5, outcomes
    rev, value = CasRecord(target.client(), "deployment", "bc").read()
    assert rev == 2 and f"won-{value['writer']}" == winners[0]


def test_records_move_to_a_new_run_when_one_fills_up(tmp_path, monkeypatch):
    """Growth is bounded per run: every ROLL_AFTER revisions the record moves to a new run (the last
    revision of the full run carries the state); readers, fresh ones too, find the newest; the ledger's
    log reads across runs; conflicts still hold across the move."""
    from airflow_mlops.deploy.state import CasRecord, DeploymentRecords, StateConflictError

    monkeypatch.setattr(CasRecord, "ROLL_AFTER", 3)
    target = _sqlite_target(tmp_path)
    records = DeploymentRecords(target)
    rev = 0
    for port in range(1, 9):
        state, rev = records.load("bc")
        assert (state.port if state else None) == (port - 1 if port > 1 else None)
        records.save(DeploymentState("bc", "m", "local", port=port), "bc", rev)
    fresh = DeploymentRecords(target)
    state, rev = fresh.load("bc")
    assert (state.port, rev) == (8, 8)
    with pytest.raises(StateConflictError):
        DeploymentRecords(target).save(DeploymentState("bc", "m", "local", port=0), "bc", 7)
    client = target.client()
    exp = client.get_experiment_by_name("mlops-deployments")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`mlops.record` = 'deployment/bc'")
    assert len(runs) >= 3 and all(len(r.data.params) <= 2 * 4 for r in runs)
    log = CasRecord(client, "ledger", "m")
    for i in range(7):
        log.append({"i": i})
    assert CasRecord(client, "ledger", "m").read_all() == [{"i": i} for i in range(7)]


def test_a_record_written_with_the_older_strategy_name_reads_as_typed_configs():
    """Records in MLflow from before the configs were typed (dicts, strategy "single") still load."""
    old = {
        "routes": [{"version": "1", "weight": 1.0}],
        "model_name": "m",
        "strategy": "single",
        "champion": "1",
    }
    raw = {"name": "bc", "model_name": "m", "backend": "local", "config": old,
           "op": {"id": "x", "action": "deploy", "status": "done", "previous_config": old}}  # fmt: skip
    state = DeploymentState.from_json(raw)
    assert (
        state.config == alone("m", "1") and state.op is not None and state.op.previous_config == state.config
    )
    assert state.to_json()["config"]["strategy"] == "replace"
