"""Four real gateway processes behind Debian's nginx, scraped by a real Prometheus, feedback deduplicated
in a real Redis: traffic through the balancer, delayed feedback to random replicas, one replica stopped
and started again midway. Nothing is mocked.
"""

from __future__ import annotations

import json
import queue
import random
import threading
import time
import urllib.request
import uuid

import pytest

from airflow_mlops.core.live_queries import counter_query
from airflow_mlops.deploy.backends import GatewaySpec, LocalBackend
from airflow_mlops.deploy.replicas import ReplicatedBackend
from airflow_mlops.serving.config import DeploymentConfig
from tests.integration.serving.conftest import ADMIN_TOKEN
from tests.servers import FEEDBACK_TOKEN

SECRET = "integration-replica-secret-7f3a9c"
TRAFFIC_SECONDS = 24
CLIENTS = 4


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    from tests.deployment.harness import start_redis

    proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    proc.terminate()
    proc.wait(10)


def _post(url: str, body: dict, token: str | None = None, timeout: float = 10.0) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _admin(url: str, method: str, body: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(
        url,
        None if body is None else json.dumps(body).encode(),
        {"Content-Type": "application/json", "Authorization": f"Bearer {ADMIN_TOKEN}"},
        method=method,
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_four_replicas_behind_nginx_one_restarted_f1_adds_up(
    bc_versions, mlflow_server, prometheus, redis_url, tmp_path
):
    from airflow_mlops.core.metrics import classification_metrics
    from airflow_mlops.core.prediction_log import (
        LABEL,
        MODEL_VERSION,
        PREDICTION,
        REQUEST_ID,
        _read_feedback,
        read_window,
    )

    name, (v1, v2) = bc_versions["name"], bc_versions["versions"]
    records, truth = bc_versions["records"], bc_versions["labels"]
    canary = {
        "model_name": name,
        "strategy": "canary",
        "routes": [{"version": v1, "weight": 0.5}, {"version": v2, "weight": 0.5}],
    }
    backend = ReplicatedBackend(
        LocalBackend(extra_env={"MLOPS_GATEWAY_DEDUP_URL": redis_url}), 4, request_secret=SECRET
    )
    spec = GatewaySpec(
        name="replicas", config=DeploymentConfig.parse(canary), tracking_uri=mlflow_server, admin_token=ADMIN_TOKEN,
        feedback_token=FEEDBACK_TOKEN, workdir=tmp_path, log_dir=tmp_path / "log",
    )  # fmt: skip
    started = time.monotonic()
    handle = backend.start(spec, ready_timeout=150)
    print(f"replicas: 4 started in {time.monotonic() - started:.0f} s")
    reps = handle["replicas"]
    ports = [h["port"] for h in reps]
    lb = handle["endpoint"]
    try:
        run = uuid.uuid4().hex[:8]
        for p in ports:
            prometheus.add_target(f"127.0.0.1:{p}", {"replica_run": run})
        # Scraped at 0 before the first feedback, so that increase() misses nothing.
        prometheus.wait_for(f'count(up{{replica_run="{run}"}} == 1) == 4', timeout=30)
        # Traffic through the balancer, feedback 0.3-2 s later to a random replica, directly.
        rng = random.Random(7)
        due: queue.Queue = queue.Queue()
        served: list[tuple[str, str]] = []
        failed: list[str] = []
        feedback_failed: list[str] = []
        stop_at = time.monotonic() + TRAFFIC_SECONDS

        def client(seed: int) -> None:
            r = random.Random(seed)
            while time.monotonic() < stop_at:
                i = r.randrange(len(records))
                try:
                    status, body = _post(f"{lb}/predict", {"inputs": records[i]})
                except OSError as e:
                    failed.append(repr(e))
                    continue
                if status != 200:
                    failed.append(f"{status} {body}")
                    continue
                served.append((body["request_id"], body["model_version"]))
                due.put((time.monotonic() + r.uniform(0.3, 2.0), body["request_id"], truth[i]))

        def feedback() -> None:
            while True:
                item = due.get()
                if item is None:
                    return
                when, rid, label = item
                time.sleep(max(0.0, when - time.monotonic()))
                order = rng.sample(ports, len(ports))
                for attempt, port in enumerate(order * 3):
                    try:
                        status, body = _post(
                            f"http://127.0.0.1:{port}/feedback",
                            {"request_id": rid, "label": label},
                            FEEDBACK_TOKEN,
                        )
                    except OSError:
                        time.sleep(0.2)  # that replica is down: another one joins it just as well
                        continue
                    if status in (200, 409):  # 409: counted already, by a replica whose answer was lost
                        break
                    if status != 503 or attempt == len(order) * 3 - 1:
                        feedback_failed.append(f"{status} {body}")
                        break

        clients = [threading.Thread(target=client, args=(s,)) for s in range(CLIENTS)]
        senders = [threading.Thread(target=feedback) for _ in range(3)]
        for t in clients + senders:
            t.start()
        time.sleep(TRAFFIC_SECONDS / 3)
        # One replica stops (SIGTERM: in-flight requests finish, counters are saved) and starts again.
        backend.inner.stop(reps[2])
        killed_at = len(served)
        reps[2] = backend.inner.start(backend.replica_spec(spec, 2, ports, SECRET), ready_timeout=120)
        restarted_at = len(served)
        print(f"replicas: replica 2 back after {time.monotonic() - started:.0f} s")
        for t in clients:
            t.join()
        for _ in senders:
            due.put(None)
        for t in senders:
            t.join()
        assert failed == [] and feedback_failed == [], (failed[:5], feedback_failed[:5])
        assert restarted_at > killed_at  # traffic went on while the replica was down
        assert len(served) > 200
        time.sleep(3)  # two more scrapes of every replica

        def promql(q: str) -> dict[str, float]:
            return {s["metric"]["version"]: float(s["value"][1]) for s in prometheus.query(q)}

        exact = promql(
            counter_query("f1", None).replace("{model}", name).replace('version="{version}"', 'version=~".+"')
        )
        windowed = promql(
            counter_query("f1", "10m")
            .replace("{model}", name)
            .replace('version="{version}"', 'version=~".+"')
        )

        # Two-phase change through the balancer: a version that cannot load changes nothing anywhere...
        status, body = _admin(
            f"{lb}/admin/deployment",
            "PUT",
            {**canary, "routes": [{"version": v1, "weight": 0.5}, {"version": "999", "weight": 0.5}]},
        )
        assert status == 422 and "No replica changed" in body["detail"], body
        assert {_admin(f"http://127.0.0.1:{p}/admin/deployment", "GET")[1]["strategy"] for p in ports} == {
            "canary"
        }
        # ...and a good one is on every replica when the answer comes.
        status, body = _admin(
            f"{lb}/admin/deployment", "PUT", {"model_name": name, "routes": [{"version": v1}]}
        )
        assert status == 200, body
        served_now = [_admin(f"http://127.0.0.1:{p}/admin/deployment", "GET")[1]["routes"] for p in ports]
        assert served_now == [[{"version": v1, "weight": 1.0}]] * 4
    finally:
        backend.stop(handle | {"replicas": reps})  # a clean stop writes what the logs held
    # The truth: the prediction log joined to the feedback log, over all replicas.
    from datetime import datetime, timezone

    log = read_window(
        tmp_path / "log",
        name,
        datetime(1970, 1, 1, tzinfo=timezone.utc),
        datetime.now(timezone.utc),
        keep_meta=True,
    )
    labels = _read_feedback(tmp_path / "log", name)
    assert len(labels) == len(served) == labels[REQUEST_ID].nunique()  # each labelled once, none lost
    joined = log.merge(labels[[REQUEST_ID, LABEL]], on=REQUEST_ID)
    assert len(joined) == len(served)
    from_logs = {
        v: classification_metrics(g[LABEL].tolist(), g[PREDICTION].tolist(), classes=[0, 1])["f1"]
        for v, g in joined.groupby(MODEL_VERSION)
    }
    assert set(exact) == set(from_logs) == {v1, v2}
    for v in from_logs:
        assert exact[v] == pytest.approx(from_logs[v], abs=1e-9), (v, exact, from_logs)
        # increase() extrapolates each replica's series to the window's end: close, not exact.
        assert windowed[v] == pytest.approx(from_logs[v], abs=0.02), (v, windowed, from_logs)
    print(
        f"replicas: {len(served)} requests, {len(labels)} labelled, {len(failed)} failed, f1 {from_logs}, "
        f"{time.monotonic() - started:.0f} s"
    )
