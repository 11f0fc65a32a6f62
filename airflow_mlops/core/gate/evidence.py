"""Evidence for the gate: a metric value (and sample count) per rule, for one model version.

Four sources: metrics logged on the version's MLflow run, a holdout re-scored with the training
metric functions, PromQL over live metrics, and a gateway's ``/metrics`` page read directly.
"""

from __future__ import annotations

import math
import threading
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.errors import MlopsInputError, MlopsServiceError
from airflow_mlops.core.gate.slices import SliceValues, slice_values
from airflow_mlops.core.gate.spec import DEFAULT_SAMPLES_QUERY, Rule, SourceSpec
from airflow_mlops.core.live_queries import value_query
from airflow_mlops.core.promql import PromClient, PromQLEmptyResult

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

FrameLoader = Callable[[SourceSpec], "pd.DataFrame"]


@dataclass(frozen=True)
class VersionRef:
    """A registered model version and the run that produced it."""

    model_name: str
    version: str
    run_id: str | None
    model_id: str | None = None


@dataclass
class Evidence:
    """What a source found for one model version.

    :param values: metric -> value; None when the source has no value yet (live sources).
    :param samples: metric -> number of samples behind the value; None when unknown.
    :param notes: metric -> why a value is missing.
    :param slices: metric -> slice name -> (value, rows), for rules with slices.
    :param origin: where the values were read (``logged_model <id>``, ``run <id>``), when it matters.
    """

    values: dict[str, float | None] = field(default_factory=dict)
    samples: dict[str, int | None] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    slices: dict[str, SliceValues] = field(default_factory=dict)
    origin: str | None = None


def fill(template: str, ref: VersionRef, metric: str) -> str:
    """Put the model name, version and metric into a query template.

    Plain replacement rather than ``str.format``: PromQL's own braces must stay untouched.
    """
    return (
        template.replace("{model}", _label_escape(ref.model_name))
        .replace("{version}", _label_escape(ref.version))
        .replace("{metric}", metric)
    )


def _label_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


class MlflowMetricsSource:
    """The metrics of each version's MLflow 3 LoggedModel (the model itself, with the dataset they were
    computed on), or of its training run for versions registered without one; samples = the run's
    ``n_test_rows`` param.

    :param client: an MLflow client.
    """

    kind = "mlflow"

    def __init__(self, client: MlflowClient) -> None:
        self.client = client

    def collect(self, ref: VersionRef, rules: tuple[Rule, ...]) -> Evidence:
        """Read the run's metrics; a metric the run lacks is an input error naming what it has."""
        if not ref.run_id:
            raise MlopsInputError(
                f"Version {ref.version} of {ref.model_name!r} has no MLflow run, so it has no logged metrics: "
                "use a holdout source instead."
            )
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(ref.run_id)
        except MlflowException as e:
            if "RESOURCE_DOES_NOT_EXIST" not in str(e.error_code):
                raise
            raise MlopsInputError(
                f"The run {ref.run_id} of {ref.model_name} v{ref.version} no longer exists (deleted?), so its "
                "metrics are gone: restore the run, gate another version, or use a holdout source."
            ) from None
        params = run.data.params
        metrics, origin = self.model_metrics(ref)
        if not metrics:
            metrics, origin = dict(run.data.metrics), f"run {ref.run_id}"
        missing = [r.metric for r in rules if r.metric not in metrics]
        if missing:
            raise MlopsInputError(
                f"The {origin} of {ref.model_name} v{ref.version} has no metric {missing}; it has "
                f"{sorted(metrics)}. Fix the rule's metric name, or use a holdout source to compute it."
            )
        rows = params.get("n_test_rows")
        count = int(rows) if rows is not None and str(rows).isdigit() else None
        return Evidence(
            values={r.metric: float(metrics[r.metric]) for r in rules},
            samples={r.metric: count for r in rules},
            origin=origin,
        )

    def model_metrics(self, ref: VersionRef) -> tuple[dict[str, float], str]:
        """The LoggedModel's metrics (the last value of each), or ``{}`` when the version has none."""
        if not ref.model_id:
            return {}, ""
        metrics = logged_model_metrics(self.client, ref.model_id)
        return metrics, (f"logged_model {ref.model_id}" if metrics else "")


def logged_model_metrics(client: Any, model_id: str) -> dict[str, float]:
    """The metrics of the MLflow 3 LoggedModel ``model_id`` (the last value of each key), ``{}`` when the
    model is gone or has none: what gates and the releases view compare, the models themselves.

    :param client: an ``MlflowClient``.
    :param model_id: the LoggedModel's id (``m-...``).
    """
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_logged_model(model_id)
    except MlflowException as e:
        if "RESOURCE_DOES_NOT_EXIST" not in str(e.error_code):
            raise
        return {}
    ordered = sorted(model.metrics or [], key=lambda m: (m.timestamp or 0, m.step or 0))
    return {m.key: float(m.value) for m in ordered}


