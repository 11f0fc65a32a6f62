"""Pure parts of the deploy core: stage planning, request checks, state files, percentiles."""

from __future__ import annotations

import json
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_mlops.core.errors import MlopsInputError
from airflow_mlops.deploy.gateway_api import is_error_status
from airflow_mlops.deploy.rollout import DeployRequest, _same_routes, plan_stages
from airflow_mlops.deploy.state import DeploymentState, Operation, StateStore
from airflow_mlops.deploy.validation import percentile
from airflow_mlops.serving.config import DeploymentConfig


def test_canary_plan_steps_up_then_promotes():
    stages, promotes = plan_stages(DeployRequest("bc", "4", strategy="canary", canary_steps=(0.1, 0.5)), "3")
    assert promotes
    assert [s.config["strategy"] for s in stages] == ["canary", "canary", "single"]
    assert stages[0].config["routes"] == [{"version": "3", "weight": 0.9}, {"version": "4", "weight": 0.1}]
    assert stages[-1].final and stages[-1].config["routes"] == [{"version": "4", "weight": 1.0}]
    assert all(s.config["champion"] == "3" for s in stages[:-1])


@pytest.mark.parametrize("strategy", ["replace", "canary", "shadow", "ab", "bandit"])
def test_every_planned_config_is_one_the_gateway_accepts(strategy):
    req = DeployRequest("bc", "4", strategy=strategy, sticky_key="user_id", ab_weight=0.3)
    stages, promotes = plan_stages(req, "3")
    assert promotes == (strategy in ("replace", "canary"))
    for stage in stages:
        assert DeploymentConfig.parse(stage.config).to_dict()["routes"] == stage.config["routes"]
    if strategy in ("shadow", "ab", "bandit"):
        assert stages[0].config["champion"] == "3" and {r["version"] for r in stages[0].config["routes"]} == {
            "3",
            "4",
        }


def test_first_deploy_is_a_replace_and_comparisons_need_a_champion():
    stages, promotes = plan_stages(DeployRequest("bc", "1", strategy="canary"), None)
    assert promotes and [s.config["strategy"] for s in stages] == ["single"]
    for strategy in ("shadow", "ab", "bandit"):
        with pytest.raises(MlopsInputError, match="deploy a champion first"):
            plan_stages(DeployRequest("bc", "1", strategy=strategy), None)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"strategy": "blue-green"}, "Unknown strategy"),
        ({"version": "latest"}, "not a version number"),
        ({"canary_steps": (0.5, 0.1)}, "canary_steps"),
        ({"canary_steps": (0.5, 1.0)}, "canary_steps"),
        ({"ab_weight": 1.0}, "ab_weight"),
        ({"max_error_rate": 2}, "max_error_rate"),
        ({"step_seconds": -1}, "step_seconds"),
    ],
)
def test_bad_requests_name_the_problem(kwargs, message):
    args = {"model_name": "bc", "version": "2", **kwargs}
    with pytest.raises(MlopsInputError, match=message):
        DeployRequest(**args).check()


@given(st.lists(st.floats(min_value=0, max_value=1e4, allow_nan=False), min_size=1, max_size=200))
def test_percentile_is_an_observed_value_between_min_and_max(values):
    p95 = percentile(values, 95)
    assert p95 in values and min(values) <= p95 <= max(values)
    assert percentile(values, 100) == max(values) and percentile(values, 50) <= p95


def test_error_statuses_are_5xx_only():
    assert is_error_status("500") and is_error_status("503") and is_error_status("error")
    assert not is_error_status("200") and not is_error_status("422") and not is_error_status("401")


def test_same_routes_ignores_order_and_float_noise():
    a = {
        "strategy": "canary",
        "champion": "3",
        "routes": [{"version": "3", "weight": 0.9}, {"version": 4, "weight": 0.1}],
    }
    b = {
        "strategy": "canary",
        "champion": 3,
        "routes": [{"version": "4", "weight": 0.1000000001}, {"version": "3", "weight": 0.9}],
    }
    assert _same_routes(a, b)
    assert not _same_routes(a, {**b, "strategy": "ab"})


def test_state_round_trips_with_a_typed_operation_and_holds_no_secret():
    state = DeploymentState(
        "bc", "bc-model", "local", port=8080, config={"routes": [{"version": "2", "weight": 1.0}]}
    )
    state.op = Operation(id="d/r/t/-1", action="deploy", version="2", strategy="canary", stage=1,
                         lease_until=time.time() + 60, previous_config={"routes": []})  # fmt: skip
    state.add_history(action="deploy", version="2")
    raw = json.loads(json.dumps(state.to_json()))
    loaded = DeploymentState.from_json({**raw, "from_a_newer_version": 1})
    assert loaded == state and isinstance(loaded.op, Operation) and loaded.op.holds()
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
    big = DeploymentState("bc", "m", "local", config={"routes": [], "pad": "x" * 20000})
    assert other.save(big, "bc", 1) == 2
    assert records.load("bc")[0].config["pad"] == "x" * 20000  # chunked over several params
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
