"""The stack's monitoring against real services: every metric the dashboard and the alerts use exists.

Two real gateway replicas (``python -m airflow_mlops.serving``, one request secret, as the stack runs
them) serve a model registered on the session's real MLflow server; one answers a batch prediction, the
other receives its ground truth; drift results are pushed to a real Pushgateway; a real Prometheus runs
the stack's own prometheus.yml and alerts.yml (one target per replica), with only the container
addresses replaced by loopback ones. Nothing is mocked.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.stack.stack_files import (
    ALERT_RULES,
    DRIFT_METRICS,
    GATEWAY_METRICS,
    PROMETHEUS_BUILTIN,
    PROMETHEUS_CONFIG,
    alert_rules,
    as_promql,
    dashboard_queries,
    exposed_names,
    metric_names,
    recording_rules,
    selector_labels,
)
from tests.servers import FEEDBACK_TOKEN, free_port, start_gateway, start_process, start_pushgateway, stop

# The stack's replicas (prometheus.yml's targets), in order.
REPLICAS = ("gateway-1:8080", "gateway-2:8080")
REQUEST_SECRET = "stack-test-request-secret-0123456789"

ADMIN_TOKEN = "stack-test-admin-token"
ROWS = 60  # > the alerts' 50-sample minimum
# Labels Prometheus adds or the queries use on built-in series.
SCRAPE_LABELS = {"job", "instance", "alertname", "alertstate", "__name__"}
# Shadow metrics have series only in shadow mode; everything else must have data here.
MAY_BE_EMPTY = {"mlops_gateway_shadow_requests_total", "mlops_gateway_shadow_agreement_total"}

pytestmark = pytest.mark.skipif(
    not (shutil.which("prometheus") and shutil.which("prometheus-pushgateway")),
    reason="prometheus and prometheus-pushgateway are absent: apt-get install -y prometheus prometheus-pushgateway",
)


def _http(url: str, body: Any = None, method: str | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {FEEDBACK_TOKEN}"}  # /feedback's
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=30) as r:
        raw = r.read()
    return json.loads(raw) if raw[:1] in (b"{", b"[") else raw.decode()


@dataclass
class Stack:
    model: str
    version: str
    replicas: list[str]
    pushgateway: str
    prometheus: str

    def query(self, promql: str) -> list[dict[str, Any]]:
        out = _http(f"{self.prometheus}/api/v1/query?{urllib.parse.urlencode({'query': promql})}")
        assert out["status"] == "success", out
        return out["data"]["result"]

    def wait_for(self, promql: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if result or time.monotonic() > deadline:
                return result
            time.sleep(0.5)


def _register_model(tracking_uri: str, name: str) -> tuple[str, Any]:
    from sklearn.datasets import load_breast_cancer

    from airflow_mlops.core.model_logging import DatasetInfo, ensure_experiment, log_model_run
    from airflow_mlops.core.tracking import MlflowTarget
    from airflow_mlops.core.training import Candidate, train_model

    frame = load_breast_cancer(as_frame=True).frame
    with MlflowTarget(tracking_uri).activate():
        eid = ensure_experiment(f"stack-tests-{name}")
        outcome = train_model(
            frame, "target", [Candidate("sklearn.linear_model.LogisticRegression", {"max_iter": 500})]
        )
        info = log_model_run(
            outcome, model_name=name, experiment_id=eid, dataset=DatasetInfo(frame, "/data/breast_cancer.csv")
        )
    return str(info["version"]), frame


def _push_drift(pushgateway: str, model: str, reference: Any) -> dict[str, Any]:
    """Run the DriftSensor's engine on a shifted copy of ``reference`` and push its verdict with the
    DriftSensor's exporter (job ``mlops_drift``, grouped by model)."""
    from airflow_mlops.core.drift.engine import detect_drift
    from airflow_mlops.core.drift.export import push_drift_metrics

    current = reference * 1.5 + reference.std()
    summary = detect_drift(reference, current).summary()
    push_drift_metrics(pushgateway, summary, model)
    return summary


