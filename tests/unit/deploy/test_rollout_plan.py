"""Pure parts of the deploy core: stage planning, request checks, state files, percentiles."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_mlops.core.errors import MlopsInputError
from airflow_mlops.deploy.gateway_api import is_error_status
from airflow_mlops.deploy.rollout import DeployRequest, _same_routes, plan_stages
from airflow_mlops.deploy.state import DeploymentState, StateStore
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


def test_state_files_are_private_atomic_and_round_trip(tmp_path):
    store = StateStore(tmp_path / "s")
    state = DeploymentState(
        "bc", "bc-model", "local", port=8080, config={"routes": [{"version": "2", "weight": 1.0}]}
    )
    state.add_history(action="deploy", version="2")
    store.save(state)
    path = store.path("bc")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    loaded = store.load("bc")
    assert loaded.admin_token == state.admin_token and loaded.served_versions() == ["2"]
    assert loaded.weights() == {"2": 1.0} and loaded.history[0]["version"] == "2"
    assert [p.name for p in path.parent.iterdir() if p.suffix.startswith(".tmp")] == []
    path.write_text("{not json")
    with pytest.raises(MlopsInputError, match="unreadable"):
        store.load("bc")
    with pytest.raises(MlopsInputError, match="Deployment name"):
        store.path("../x")


def test_history_is_bounded():
    state = DeploymentState("bc", "m", "local")
    for i in range(DeploymentState.MAX_HISTORY + 10):
        state.add_history(version=str(i))
    assert len(state.history) == DeploymentState.MAX_HISTORY and state.history[-1]["version"] == str(
        DeploymentState.MAX_HISTORY + 9
    )


def test_lock_serialises_operations_on_one_deployment(tmp_path):
    store = StateStore(tmp_path)
    order: list[str] = []

    def hold() -> None:
        with store.lock("bc"):
            order.append("a-in")
            time.sleep(0.5)
            order.append("a-out")

    t = threading.Thread(target=hold)
    t.start()
    time.sleep(0.1)
    with store.lock("bc"):
        order.append("b-in")
    t.join()
    assert order == ["a-in", "a-out", "b-in"]
    with store.lock("bc"):
        # Another process cannot take the lock while this one holds it: it gives up with a clear error.
        pid = os.fork()
        if pid == 0:  # child: report through the exit code
            try:
                with store.lock("bc", timeout=0.3):
                    os._exit(0)
            except MlopsInputError:
                os._exit(3)
            os._exit(1)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 3


def test_state_json_is_plain_json(tmp_path):
    store = StateStore(tmp_path)
    store.save(DeploymentState("bc", "m", "docker", handle={"container_id": "abc"}))
    raw = json.loads(store.path("bc").read_text())
    assert raw["handle"] == {"container_id": "abc"} and raw["backend"] == "docker"
