"""The stack's files as the tests read them, and the metric names that its PromQL queries use."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[3]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
DOCKER = REPO_ROOT / "docker"
PROMETHEUS_CONFIG = DOCKER / "prometheus" / "prometheus.yml"
ALERT_RULES = DOCKER / "prometheus" / "alerts.yml"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "mlops.json"
GRAFANA_PROVISIONING = DOCKER / "grafana" / "provisioning"

# Series that Prometheus makes itself rather than scraping them.
PROMETHEUS_BUILTIN = {"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds", "scrape_samples_scraped"}

# Grafana's variables, replaced by what Grafana sends to Prometheus, so that queries can be checked.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h", "$model": ".*"}

_FUNCTIONS = {
    # aggregation operators
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
    "quantile", "limitk", "limit_ratio",
    # keywords and modifiers
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
    "offset", "atan2", "inf", "nan",
}  # fmt: skip


def load_yaml(path: Path) -> Any:
    """A YAML file, with its anchors and merge keys resolved."""
    return yaml.safe_load(path.read_text())


def compose() -> dict[str, Any]:
    """docker-compose.yaml as written (variables not interpolated)."""
    return load_yaml(COMPOSE_FILE)


def dashboard() -> dict[str, Any]:
    """The Grafana dashboard JSON."""
    return json.loads(DASHBOARD.read_text())


def dashboard_queries(dash: dict[str, Any] | None = None) -> list[str]:
    """Every PromQL expression of the dashboard: panel targets, nested row panels, annotations, variables."""
    dash = dash or dashboard()
    out: list[str] = []

    def panels(items: list[dict[str, Any]]) -> None:
        for p in items:
            out.extend(t["expr"] for t in p.get("targets", []) if t.get("expr"))
            panels(p.get("panels", []))

    panels(dash.get("panels", []))
    out.extend(a["expr"] for a in dash.get("annotations", {}).get("list", []) if a.get("expr"))
    for var in dash.get("templating", {}).get("list", []):
        query = var.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        if var.get("type") == "query" and query:
            out.append(query)
    return out


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of alerts.yml."""
    return [rule for group in load_yaml(ALERT_RULES)["groups"] for rule in group["rules"] if "alert" in rule]


def recording_rules() -> dict[str, str]:
    """``{recorded series: expression}`` of alerts.yml."""
    groups = load_yaml(ALERT_RULES)["groups"]
    return {rule["record"]: rule["expr"] for group in groups for rule in group["rules"] if "record" in rule}


def as_promql(query: str) -> str:
    """A dashboard query made plain PromQL: Grafana's variables and ``label_values()`` resolved."""
    for var, value in GRAFANA_VARIABLES.items():
        query = query.replace(var, value)
    # label_values(metric, label) is Grafana's; the series selector inside it is what Prometheus sees.
    m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", query, re.S)
    return m.group(1) if m else query


def metric_names(query: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords and label names left out)."""
    q = as_promql(query)
    q = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', q)  # string literals
    q = re.sub(r"\{[^}]*\}", " ", q)  # label matchers
    q = re.sub(r"\[[^\]]*\]", " ", q)  # range and subquery durations
    # label lists of grouping and vector matching
    q = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", q)
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?", q):
        name, call = m.group(1), m.group(2)
        if call or name in _FUNCTIONS or re.fullmatch(r"\d+[smhdwy]", name):
            continue
        names.add(name)
    return names


def selector_labels(query: str) -> dict[str, set[str]]:
    """``{metric: label names in its matchers}`` for every ``metric{...}`` selector of a query."""
    q = as_promql(query)
    out: dict[str, set[str]] = {}
    for m in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}", q):
        labels = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", m.group(2)))
        out.setdefault(m.group(1), set()).update(labels)
    return out


def exposed_names(metrics_text: str) -> dict[str, set[str]]:
    """``{series name: label names}`` a Prometheus text exposition offers.

    Names come from ``# TYPE`` lines (with the suffixes of the type, so that a histogram or counter with
    no sample yet still counts) and from the samples; labels from the samples.
    """
    suffixes = {"histogram": ("_bucket", "_count", "_sum"), "summary": ("_count", "_sum", "")}
    out: dict[str, set[str]] = {}
    for line in metrics_text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            for suffix in suffixes.get(kind, ("",)):
                out.setdefault(name + suffix, set())
            if kind == "counter" and not name.endswith("_total"):
                out.setdefault(name + "_total", set())
        elif line and not line.startswith("#"):
            m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s", line)
            if m:
                labels = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', m.group(2) or ""))
                out.setdefault(m.group(1), set()).update(labels)
    return out


# The metric contract shared by the gateway, the DriftSensor and the stack (series names as scraped).
# The live tests check these against a running gateway and against what the DriftSensor pushes.
GATEWAY_METRICS = {
    "mlops_gateway_requests_total",
    "mlops_gateway_request_latency_seconds_bucket",
    "mlops_gateway_request_latency_seconds_count",
    "mlops_gateway_request_latency_seconds_sum",
    "mlops_gateway_predictions_total",
    "mlops_gateway_feedback_total",
    # The counters that add up over replicas (live quality in the rules and the dashboard).
    "mlops_gateway_feedback_class_total",
    "mlops_gateway_feedback_correct_total",
    # One replica's sliding window each (its own /metrics page and the releases view).
    "mlops_gateway_live_accuracy",
    "mlops_gateway_live_precision",
    "mlops_gateway_live_recall",
    "mlops_gateway_live_f1",
    "mlops_gateway_live_samples",
    "mlops_gateway_route_weight",
    "mlops_gateway_champion_version",
    "mlops_gateway_shadow_requests_total",
    "mlops_gateway_shadow_agreement_total",
}
DRIFT_METRICS = {"mlops_drift_score", "mlops_drift_share", "mlops_drift_detected"}
# Per replica only: the stack's rules and dashboard add up counters instead (a sum of windows means nothing).
PER_REPLICA_GAUGES = {f"mlops_gateway_live_{m}" for m in ("accuracy", "precision", "recall", "f1", "samples")}