def _start_prometheus(root: Path, replicas: list[str], pushgateway: str) -> tuple[subprocess.Popen, str]:
    """Prometheus with the stack's prometheus.yml and alerts.yml; container addresses made loopback ones."""
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    addresses = {
        **{name: url.removeprefix("http://") for name, url in zip(REPLICAS, replicas, strict=True)},
        "pushgateway:9091": pushgateway.removeprefix("http://"),
        "localhost:9090": f"127.0.0.1:{port}",
    }
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            static["targets"] = [addresses[t] for t in static["targets"]]
    (root / "prometheus.yml").write_text(yaml.safe_dump(config))
    shutil.copy(ALERT_RULES, root / ALERT_RULES.name)  # rule_files stays relative, as in the stack
    args = [
        shutil.which("prometheus") or "prometheus", f"--config.file={root / 'prometheus.yml'}",
        f"--web.listen-address=127.0.0.1:{port}", f"--storage.tsdb.path={root / 'data'}",
    ]  # fmt: skip
    return start_process(args, root, "prometheus", "/-/ready", port)


def _start_replicas(
    root: Path, tracking_uri: str, model: str, version: str
) -> list[tuple[subprocess.Popen, str]]:
    """The stack's gateway replicas as the contract starts them (one request secret, each its own state and
    counter files), serving ``model`` ``version`` alone; started side by side."""
    from concurrent.futures import ThreadPoolExecutor

    config = {"model_name": model, "strategy": "single", "routes": [{"version": version}]}

    def one(name: str) -> tuple[subprocess.Popen, str]:
        folder = root / name.split(":")[0]
        files = ("--state-file", str(folder / "state" / "deployment.json"),
                 "--counter-file", str(folder / "state" / "counters.json"))  # fmt: skip
        return start_gateway(folder, tracking_uri, config=config, admin_token=ADMIN_TOKEN, extra_args=files)

    # start_gateway passes this process's environment on: the secret the replicas share.
    with pytest.MonkeyPatch.context() as mp, ThreadPoolExecutor(len(REPLICAS)) as pool:
        mp.setenv("MLOPS_GATEWAY_REQUEST_SECRET", REQUEST_SECRET)
        return list(pool.map(one, REPLICAS))


