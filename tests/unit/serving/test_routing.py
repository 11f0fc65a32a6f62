"""Routing strategies: weighted canary, sticky A/B, shadow copies and Thompson-sampling bandit."""

from __future__ import annotations

import random
from collections import Counter

from airflow_mlops.serving.config import DeploymentConfig
from airflow_mlops.serving.routing import BanditStats, Router


def _router(strategy: str, weights: list[float] | None = None, champion: str | None = None, **kw) -> Router:
    routes = [
        {"version": str(i + 1), **({"weight": w} if w is not None else {})}
        for i, w in enumerate(weights or [None, None])
    ]
    raw = {"model_name": "bc", "strategy": strategy, "routes": routes}
    if champion:
        raw["champion"] = champion
    return Router(DeploymentConfig.parse(raw), rng=random.Random(7), **kw)


def test_single_always_answers_with_its_route():
    r = Router(DeploymentConfig.parse({"model_name": "bc", "routes": [{"version": "5"}]}))
    assert {r.choose() for _ in range(50)} == {"5"}
    assert r.shadow_versions == ()


def test_canary_splits_by_weight():
    r = _router("canary", [0.9, 0.1])
    counts = Counter(r.choose() for _ in range(20_000))
    assert 0.08 < counts["2"] / 20_000 < 0.12
    assert r.weights() == {"1": 0.9, "2": 0.1}


def test_canary_with_zero_weight_never_routes_there():
    r = _router("canary", [1.0, 0.0])
    assert {r.choose() for _ in range(2000)} == {"1"}


def test_ab_is_sticky_per_key_and_splits_keys():
    r = _router("ab", [0.5, 0.5])
    for key in ("user-1", "user-2", "user-42"):
        assert len({r.choose(key) for _ in range(20)}) == 1
    # A fresh router (another process) puts a key on the same side: the hash is stable.
    assert _router("ab", [0.5, 0.5]).choose("user-42") == r.choose("user-42")
    sides = Counter(r.choose(f"user-{i}") for i in range(4000))
    assert 0.45 < sides["1"] / 4000 < 0.55


def test_shadow_answers_with_champion_and_copies_the_others():
    r = Router(
        DeploymentConfig.parse(
            {"model_name": "bc", "strategy": "shadow", "champion": "2",
             "routes": [{"version": "1"}, {"version": "2"}, {"version": "3"}]}
        )
    )  # fmt: skip
    assert {r.choose() for _ in range(50)} == {"2"}
    assert r.shadow_versions == ("1", "3")
    assert r.weights() == {"1": 0.0, "2": 1.0, "3": 0.0}


def test_bandit_shifts_traffic_to_the_rewarded_version():
    stats = BanditStats()
    r = _router("bandit", bandit=stats)
    first = Counter(r.choose() for _ in range(2000))
    assert 0.4 < first["1"] / 2000 < 0.6  # uniform priors: an even split
    stats.reward("1", successes=20, failures=80)
    stats.reward("2", successes=90, failures=10)
    later = Counter(r.choose() for _ in range(2000))
    assert later["2"] / 2000 > 0.97
    w = r.weights()
    assert w["2"] > w["1"] and abs(sum(w.values()) - 1) < 1e-9
    stats.keep_only(["2"])
    assert stats.posterior("1") == (1.0, 1.0)
