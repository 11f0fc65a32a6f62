"""What gateway replicas share without sharing memory: signed request ids, feedback dedup (in process, or
in a real Redis), counters that add up, bandit rewards read from peers, two-phase deployment changes.

Replicas here are :class:`Gateway` objects in one process (each with its own state, as separate
processes would have); tests/integration/serving/test_replicas.py runs real processes behind nginx.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from airflow_mlops.core.errors import MlopsInputError
from airflow_mlops.serving.app import Gateway, GatewaySettings, HttpError
from airflow_mlops.serving.config import DeploymentConfig
from airflow_mlops.serving.request_ids import FeedbackDedup, RequestSigner

SECRET = "replica-secret-0123456789abcdef"
SINGLE = {"model_name": "bc", "strategy": "single", "routes": [{"version": "1"}]}


def _replica(bc_models, config: dict = SINGLE, **settings) -> Gateway:
    gw = Gateway(
        GatewaySettings(**{"request_secret": SECRET, **settings}), lambda n, v: bc_models[v], lambda n, r: r
    )
    asyncio.run(gw.apply(DeploymentConfig.parse(config)))
    return gw


def test_feedback_joins_on_another_replica_and_after_a_restart(bc_models, bc_records):
    a, b = _replica(bc_models), _replica(bc_models)
    answer = asyncio.run(a.predict({"inputs": bc_records[:3]}))
    labels = [int(p) for p in answer["predictions"]]
    joined = b.feedback({"request_id": answer["request_id"], "labels": labels})
    assert joined["accepted"] == 3 and joined["correct"] == 3 and joined["model_version"] == "1"
    assert b.metrics.feedback.labels("bc", "1")._value.get() == 3
    assert a.metrics.feedback.labels("bc", "1")._value.get() == 0
    restarted = _replica(bc_models)  # a fresh process: nothing of `a` survives but the secret
    other = asyncio.run(a.predict({"inputs": bc_records[5]}))
    assert restarted.feedback({"request_id": other["request_id"], "label": 0})["accepted"] == 1


def test_forged_tampered_and_foreign_ids_are_refused(bc_models, bc_records):
    gw = _replica(bc_models)
    rid = asyncio.run(gw.predict({"inputs": bc_records[0]}))["request_id"]
    uid, payload, sig = rid.split(".")
    # Flipping the predicted class inside the payload (to make a wrong prediction look right) breaks the tag.
    raw = bytearray(payload.encode())
    raw[-1] = ord("B" if raw[-1] != ord("B") else "A")
    foreign = Gateway(
        GatewaySettings(request_secret="another-secret-0123456789"), lambda n, v: bc_models[v], lambda n, r: r
    )
    asyncio.run(foreign.apply(DeploymentConfig.parse(SINGLE)))
    for bad, gateway in [
        (f"{uid}.{raw.decode()}.{sig}", gw),
        (f"{'0' * 32}.{payload}.{sig}", gw),
        (rid, foreign),
        ("not-an-id", gw),
    ]:
        with pytest.raises(HttpError) as e:
            gateway.feedback({"request_id": bad, "label": 0})
        assert e.value.status == 404 and "not issued by any replica's shared secret" in e.value.detail
    assert gw.metrics.feedback.labels("bc", "1")._value.get() == 0


def test_short_secret_and_expired_ids_are_refused(bc_models):
    import numpy as np

    with pytest.raises(MlopsInputError, match="under 16"):
        RequestSigner("short")
    signer = RequestSigner(SECRET, max_age=-1)
    rid = signer.issue("bc", "1", np.array([1]), [0, 1])
    with pytest.raises(MlopsInputError, match="feedback is accepted within that age only"):
        signer.verify(rid, lambda m, v: [0, 1])


def test_regression_predictions_round_trip_exactly():
    import numpy as np

    signer = RequestSigner(SECRET)
    preds = np.array([0.1, 1 / 3, -2.5e300])
    got = signer.verify(signer.issue("diab", "7", preds, None), lambda m, v: None)
    assert (got.model, got.version, got.predictions) == ("diab", "7", preds.tolist())


def test_duplicate_feedback_counted_once_per_replica_without_a_store(bc_models, bc_records):
    a, b = _replica(bc_models), _replica(bc_models)
    rid = asyncio.run(a.predict({"inputs": bc_records[0]}))["request_id"]
    a.feedback({"request_id": rid, "label": 0})
    with pytest.raises(HttpError) as e:
        a.feedback({"request_id": rid, "label": 0})
    assert e.value.status == 409
    # The documented limit: without a shared store another replica cannot know.
    assert b.feedback({"request_id": rid, "label": 0})["accepted"] == 1


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    from tests.deployment.harness import start_redis

    proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    proc.terminate()
    proc.wait(10)


def test_duplicate_feedback_counted_once_across_replicas_with_redis(bc_models, bc_records, redis_url):
    replicas = [_replica(bc_models, dedup_url=redis_url) for _ in range(3)]
    rid = asyncio.run(replicas[0].predict({"inputs": bc_records[0]}))["request_id"]
    outcomes = []
    for gw in [*replicas, _replica(bc_models, dedup_url=redis_url)]:  # the last one: a restarted replica
        try:
            gw.feedback({"request_id": rid, "label": 1})
            outcomes.append(200)
        except HttpError as e:
            outcomes.append(e.status)
    assert outcomes == [200, 409, 409, 409]
    total = sum(gw.metrics.feedback.labels("bc", "1")._value.get() for gw in replicas)
    assert total == 1


def test_a_dead_dedup_store_counts_nothing_and_says_so(bc_models, bc_records):
    from airflow_mlops.core.net import free_port

    gw = _replica(bc_models, dedup_url=f"redis://:pw@127.0.0.1:{free_port()}/0")
    rid = asyncio.run(gw.predict({"inputs": bc_records[0]}))["request_id"]
    with pytest.raises(HttpError) as e:
        gw.feedback({"request_id": rid, "label": 1})
    assert e.value.status == 503 and "Nothing was counted" in e.value.detail and "pw" not in e.value.detail
    assert gw.metrics.feedback.labels("bc", "1")._value.get() == 0


def test_dedup_capacity_bounds_the_process_memory():
    d = FeedbackDedup(capacity=2)
    assert [d.claim(u) for u in ("a", "b", "a", "c", "a")] == [True, True, False, True, True]


def test_counters_are_born_at_zero_and_survive_a_clean_restart(bc_models, bc_records, tmp_path):
    from airflow_mlops.serving.app import restore_counters, save_counters

    gw = _replica(bc_models)
    page = gw.metrics.snapshot()
    assert page["feedback"] == [] and gw.metrics.class_rows.labels("bc", "1", "1", "tp")._value.get() == 0
    rid = asyncio.run(gw.predict({"inputs": bc_records[:4]}))["request_id"]
    gw.feedback({"request_id": rid, "labels": [0, 0, 1, 1]})
    path = str(tmp_path / "counters.json")
    save_counters(gw, path)
    again = _replica(bc_models)
    restore_counters(again, path)
    assert again.metrics.snapshot() == gw.metrics.snapshot()
    assert again.bandit.posterior("1") == gw.bandit.posterior("1")
    # Restored once: a crash after this start must not restore the same counts twice.
    assert not (tmp_path / "counters.json").exists()


BANDIT = {
    "model_name": "bc",
    "strategy": "bandit",
    "routes": [{"version": "1", "weight": 0.5}, {"version": "2", "weight": 0.5}],
}


def _bandit_run(base: Gateway, n_replicas: int, seed: int, rounds: int = 600, sync: bool = True) -> list[str]:
    """Requests to random replicas; each one's reward recorded on another random replica (feedback goes
    anywhere); version 2 is right 80% of the time, version 1 60%. Peers' rewards are read every 10
    requests, as the sync task does every ``peer_sync_seconds``. (Routing and rewards only: the
    predict/feedback path is covered above.)"""
    from airflow_mlops.serving.app import Deployment
    from airflow_mlops.serving.routing import Router

    rng = random.Random(seed)
    dep = base.deployment
    replicas = []
    for i in range(n_replicas):
        gw = Gateway(GatewaySettings(request_secret=SECRET), base.load_model, base.resolve)
        gw.deployment = Deployment(
            dep.config, Router(dep.config, gw.bandit, random.Random(seed * 10 + i)), dep.models
        )
        replicas.append(gw)
    served = []
    for i in range(rounds):
        v = rng.choice(replicas).deployment.router.choose()
        served.append(v)
        right = rng.random() < (0.8 if v == "2" else 0.6)
        rng.choice(replicas).bandit.reward(v, int(right), int(not right))
        if sync and n_replicas > 1 and i % 10 == 9:
            snaps = {f"r{j}": gw.bandit_snapshot() for j, gw in enumerate(replicas)}
            for gw in replicas:
                gw.merge_peers(snaps)
    return served


def test_four_replicas_converge_on_the_better_arm_as_one_gateway_does(bc_models):
    """Pulls of the worse arm (the regret) over 600 requests and 8 seeds: four replicas that add up each
    other's rewards explore as little as one gateway; four that do not would each explore on their own."""
    base = _replica(bc_models, BANDIT)
    seeds = range(8)
    one = sum(_bandit_run(base, 1, seed).count("1") for seed in seeds)
    four = sum(_bandit_run(base, 4, seed).count("1") for seed in seeds)
    alone = sum(_bandit_run(base, 4, seed, sync=False).count("1") for seed in seeds)
    assert four < 1.4 * one < alone, (one, four, alone)
    assert all(_bandit_run(base, 4, seed)[-200:].count("2") > 150 for seed in seeds)


