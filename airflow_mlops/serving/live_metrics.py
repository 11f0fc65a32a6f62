"""The gateway's Prometheus metrics, per model version, in a registry owned by one app instance.

Live accuracy, precision, recall and F1 come from the ground truth sent to ``/feedback``, over a
sliding window of the last labelled predictions of each version, computed with the same metric
functions as training (:mod:`airflow_mlops.core.metrics`) so offline and live numbers compare.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from airflow_mlops.core.metrics import classification_metrics

LABELS = ("model", "version")
# Buckets sized for a fast in-process model: most requests land between 0.5 and 20 ms.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
LIVE = ("accuracy", "precision", "recall", "f1")


class _Window:
    """The last ``size`` (true, predicted) label pairs of one version, and its class labels."""

    def __init__(self, size: int) -> None:
        self.pairs: deque[tuple[Any, Any]] = deque(maxlen=size)
        self.classes: list[Any] | None = None
        self.cache: dict[str, float] | None = None


class LiveMetrics(Collector):
    """All gateway metrics; the live-quality gauges are computed when Prometheus scrapes.

    :param window: labelled predictions kept per version for the live metrics.
    """

    def __init__(self, window: int = 1000) -> None:
        self.window = window
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "mlops_gateway_requests", "Prediction requests by outcome.", (*LABELS, "status"), registry=r
        )
        self.latency = Histogram(
            "mlops_gateway_request_latency_seconds",
            "Time to answer a prediction request.",
            LABELS,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predictions = Counter("mlops_gateway_predictions", "Rows predicted.", LABELS, registry=r)
        self.feedback = Counter("mlops_gateway_feedback", "Labelled rows received.", LABELS, registry=r)
        self.route_weight = Gauge(
            "mlops_gateway_route_weight", "Share of traffic routed.", LABELS, registry=r
        )
        self.champion = Gauge(
            "mlops_gateway_champion_version", "Version number of the champion.", ("model",), registry=r
        )
        self.shadow_requests = Counter(
            "mlops_gateway_shadow_requests", "Requests copied to a shadow version.", LABELS, registry=r
        )
        self.shadow_agreement = Counter(
            "mlops_gateway_shadow_agreement",
            "Shadow requests whose predictions all equal the champion's.",
            LABELS,
            registry=r,
        )
        self.shadow_dropped = Counter(
            "mlops_gateway_shadow_dropped",
            "Shadow copies dropped because the shadow queue was full.",
            LABELS,
            registry=r,
        )
        # log="predictions" | "feedback": rows lost (buffer bound while writes fail, or at shutdown),
        # failed writes (retried) and rows waiting in memory.
        self.log_dropped = Counter(
            "mlops_gateway_log_dropped_rows",
            "Rows of the prediction or feedback log dropped (the oldest, while writes failed).",
            ("log",),
            registry=r,
        )
        self.log_write_errors = Counter(
            "mlops_gateway_log_write_errors",
            "Failed writes of the prediction or feedback log (the rows are kept and retried).",
            ("log",),
            registry=r,
        )
        self.log_held = Gauge(
            "mlops_gateway_log_held_rows", "Log rows in memory, not yet written.", ("log",), registry=r
        )
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str], _Window] = {}
        r.register(self)

    def observe_feedback(
        self,
        model: str,
        version: str,
        y_true: Sequence[Any],
        y_pred: Sequence[Any],
        classes: list[Any] | None,
    ) -> None:
        """Add labelled predictions of one version to its window.

        :param model: model name.
        :param version: the version that predicted.
        :param y_true: true labels.
        :param y_pred: the predictions it made.
        :param classes: the model's class labels (None for regressors: counted, no live quality).
        """
        self.feedback.labels(model, version).inc(len(y_true))
        if classes is None:
            return
        with self._lock:
            w = self._windows.get((model, version))
            if w is None:
                w = self._windows[(model, version)] = _Window(self.window)
            w.classes = classes
            w.pairs.extend(zip(y_true, y_pred, strict=True))
            w.cache = None

    def live(self, model: str, version: str) -> dict[str, float]:
        """Live accuracy/precision/recall/F1 and the sample count of one version (empty if unlabelled)."""
        with self._lock:
            w = self._windows.get((model, version))
            if w is None or not w.pairs:
                return {}
            if w.cache is None:
                y_true, y_pred = zip(*w.pairs, strict=True)
                m = classification_metrics(list(y_true), list(y_pred), classes=w.classes)
                w.cache = {k: m[k] for k in LIVE} | {"samples": float(len(w.pairs))}
            return dict(w.cache)

    def forget(self, model: str, keep: Sequence[str]) -> None:
        """Drop the live windows of versions of ``model`` no longer served."""
        with self._lock:
            for key in [k for k in self._windows if k[0] == model and k[1] not in keep]:
                del self._windows[key]

    def set_routes(
        self, model: str, weights: dict[str, float], champion: str, previous: Sequence[str]
    ) -> None:
        """Publish the route weights (0 for versions that left) and the champion's version number."""
        for v in previous:
            if v not in weights:
                self.route_weight.labels(model, v).set(0.0)
        for v, w in weights.items():
            self.route_weight.labels(model, v).set(w)
        if champion.isdigit():
            self.champion.labels(model).set(int(champion))

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        families = {
            name: GaugeMetricFamily(
                f"mlops_gateway_live_{name}", f"Live {name} over the feedback window.", labels=list(LABELS)
            )
            for name in (*LIVE, "samples")
        }
        with self._lock:
            keys = list(self._windows)
        for model, version in keys:
            values = self.live(model, version)
            for name, value in values.items():
                families[name].add_metric([model, version], value)
        yield from families.values()