# Loaded models, keyed by (tracking URI, name, version): versions are immutable, loading is slow.
_MODEL_CACHE: OrderedDict[tuple[str, str, str], Any] = OrderedDict()
_MODEL_CACHE_LOCK = threading.Lock()
_MODEL_CACHE_SIZE = 8


def load_sklearn_model(client: MlflowClient, ref: VersionRef) -> Any:
    """Load a version's sklearn model (MLflow must point at the right store), with a small cache."""
    import mlflow

    key = (str(client.tracking_uri), ref.model_name, ref.version)
    with _MODEL_CACHE_LOCK:
        if key in _MODEL_CACHE:
            _MODEL_CACHE.move_to_end(key)
            return _MODEL_CACHE[key]
    try:
        model = mlflow.sklearn.load_model(f"models:/{ref.model_name}/{ref.version}")
    except mlflow.exceptions.MlflowException as e:
        raise MlopsInputError(
            f"Cannot load {ref.model_name} v{ref.version} as a scikit-learn model ({e.message}): the holdout "
            "source needs sklearn models; use the mlflow source for other flavours."
        ) from e
    with _MODEL_CACHE_LOCK:
        _MODEL_CACHE[key] = model
        while len(_MODEL_CACHE) > _MODEL_CACHE_SIZE:
            _MODEL_CACHE.popitem(last=False)
    return model


def read_holdout(source: SourceSpec) -> pd.DataFrame:
    """Read the holdout: a local file/folder, or ``path@rev`` of a DVC repo through ``dvc.api``.

    :param source: a holdout source.
    """
    from airflow_mlops.core.data import read_table

    if not source.dvc:
        return read_table(source.path)  # type: ignore[arg-type]
    from airflow_mlops.core.dvc_data import read_dvc_frame

    frame, _lineage = read_dvc_frame(source.repo or ".", source.path, source.rev)  # type: ignore[arg-type]
    return frame


class HoldoutSource:
    """Both models scored on the same holdout with the training metric functions (a fair comparison).

    :param client: an MLflow client (MLflow's global URIs must point at the same store).
    :param frame: the holdout data, with the target column.
    :param target: the target column.
    """

    kind = "holdout"

    def __init__(self, client: MlflowClient, frame: pd.DataFrame, target: str) -> None:
        if target not in frame.columns:
            raise MlopsInputError(
                f"The holdout has no target column {target!r} (columns: {list(frame.columns)[:20]}): fix "
                "the source's 'target'."
            )
        if frame.empty:
            raise MlopsInputError("The holdout has no rows: check the file or the DVC revision.")
        if frame[target].isna().any():
            raise MlopsInputError(f"The holdout's target {target!r} has missing values: drop those rows.")
        self.client, self.frame, self.target = client, frame, target

    def collect(self, ref: VersionRef, rules: tuple[Rule, ...]) -> Evidence:
        """Score the version's model on the holdout."""
        from airflow_mlops.core.metrics import score_model
        from airflow_mlops.core.training import prepare_features

        model = load_sklearn_model(self.client, ref)
        features = list(
            getattr(model, "feature_names_in_", [c for c in self.frame.columns if c != self.target])
        )
        missing = [c for c in features if c not in self.frame.columns]
        if missing:
            raise MlopsInputError(
                f"The holdout lacks feature columns {missing[:10]} that {ref.model_name} v{ref.version} needs: "
                "give a holdout with the training columns."
            )
        task = (
            "classification"
            if hasattr(model, "predict_proba") or hasattr(model, "classes_")
            else "regression"
        )
        if ref.run_id:
            task = self.client.get_run(ref.run_id).data.params.get("task", task)

        def score(part: pd.DataFrame) -> dict[str, float]:
            return score_model(model, task, prepare_features(part[features]), part[self.target])

        scores = score(self.frame)
        absent = [r.metric for r in rules if r.metric not in scores]
        if absent:
            raise MlopsInputError(
                f"Metrics {absent} are not defined for this {task} model on this holdout; it gives "
                f"{sorted(scores)}. Fix the rule's metric."
            )
        return Evidence(
            values={r.metric: scores[r.metric] for r in rules},
            samples={r.metric: len(self.frame) for r in rules},
            slices={
                r.metric: slice_values(r.slices, self.frame, r.metric, score)
                for r in rules
                if r.slices is not None
            },
        )


