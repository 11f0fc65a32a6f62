"""The gateway's Prometheus metrics, per model version, in a registry owned by one app instance.

Live quality comes in two forms:

- counters that add up across replicas (``mlops_gateway_feedback_class_total`` with ``kind`` = ``tp``,
  ``fp``, ``fn``, ``weight``; ``mlops_gateway_feedback_correct_total``; for regressors the sums of
  errors, squared errors, labels and squared labels), from which PromQL computes accuracy, precision,
  recall, F1, MAE, RMSE and R2 over any window and any number of replicas (the queries are in
  :mod:`airflow_mlops.core.live_queries`);
- the ``mlops_gateway_live_*`` gauges: accuracy, precision, recall and F1 over a sliding window of the
  last labelled predictions of each version on *this replica only*, computed with the same metric
  functions as training (:mod:`airflow_mlops.core.metrics`) so offline and live numbers compare.

``weight`` makes one formula serve both averagings of :func:`~airflow_mlops.core.metrics.classification_metrics`:
binary models put all the weight on the positive class (the last one), multiclass models weight each
class by its support, so ``sum(weight * f1_c) / sum(weight)`` is sklearn's binary or weighted F1.
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
CLASS_KINDS = ("tp", "fp", "fn", "weight")
ERROR_KINDS = (
    "error_pos",
    "error_neg",
    "abs_error",
    "squared_error",
    "label_pos",
    "label_neg",
    "squared_label",
)


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
        # Counters that add up across replicas (see the module docstring).
        self.class_rows = Counter(
            "mlops_gateway_feedback_class",
            "Labelled rows per class: kind=tp|fp|fn, and kind=weight (binary: every row on the positive "
            "class; multiclass: the class's support), so that PromQL computes precision/recall/F1.",
            (*LABELS, "class", "kind"),
            registry=r,
        )
        self.confusion = Counter(
            "mlops_gateway_feedback_confusion",
            "Labelled rows per (true label, predicted label).",
            (*LABELS, "actual", "predicted"),
            registry=r,
        )
        self.correct = Counter(
            "mlops_gateway_feedback_correct",
            "Labelled rows predicted right (classifiers).",
            LABELS,
            registry=r,
        )
        self.errors = Counter(
            "mlops_gateway_feedback_error_sum",
            "Regressors: sums over labelled rows, kind=error (prediction - label)|abs_error|squared_error|"
            "label|squared_label (with mlops_gateway_feedback_total: MAE, RMSE, R2).",
            (*LABELS, "kind"),
            registry=r,
        )
        self.bandit_rewards = Counter(
            "mlops_gateway_bandit_reward",
            "Bandit rewards recorded on this replica (outcome=success|failure).",
            (*LABELS, "outcome"),
            registry=r,
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
            self._count_errors(model, version, y_true, y_pred)
            return
        self._count_classes(model, version, y_true, y_pred, classes)
        with self._lock:
            w = self._windows.get((model, version))
            if w is None:
                w = self._windows[(model, version)] = _Window(self.window)
            w.classes = classes
            w.pairs.extend(zip(y_true, y_pred, strict=True))
            w.cache = None

    def start_version(self, model: str, version: str, classes: list[Any] | None) -> None:
        """Create every counter series of a version at 0 before its first feedback.

        Prometheus's ``increase()`` counts from a series' first scrape: a series born with a value
        would lose its first increments.
        """
        self.feedback.labels(model, version)
        if classes is None:
            for kind in ERROR_KINDS:
                self.errors.labels(model, version, kind)
            return
        self.correct.labels(model, version)
        for outcome in ("success", "failure"):
            self.bandit_rewards.labels(model, version, outcome)
        for c in classes:
            for kind in CLASS_KINDS:
                self.class_rows.labels(model, version, str(c), kind)

    def _count_classes(
        self, model: str, version: str, y_true: Sequence[Any], y_pred: Sequence[Any], classes: list[Any]
    ) -> None:
        binary = len(classes) == 2
        positive = str(classes[-1])
        counts: dict[tuple[str, str], int] = {}
        confusion: dict[tuple[str, str], int] = {}
        correct = 0
        for t, p in zip(y_true, y_pred, strict=True):
            ts, ps = str(t), str(p)
            confusion[(ts, ps)] = confusion.get((ts, ps), 0) + 1
            if ts == ps:
                correct += 1
                counts[(ts, "tp")] = counts.get((ts, "tp"), 0) + 1
            else:
                counts[(ps, "fp")] = counts.get((ps, "fp"), 0) + 1
                counts[(ts, "fn")] = counts.get((ts, "fn"), 0) + 1
            w = positive if binary else ts
            counts[(w, "weight")] = counts.get((w, "weight"), 0) + 1
        for (c, kind), n in counts.items():
            self.class_rows.labels(model, version, c, kind).inc(n)
        for (ts, ps), n in confusion.items():
            self.confusion.labels(model, version, ts, ps).inc(n)
        self.correct.labels(model, version).inc(correct)

    def _count_errors(self, model: str, version: str, y_true: Sequence[Any], y_pred: Sequence[Any]) -> None:
        err = abs_err = sq_err = lab = sq_lab = 0.0
        for t, p in zip(y_true, y_pred, strict=True):
            e = float(p) - float(t)
            err += e
            abs_err += abs(e)
            sq_err += e * e
            lab += float(t)
            sq_lab += float(t) * float(t)
        sums = {
            "error": err,
            "abs_error": abs_err,
            "squared_error": sq_err,
            "label": lab,
            "squared_label": sq_lab,
        }
        for kind, value in sums.items():
            # A Counter only grows: the signed sums go in as their positive and negative parts.
            if kind in ("error", "label"):
                self.errors.labels(model, version, f"{kind}_pos").inc(max(value, 0.0))
                self.errors.labels(model, version, f"{kind}_neg").inc(max(-value, 0.0))
            else:
                self.errors.labels(model, version, kind).inc(value)

    def reward(self, model: str, version: str, successes: int, failures: int) -> None:
        """Count bandit rewards (read by the other replicas through ``GET /bandit``)."""
        self.bandit_rewards.labels(model, version, "success").inc(successes)
        self.bandit_rewards.labels(model, version, "failure").inc(failures)

    def _persistent(self) -> dict[str, Counter]:
        return {
            "requests": self.requests,
            "predictions": self.predictions,
            "feedback": self.feedback,
            "class_rows": self.class_rows,
            "confusion": self.confusion,
            "correct": self.correct,
            "errors": self.errors,
            "bandit_rewards": self.bandit_rewards,
        }

    def snapshot(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """The feedback counters' values (for a restarted replica to go on from them)."""
        out: dict[str, list[tuple[dict[str, str], float]]] = {}
        for name, counter in self._persistent().items():
            out[name] = [
                (dict(s.labels), s.value)
                for family in counter.collect()
                for s in family.samples
                if s.name.endswith("_total") and s.value
            ]
        return out

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Add a :meth:`snapshot` back into the counters (at start, before any feedback)."""
        counters = self._persistent()
        for name, samples in snapshot.items():
            counter = counters.get(name)
            if counter is None:
                continue
            for labels, value in samples:
                counter.labels(**labels).inc(float(value))

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
                f"mlops_gateway_live_{name}",
                f"Live {name} over the feedback window of this replica only (across replicas: the "
                "mlops_gateway_feedback_* counters).",
                labels=list(LABELS),
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
