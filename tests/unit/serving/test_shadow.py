"""The shadow worker: micro-batched scoring by matrix or by records, agreement counts, bounded queue."""

from __future__ import annotations

import time

import pytest

from airflow_mlops.serving.live_metrics import LiveMetrics
from airflow_mlops.serving.shadow import ShadowWorker
from tests.unit.serving.conftest import wrap

pytestmark = pytest.mark.filterwarnings("ignore:X does not have valid feature names")


@pytest.fixture(scope="module")
def subset_model(bc_frame):
    """A shadow that takes only five of the columns (another signature: scored from the records)."""
    from airflow_mlops.core.training import Candidate, train_model

    cols = ["mean radius", "mean texture", "mean area", "worst area", "worst radius", "target"]
    outcome = train_model(bc_frame[cols], "target", [Candidate("sklearn.linear_model.LogisticRegression")])
    return wrap(outcome, version="9")


def _wait(worker: ShadowWorker, n: int) -> None:
    deadline = time.monotonic() + 10
    while worker.processed < n:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def _count(metrics: LiveMetrics, name: str, version: str) -> float:
    from prometheus_client import generate_latest

    from airflow_mlops.serving.client import parse_metrics

    key = (name, frozenset({("model", "bc"), ("version", version)}))
    return parse_metrics(generate_latest(metrics.registry).decode()).get(key, 0.0)


def test_matrix_and_record_copies_are_scored_and_compared(bc_models, bc_records, subset_model):
    metrics = LiveMetrics()
    worker = ShadowWorker(metrics, maxsize=1000, interval=0.01)
    champion = bc_models["1"]
    expected = {"2": 0, "9": 0}
    try:
        for i in range(120):
            recs = [bc_records[i]]
            batch = champion.batch(recs)
            champ, _ = champion.predict(batch)
            for shadow in (bc_models["2"], subset_model):
                worker.submit(shadow, recs, batch, champ)
                mine, _ = shadow.predict(shadow.batch(recs))
                expected[shadow.version] += int(mine[0] == champ[0])
        _wait(worker, 240)
    finally:
        worker.close()
    for version in ("2", "9"):
        assert _count(metrics, "mlops_gateway_shadow_requests_total", version) == 120
        assert _count(metrics, "mlops_gateway_shadow_agreement_total", version) == expected[version]
    assert expected["2"] < 120  # the weak model disagrees somewhere: agreement is really measured


def test_inputs_the_shadow_rejects_count_as_disagreement(bc_models, bc_records, subset_model):
    metrics = LiveMetrics()
    worker = ShadowWorker(metrics, maxsize=1000, interval=0.01)
    champion = bc_models["1"]
    good = [bc_records[0]]
    bad = [{k: v for k, v in bc_records[1].items() if k != "worst area"}]
    try:
        for recs in (good, bad):
            # The champion saw full rows; the shadow's copy of `bad` lacks a column it needs.
            batch = champion.batch(good)
            champ, _ = subset_model.predict(subset_model.batch(good))
            worker.submit(subset_model, recs, batch, champ)
        _wait(worker, 2)
    finally:
        worker.close()
    assert _count(metrics, "mlops_gateway_shadow_requests_total", "9") == 2
    assert _count(metrics, "mlops_gateway_shadow_agreement_total", "9") == 1


def test_a_full_queue_drops_and_counts(bc_models, bc_records):
    metrics = LiveMetrics()
    worker = ShadowWorker(metrics, maxsize=3, interval=3600)
    batch = bc_models["1"].batch([bc_records[0]])
    champ, _ = bc_models["1"].predict(batch)
    for _ in range(5):
        worker.submit(bc_models["2"], [bc_records[0]], batch, champ)
    assert worker.pending == 3
    assert _count(metrics, "mlops_gateway_shadow_dropped_total", "2") == 2
    worker.close()  # scores what is queued before stopping
    assert worker.processed == 3