class PredictionLogSource:
    """Live labelled traffic: the gateway's prediction log joined with its feedback log, scored per version
    with the training metric functions (the predictions the version made, against the labels that came back).

    :param log_dir: the gateway's ``--log-dir``.
    :param window: seconds of traffic to read back (None: all of it).
    """

    kind = "prediction_log"
    target = "_label"

    def __init__(self, log_dir: str, window: float | None = None) -> None:
        self.log_dir, self.window = log_dir, window

    def frame(self, model_name: str) -> pd.DataFrame:
        """The labelled requests of the model, with the version and the prediction of each."""
        from datetime import datetime, timedelta, timezone

        from airflow_mlops.core.prediction_log import read_labelled

        start = None
        if self.window is not None:
            start = datetime.now(timezone.utc) - timedelta(seconds=self.window)
        return read_labelled(self.log_dir, model_name, self.target, start=start, keep_meta=True)

    def collect(self, ref: VersionRef, rules: tuple[Rule, ...]) -> Evidence:
        """Score the version's logged predictions against their labels (overall and per slice)."""
        from airflow_mlops.core.metrics import REGRESSION_METRICS, classification_metrics, regression_metrics
        from airflow_mlops.core.prediction_log import MODEL_VERSION, PREDICTION

        frame = self.frame(ref.model_name)
        ev = Evidence()
        if frame.empty:
            for r in rules:
                ev.values[r.metric], ev.samples[r.metric] = None, 0
                ev.notes[r.metric] = f"no labelled requests in {self.log_dir} yet"
            return ev
        classes = sorted(set(frame[self.target].tolist()) | set(frame[PREDICTION].tolist()), key=str)
        mine = frame[frame[MODEL_VERSION].astype(str) == ref.version]
        regression = any(r.metric in REGRESSION_METRICS for r in rules)

        def score(part: pd.DataFrame) -> dict[str, float]:
            if regression:
                return regression_metrics(part[self.target], part[PREDICTION])
            return classification_metrics(part[self.target], part[PREDICTION], classes=classes)

        scores = score(mine) if len(mine) else {}
        for r in rules:
            ev.values[r.metric] = scores.get(r.metric)
            ev.samples[r.metric] = len(mine)
            if not len(mine):
                ev.notes[r.metric] = f"no labelled requests of v{ref.version} yet"
            elif r.slices is not None:
                ev.slices[r.metric] = slice_values(r.slices, mine, r.metric, score)
        return ev


class PrometheusSource:
    """Live metrics through PromQL: a value query and a sample-count query per rule.

    An empty result means "no evidence yet", never a pass.

    :param client: the Prometheus client.
    :param samples_query: default sample-count template for rules without their own.
    """

    kind = "prometheus"

    def __init__(self, client: PromClient, samples_query: str | None = None) -> None:
        self.client = client
        self.samples_query = samples_query or DEFAULT_SAMPLES_QUERY

    def collect(self, ref: VersionRef, rules: tuple[Rule, ...]) -> Evidence:
        """Query each rule's value and sample count for this version."""
        ev = Evidence()
        for rule in rules:
            value_q = fill(rule.query or value_query(rule.metric), ref, rule.metric)
            try:
                ev.values[rule.metric] = self.client.query_value(value_q)
            except PromQLEmptyResult:
                ev.values[rule.metric] = None
                ev.notes[rule.metric] = f"no series for {value_q}"
            if rule.min_samples is not None or rule.samples_query is not None:
                samples_q = fill(rule.samples_query or self.samples_query, ref, rule.metric)
                try:
                    ev.samples[rule.metric] = _count(self.client.query_value(samples_q))
                except PromQLEmptyResult:
                    ev.samples[rule.metric] = 0
        return ev


class MetricsUrlSource:
    """Live metrics read straight from a Prometheus-format page (a gateway's ``/metrics``), no server.

    :param url: the page's URL.
    :param timeout: seconds to wait.
    :param samples_family: metric family holding the sample count.
    """

    kind = "metrics_url"

    def __init__(self, url: str, timeout: float = 10.0, samples_family: str | None = None) -> None:
        self.url, self.timeout = url, timeout
        self.samples_family = samples_family or "mlops_gateway_live_samples"

    def fetch(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """Family name -> [(labels, value)] of every sample on the page."""
        from prometheus_client.parser import text_string_to_metric_families

        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout) as resp:
                text = resp.read().decode("utf-8")
        except (urllib.error.URLError, OSError) as e:
            raise MlopsServiceError(
                f"The metrics page {self.url} cannot be read ({getattr(e, 'reason', e)}): check the URL and "
                "that the gateway is running."
            ) from None
        out: dict[str, list[tuple[dict[str, str], float]]] = {}
        try:
            for family in text_string_to_metric_families(text):
                for s in family.samples:
                    out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
        except ValueError as e:
            raise MlopsServiceError(f"The page {self.url} is not in Prometheus text format: {e}.") from None
        return out

    def collect(self, ref: VersionRef, rules: tuple[Rule, ...]) -> Evidence:
        """Pick each rule's gauge and the sample count for this model version."""
        page = self.fetch()
        ev = Evidence()

        def pick(name: str) -> float | None:
            for labels, value in page.get(name, []):
                if labels.get("model") == ref.model_name and labels.get("version") == ref.version:
                    return value
            return None

        for rule in rules:
            family = rule.query or f"mlops_gateway_live_{rule.metric}"
            ev.values[rule.metric] = pick(family)
            if ev.values[rule.metric] is None:
                ev.notes[rule.metric] = f"no {family} for model={ref.model_name}, version={ref.version}"
            samples = pick(rule.samples_query or self.samples_family)
            ev.samples[rule.metric] = 0 if samples is None else _count(samples)
        return ev


def _count(value: float) -> int:
    if math.isnan(value):
        return 0
    return int(value)
