"""Load with a hot swap: 8 concurrent clients for 30 s against a real gateway process on loopback,
the champion swapped in the middle; zero failed requests and zero lost feedback."""

from __future__ import annotations

import os
import random
import threading
import time

import pytest

from airflow_mlops.serving.client import GatewayClient, parse_metrics
from tests.integration.serving.conftest import ADMIN_TOKEN
from tests.servers import FEEDBACK_TOKEN, start_gateway, stop

CLIENTS = 8
SECONDS = float(os.environ.get("MLOPS_LOAD_SECONDS", "30"))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_hot_swap_under_load_loses_nothing(tmp_path, mlflow_server, bc_versions):
    from mlflow import MlflowClient

    name, records, labels = bc_versions["name"], bc_versions["records"], bc_versions["labels"]
    config = {"model_name": name, "strategy": "single", "routes": [{"version": "@champion"}]}
    registry = MlflowClient(mlflow_server, mlflow_server)
    registry.set_registered_model_alias(name, "champion", "1")
    proc, url = start_gateway(tmp_path, mlflow_server, config, admin_token=ADMIN_TOKEN)
    lock = threading.Lock()
    stats = {"predictions": 0, "rows": 0, "feedback": 0, "failures": [], "served": {}}
    swapped_at: list[float] = []
    after_swap_versions: set[str] = set()
    deadline = time.monotonic() + SECONDS

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        mine = {"predictions": 0, "rows": 0, "feedback": 0, "served": {}}
        with GatewayClient(url, timeout=15, feedback_token=FEEDBACK_TOKEN) as c:
            while time.monotonic() < deadline:
                n = 1 if rng.random() < 0.8 else rng.randint(2, 20)
                idx = [rng.randrange(len(records)) for _ in range(n)]
                sent_at = time.monotonic()
                try:
                    answer = c.predict(records[idx[0]] if n == 1 else [records[i] for i in idx])
                    mine["predictions"] += 1
                    mine["rows"] += n
                    v = answer["model_version"]
                    mine["served"][v] = mine["served"].get(v, 0) + 1
                    if swapped_at and sent_at > swapped_at[0]:
                        with lock:
                            after_swap_versions.add(v)
                    if n == 1:
                        ack = c.feedback(answer["request_id"], label=labels[idx[0]])
                    else:
                        ack = c.feedback(answer["request_id"], labels=[labels[i] for i in idx])
                    assert ack["accepted"] == n
                    mine["feedback"] += n
                except Exception as e:  # noqa: BLE001 - every failure is collected and reported
                    with lock:
                        stats["failures"].append(repr(e))
        with lock:
            for k in ("predictions", "rows", "feedback"):
                stats[k] += mine[k]
            for v, k in mine["served"].items():
                stats["served"][v] = stats["served"].get(v, 0) + k

    try:
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        time.sleep(SECONDS / 2)
        # The hot swap: promote version 2 in the registry, then tell the gateway to follow the alias.
        registry.set_registered_model_alias(name, "champion", "2")
        with GatewayClient(url, admin_token=ADMIN_TOKEN) as admin:
            applied = admin.put_deployment(config)
            swapped_at.append(time.monotonic())
        for t in threads:
            t.join(timeout=SECONDS + 60)
        with GatewayClient(url) as c:
            metrics = parse_metrics(c.metrics_text())
    finally:
        stop(proc)
    print(
        f"\nload: {CLIENTS} clients, {SECONDS:.0f} s: {stats['predictions']} requests "
        f"({stats['rows']} rows), {stats['feedback']} labelled rows acknowledged, served by version "
        f"{stats['served']}, {len(stats['failures'])} failures"
    )
    assert applied["routes"] == [{"version": "2", "weight": 1.0}]
    assert stats["failures"] == []
    assert stats["predictions"] > 50 * SECONDS / 30  # it really was under load
    assert set(stats["served"]) == {"1", "2"}
    assert after_swap_versions == {"2"}  # once the swap answered, only the new champion serves

    def total(metric: str, **labels: str) -> float:
        return sum(
            v
            for (n, lab), v in metrics.items()
            if n == metric and ("model", name) in lab and all((k, x) in lab for k, x in labels.items())
        )

    # Zero lost feedback: every acknowledged label reached the live metrics of the version that served.
    assert total("mlops_gateway_feedback_total") == stats["feedback"] == stats["rows"]
    assert total("mlops_gateway_requests_total", status="200") == stats["predictions"]
    assert total("mlops_gateway_predictions_total") == stats["rows"]
    for v, count in stats["served"].items():
        assert total("mlops_gateway_requests_total", status="200", version=v) == count
