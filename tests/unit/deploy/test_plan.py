"""Pure rollout planning: the stages of each strategy, request checks, the judging of a held step."""

from __future__ import annotations

import pytest

from airflow_mlops.core.errors import MlopsInputError
from airflow_mlops.deploy.plan import DeployRequest, alone, error_rate_problem, plan_stages
from airflow_mlops.serving.config import DeploymentConfig, Route


def test_canary_plan_steps_up_then_promotes():
    stages, promotes = plan_stages(DeployRequest("bc", "4", strategy="canary", canary_steps=(0.1, 0.5)), "3")
    assert promotes
    assert [s.config.strategy for s in stages] == ["canary", "canary", "replace"]
    assert stages[0].config.routes == (Route("3", 0.9), Route("4", 0.1))
    assert stages[-1].final and stages[-1].config == alone("bc", "4")
    assert all(s.config.champion == "3" for s in stages[:-1])


@pytest.mark.parametrize("strategy", ["replace", "canary", "shadow", "ab", "bandit"])
def test_every_planned_config_is_one_the_gateway_accepts_and_answers_back_unchanged(strategy):
    """The gateway parses what it is sent and answers its JSON form: a planned config comes back equal,
    so a deploy compares what the gateway routes with what it planned by ``==``."""
    req = DeployRequest("bc", "4", strategy=strategy, sticky_key="user_id", ab_weight=0.3)
    stages, promotes = plan_stages(req, "3")
    assert promotes == (strategy in ("replace", "canary"))
    for stage in stages:
        assert DeploymentConfig.parse(stage.config.to_dict()) == stage.config
    if strategy in ("shadow", "ab", "bandit"):
        assert stages[0].config.champion == "3" and set(stages[0].config.versions) == {"3", "4"}
    if strategy == "ab":
        assert stages[0].config.sticky_key == "user_id" and stages[0].config.routes[1] == Route("4", 0.3)


def test_first_deploy_is_a_replace_and_comparisons_need_a_champion():
    stages, promotes = plan_stages(DeployRequest("bc", "1", strategy="canary"), None)
    assert promotes and [s.config.strategy for s in stages] == ["replace"]
    for strategy in ("shadow", "ab", "bandit"):
        with pytest.raises(MlopsInputError, match="deploy a champion first"):
            plan_stages(DeployRequest("bc", "1", strategy=strategy), None)


def test_a_held_canary_of_a_first_model_serves_alone_without_promotion():
    stages, promotes = plan_stages(DeployRequest("bc", "1", strategy="canary", promote=False), None)
    assert not promotes and [s.config for s in stages] == [alone("bc", "1")]


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


def test_only_5xx_answers_count_as_failed_requests():
    """The gateway labels requests with the HTTP status it answered: 4xx are the caller's errors."""
    before = {"200": 10.0, "500": 1.0}
    callers = {"200": 30.0, "422": 40.0, "401": 10.0, "500": 1.0}
    assert error_rate_problem(before, callers, "4", 0.05, 20) is None
    failing = {"200": 30.0, "503": 6.0, "500": 2.0}
    assert "failed 7 of 27 requests" in (error_rate_problem(before, failing, "4", 0.05, 20) or "")
    assert error_rate_problem(before, failing, "4", 0.05, 30) is None  # too few requests to judge