@pytest.fixture(scope="module")
def stack(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("stack-live")
    model = f"stack-live-{os.getpid()}"
    version, frame = _register_model(mlflow_server, model)
    procs: list[subprocess.Popen] = []
    try:
        started = _start_replicas(root / "gateway", mlflow_server, model, version)
        procs += [proc for proc, _ in started]
        replicas = [url for _, url in started]
        pg_proc, pushgateway = start_pushgateway(root / "pushgateway")
        procs.append(pg_proc)
        prom_proc, prometheus = _start_prometheus(root / "prometheus", replicas, pushgateway)
        procs.append(prom_proc)

        live = Stack(model, version, replicas, pushgateway, prometheus)
        # As in the stack, Prometheus has seen every replica's counters at 0 before the first feedback
        # (increase() counts from a series' first scrape).
        born = f'count(mlops_gateway_feedback_total{{model="{model}"}} == 0) == {len(REPLICAS)}'
        assert live.wait_for(born, timeout=60), "Prometheus did not scrape both replicas"
        # A batch of real rows on one replica, then ground truth that contradicts the model on the other
        # (the signed request id joins there): the live F1 of both together falls below the floor.
        X = frame.drop(columns="target").head(ROWS)
        answer = _http(f"{replicas[0]}/predict", {"inputs": X.to_dict(orient="records")})
        assert answer["model_version"] == version and len(answer["predictions"]) == ROWS
        wrong = [1 - int(p) for p in answer["predictions"]]
        _http(f"{replicas[1]}/feedback", {"request_id": answer["request_id"], "labels": wrong})
        summary = _push_drift(pushgateway, model, frame[list(X.columns[:3])])
        assert summary["drift_detected"] and summary["share_drifted"] >= 0.5, summary
        yield live
    finally:
        for proc in reversed(procs):
            stop(proc)


def _scraped(*urls: str) -> dict[str, set[str]]:
    """The series names and labels of these pages together."""
    out: dict[str, set[str]] = {}
    for url in urls:
        for name, labels in exposed_names(_http(f"{url}/metrics")).items():
            out.setdefault(name, set()).update(labels)
    return out


def _dashboard_and_alert_queries() -> list[str]:
    return [*dashboard_queries(), *(r["expr"] for r in alert_rules()), *recording_rules().values()]


def test_gateway_exports_the_contract_metrics(stack: Stack) -> None:
    exposed = _scraped(*stack.replicas)
    missing = GATEWAY_METRICS - set(exposed)
    assert not missing, f"the gateway's /metrics lacks {sorted(missing)}"
    for name in GATEWAY_METRICS - MAY_BE_EMPTY - {"mlops_gateway_champion_version"}:
        assert {"model", "version"} <= exposed[name], (name, exposed[name])
    assert "model" in exposed["mlops_gateway_champion_version"]


def test_pushed_drift_metrics_reach_the_pushgateway(stack: Stack) -> None:
    exposed = _scraped(stack.pushgateway)
    assert DRIFT_METRICS <= set(exposed), sorted(n for n in exposed if n.startswith("mlops"))
    assert {"model", "feature", "test"} <= exposed["mlops_drift_score"]


def test_drift_metric_names_match_the_drift_sensor() -> None:
    """The drift series this stack watches are exactly those the DriftSensor's exporter builds."""
    from airflow_mlops.core.drift.export import JOB, drift_registry

    summary = {"columns": {"f": {"score": 0.01, "test": "ks"}}, "share_drifted": 1.0, "drift_detected": True}
    names = {m.name for m in drift_registry(summary, "m").collect()}
    assert names == DRIFT_METRICS
    assert JOB == "mlops_drift"  # the job label the pushgateway scrape keeps (honor_labels)


def test_every_queried_metric_is_exported(stack: Stack) -> None:
    """Dashboard and alert queries name only series that the gateway or the Pushgateway really expose,
    with labels those series really carry."""
    exposed = {**_scraped(stack.pushgateway), **_scraped(*stack.replicas)}
    recorded = set(recording_rules())
    for query in _dashboard_and_alert_queries():
        for name in metric_names(query) - PROMETHEUS_BUILTIN - recorded:
            assert name in exposed, (
                f"{name!r} (in {query!r}) is exported by neither the gateway nor the DriftSensor"
            )
        for name, labels in selector_labels(query).items():
            if name in PROMETHEUS_BUILTIN | recorded or (name in MAY_BE_EMPTY and not exposed[name]):
                continue  # no series yet, so no labels to compare (shadow mode is not deployed here)
            unknown = labels - exposed[name] - SCRAPE_LABELS
            assert not unknown, f"{query!r} filters {name} on labels it does not have: {unknown}"


def test_prometheus_scrapes_every_target_with_the_stack_config(stack: Stack) -> None:
    def up() -> dict[str, int]:
        return {job: int(float(n)) for job, n in
                ((r["metric"]["job"], r["value"][1]) for r in stack.query("sum by (job) (up == 1)"))}  # fmt: skip

    wanted = {"mlops-gateway": len(REPLICAS), "pushgateway": 1}
    deadline = time.monotonic() + 30
    while {job: up().get(job) for job in wanted} != wanted and time.monotonic() < deadline:
        time.sleep(0.5)
    assert {job: up().get(job) for job in wanted} == wanted, (
        f"Prometheus does not scrape every target: {up()}"
    )
    # Each replica scraped by itself: the predictions counted on one, their feedback on the other.
    sel = f'model="{stack.model}",version="{stack.version}"'
    for family, per_replica in (("predictions", [ROWS, 0]), ("feedback", [0, ROWS])):
        by_instance = stack.wait_for(f"sum by (instance) (mlops_gateway_{family}_total{{{sel}}}) > 0")
        assert len(by_instance) == 1, by_instance
        seen = {r["metric"]["instance"]: float(r["value"][1]) for r in stack.query(
            f"sum by (instance) (mlops_gateway_{family}_total{{{sel}}})")}  # fmt: skip
        # (predictions_total is born at a replica's first prediction: absent on the other one.)
        got = {address: seen.get(address, 0.0) for address in addresses(stack)}
        assert got == dict(zip(addresses(stack), map(float, per_replica), strict=True)), (family, seen)
    # honor_labels: the pushed job label survives the scrape.
    pushed = stack.wait_for(f'mlops_drift_detected{{model="{stack.model}"}}')
    assert pushed and pushed[0]["metric"]["job"] == "mlops_drift"


def test_every_dashboard_query_answers_in_prometheus(stack: Stack) -> None:
    stack.wait_for(f'mlops:gateway_live_f1:15m{{model="{stack.model}"}}')
    stack.wait_for(f'mlops_drift_score{{model="{stack.model}"}}')
    for query in dashboard_queries():
        promql = as_promql(query)
        may_be_empty = bool(metric_names(query) & MAY_BE_EMPTY) or "ALERTS" in metric_names(query)
        result = stack.query(promql) if may_be_empty else stack.wait_for(promql, timeout=20)
        assert may_be_empty or result, f"no data for dashboard query {promql!r}"
    # One F1 per version over both replicas: the feedback contradicts every prediction.
    (f1,) = stack.query(f'mlops:gateway_live_f1:15m{{model="{stack.model}"}}')
    assert f1["metric"]["version"] == stack.version and float(f1["value"][1]) == 0.0, f1
    champions = stack.query(f'mlops_gateway_champion_version{{model="{stack.model}"}}')
    assert {r["metric"]["instance"] for r in champions} == set(addresses(stack))
    assert {r["value"][1] for r in champions} == {stack.version}
    features = {r["metric"]["feature"] for r in stack.query(f'mlops_drift_score{{model="{stack.model}"}}')}
    assert len(features) == 3


def addresses(stack: Stack) -> list[str]:
    """The replicas' ``host:port`` (Prometheus's ``instance`` labels)."""
    return [url.removeprefix("http://") for url in stack.replicas]


def _alerts(stack: Stack) -> dict[str, dict[str, Any]]:
    out = _http(f"{stack.prometheus}/api/v1/alerts")["data"]["alerts"]
    return {a["labels"]["alertname"]: a for a in out if a["labels"].get("model") == stack.model}


def test_alert_rules_load_and_fire_on_live_data(stack: Stack) -> None:
    """The stack's rules are loaded and healthy; drift fires at once, the F1 floor goes pending (for: 5m)."""
    deadline = time.monotonic() + 30
    while True:
        groups = _http(f"{stack.prometheus}/api/v1/rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        alerts = _alerts(stack)
        ready = {"MlopsDriftDetected", "MlopsDriftShareHigh", "MlopsLiveF1BelowFloor"} <= set(alerts)
        if (ready and all(r["health"] == "ok" for r in rules)) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert {r["name"] for r in rules} == {r["alert"] for r in alert_rules()} | set(recording_rules())
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
    assert alerts["MlopsDriftDetected"]["state"] == "firing"
    assert alerts["MlopsDriftShareHigh"]["state"] == "firing"
    floor = alerts["MlopsLiveF1BelowFloor"]
    assert floor["state"] == "pending" and floor["labels"]["version"] == stack.version
    assert float(floor["value"]) < 0.85
    assert "MlopsGatewayDown" not in {
        a["labels"]["alertname"] for a in _http(f"{stack.prometheus}/api/v1/alerts")["data"]["alerts"]
    }