def test_without_peers_the_replicas_learn_from_a_quarter_of_the_rewards(bc_models, bc_records):
    """The aggregation is what makes the difference: each replica's posterior holds all the rewards."""
    replicas = [_replica(bc_models, BANDIT) for _ in range(2)]
    rid = asyncio.run(replicas[0].predict({"inputs": bc_records[0]}))["request_id"]
    replicas[1].feedback({"request_id": rid, "label": 0})
    (version,) = replicas[1].bandit_snapshot()["rewards"]
    assert replicas[0].bandit.posterior(version) == (1.0, 1.0) != replicas[1].bandit.posterior(version)
    # The peer list may hold the replica itself: its own snapshot is recognised and not added twice.
    snaps = {"peer": replicas[1].bandit_snapshot(), "me": replicas[0].bandit_snapshot()}
    replicas[0].merge_peers(snaps)
    replicas[1].merge_peers({"peer": replicas[0].bandit_snapshot(), "me": replicas[1].bandit_snapshot()})
    assert replicas[0].bandit.posterior(version) == replicas[1].bandit.posterior(version)


def test_sticky_ab_split_is_the_same_on_every_replica_and_process():
    """crc32 of the key, not Python's salted hash(): the expected sides were computed once, by hand."""
    from airflow_mlops.serving.routing import Router

    ab = DeploymentConfig.parse(
        {
            "model_name": "bc",
            "strategy": "ab",
            "routes": [{"version": "1", "weight": 0.5}, {"version": "2", "weight": 0.5}],
        }
    )
    routers = [Router(ab, rng=random.Random(i)) for i in range(4)]
    sides = {key: {r.choose(key) for r in routers} for key in ("user-1", "user-2", "user-3", "alice", "bob")}
    assert all(len(s) == 1 for s in sides.values())
    import zlib

    assert {k: s.pop() for k, s in sides.items()} == {
        k: "1" if (zlib.crc32(k.encode()) & 0xFFFFFFFF) / 2**32 < 0.5 else "2" for k in sides
    }


def test_stage_then_commit_switches_only_at_commit(bc_models, bc_records):
    gw = _replica(bc_models)
    stage_id, staged = asyncio.run(gw.stage(DeploymentConfig.parse({**SINGLE, "routes": [{"version": "2"}]})))
    assert staged.config.versions == ["2"]
    assert asyncio.run(gw.predict({"inputs": bc_records[0]}))["model_version"] == "1"
    with pytest.raises(MlopsInputError, match="is not staged on this gateway"):
        asyncio.run(gw.commit("other"))
    asyncio.run(gw.commit(stage_id))
    assert asyncio.run(gw.predict({"inputs": bc_records[0]}))["model_version"] == "2"
    assert gw.discard() is False
