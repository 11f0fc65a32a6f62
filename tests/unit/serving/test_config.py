"""Deployment config parsing: every strategy, and a clear error for each kind of bad config."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_mlops.core.errors import MlopsInputError
from airflow_mlops.serving.config import DeploymentConfig, Route, load_config


def test_replace_defaults_weight_and_champion():
    """``replace``: one version serves (``single``, its older name in gateway configs, still reads)."""
    cfg = DeploymentConfig.parse({"model_name": "bc", "strategy": "single", "routes": [{"version": "3"}]})
    assert cfg == DeploymentConfig.parse({"model_name": "bc", "routes": [{"version": "3"}]})
    assert cfg.routes == (Route("3", 1.0),)
    assert cfg.champion == "3"
    assert cfg.to_dict() == {
        "model_name": "bc",
        "strategy": "replace",
        "routes": [{"version": "3", "weight": 1.0}],
        "champion": "3",
    }


def test_canary_round_trips_through_json_text():
    raw = {
        "model_name": "bc",
        "strategy": "canary",
        "routes": [{"version": "3", "weight": 0.9}, {"version": 4, "weight": 0.1}],
        "champion": "3",
        "sticky_key": "user_id",
    }
    cfg = DeploymentConfig.parse(json.dumps(raw))
    assert cfg.versions == ["3", "4"]
    assert DeploymentConfig.parse(cfg.to_dict()) == cfg
    assert [r.weight for r in cfg.routes] == [0.9, 0.1]


def test_shadow_and_bandit_need_no_weights():
    for strategy in ("shadow", "bandit"):
        cfg = DeploymentConfig.parse(
            {"model_name": "bc", "strategy": strategy, "routes": [{"version": "1"}, {"version": "2"}]}
        )
        assert [r.weight for r in cfg.routes] == [0.5, 0.5]
        assert cfg.champion == "1"


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ([], "must be a JSON object"),
        ({"strategy": "single", "routes": [{"version": "1"}]}, "needs `model_name`"),
        ({"model_name": "bc", "routes": [{"version": "1"}], "colour": "red"}, "unknown keys ['colour']"),
        ({"model_name": "bc", "strategy": "blue-green", "routes": [{"version": "1"}]}, "Unknown strategy"),
        ({"model_name": "bc", "strategy": "single"}, "needs `routes`"),
        (
            {"model_name": "bc", "strategy": "single", "routes": [{"version": "1"}, {"version": "2"}]},
            "exactly one",
        ),
        (
            {
                "model_name": "bc",
                "strategy": "canary",
                "routes": [{"version": "1", "weight": 0.8}, {"version": "2", "weight": 0.1}],
            },
            "sum to 1, got 0.9",
        ),
        (
            {
                "model_name": "bc",
                "strategy": "canary",
                "routes": [{"version": "1", "weight": 1}, {"version": "2"}],
            },
            "has no weight",
        ),
        (
            {"model_name": "bc", "strategy": "single", "routes": [{"version": "1", "weight": 2}]},
            "between 0 and 1",
        ),
        (
            {"model_name": "bc", "strategy": "single", "routes": [{"version": "1", "weight": "x"}]},
            "give a number",
        ),
        (
            {"model_name": "bc", "strategy": "shadow", "routes": [{"version": "1"}, {"version": "1"}]},
            "repeat a version",
        ),
        ({"model_name": "bc", "strategy": "shadow", "routes": [{"version": "1"}]}, "at least two routes"),
        (
            {"model_name": "bc", "strategy": "single", "routes": [{"version": "1"}], "champion": "2"},
            "not one of the routes",
        ),
        ({"model_name": "bc", "strategy": "single", "routes": [{"weight": 1}]}, 'with a "version"'),
        ({"model_name": "bc", "strategy": "single", "routes": [{"version": True}]}, "version number"),
        (
            {"model_name": "bc", "strategy": "single", "routes": [{"version": "1", "w": 1}]},
            "unknown keys ['w']",
        ),
        (
            {"model_name": "bc", "strategy": "single", "routes": [{"version": "1"}], "sticky_key": ""},
            "sticky_key",
        ),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_configs_name_the_problem(raw, fragment):
    with pytest.raises(MlopsInputError) as e:
        DeploymentConfig.parse(raw)
    assert fragment in str(e.value)


def test_aliases_resolve_and_must_not_collide():
    cfg = DeploymentConfig.parse(
        {"model_name": "bc", "strategy": "shadow", "routes": [{"version": "@champion"}, {"version": "4"}]}
    )
    assert cfg.routes[0].alias == "champion"
    resolved = cfg.with_versions({"@champion": "3"})
    assert resolved.versions == ["3", "4"] and resolved.champion == "3"
    with pytest.raises(MlopsInputError, match="repeat a version"):
        cfg.with_versions({"@champion": "4"})


def test_load_config_reads_a_file_and_names_a_missing_one(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"model_name": "bc", "routes": [{"version": "1"}]}))
    assert load_config(path).strategy == "replace"
    with pytest.raises(MlopsInputError, match="does not exist"):
        load_config(tmp_path / "missing.json")


@given(st.lists(st.floats(min_value=0.01, max_value=10), min_size=1, max_size=6))
def test_any_normalised_canary_weights_parse(raw_weights):
    total = sum(raw_weights)
    weights = [w / total for w in raw_weights]
    routes = [{"version": str(i + 1), "weight": w} for i, w in enumerate(weights)]
    cfg = DeploymentConfig.parse({"model_name": "m", "strategy": "canary", "routes": routes})
    assert cfg.versions == [str(i + 1) for i in range(len(weights))]
    assert DeploymentConfig.parse(cfg.to_dict()) == cfg
