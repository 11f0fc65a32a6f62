"""The gate spec: per-metric rules (bounds, change against a baseline, direction, samples) and where
the evidence comes from; declared in Python or loaded from YAML/JSON, and checked for contradictions.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.errors import MlopsInputError
from airflow_mlops.core.live_queries import samples_query
from airflow_mlops.core.metrics import CLASSIFICATION_METRICS, LOWER_IS_BETTER, REGRESSION_METRICS
from airflow_mlops.core.metrics import greater_is_better as default_direction
from airflow_mlops.core.registry import CHAMPION

if TYPE_CHECKING:
    from airflow_mlops.core.gate.slices import SliceSpec

SOURCES = ("mlflow", "holdout", "prometheus", "metrics_url", "prediction_log")
# Sources whose evidence grows while the sensor waits (a canary's live metrics).
LIVE_SOURCES = frozenset({"prometheus", "metrics_url", "prediction_log"})
# Sources with one row per example, so a metric can be computed per data slice.
ROW_SOURCES = frozenset({"holdout", "prediction_log"})
SCORED_METRICS = frozenset(CLASSIFICATION_METRICS + REGRESSION_METRICS)
KNOWN_METRICS = SCORED_METRICS | LOWER_IS_BETTER
# Metrics that live in [0, 1]: a bound outside it can never be met.
UNIT_INTERVAL = frozenset({"accuracy", "precision", "recall", "f1", "roc_auc"})
# Live gauges the gateway exports per model version (see the gateway contract).
GATEWAY_LIVE_METRICS = frozenset({"accuracy", "precision", "recall", "f1"})
# Metrics computable from logged predictions and their labels (no probabilities are logged).
LOGGED_METRICS = frozenset({"accuracy", "precision", "recall", "f1", "rmse", "mae", "r2"})
# Live quality from the gateway's counters, summed over every replica (core.live_queries.value_query).
DEFAULT_SAMPLES_QUERY = samples_query()
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
# The explicit "compare with nothing" baseline (``baseline: none`` or ``baseline: null``).
NO_BASELINE = "none"
# A gate name becomes part of a tag key (MLflow caps keys at 250 characters).
_MAX_NAME = 200
SPEC_SUFFIXES = (".yaml", ".yml", ".json")
# A spec is a few lines; anything far bigger is not a spec (and is not read whole into memory).
_MAX_SPEC_BYTES = 1_000_000


def _number(where: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MlopsInputError(f"{where} = {value!r} is not a number: give a number such as 0.9.")
    if math.isnan(value) or math.isinf(value):
        raise MlopsInputError(f"{where} = {value} is not a finite number: give a finite number or omit it.")
    return float(value)


@dataclass(frozen=True)
class Rule:
    """The conditions one metric must meet.

    Changes are measured in the metric's better direction (``improvement = candidate - baseline`` when
    greater is better, ``baseline - candidate`` otherwise), so a negative minimum is a tolerated regression.

    :param metric: metric name (``f1``, ``rmse``, ``latency_p95``, or a custom name with ``greater_is_better``).
    :param min: the value must be at least this.
    :param max: the value must be at most this.
    :param min_change: the improvement over the baseline must be at least this (e.g. -0.01: F1 may drop 0.01).
    :param min_relative_change: the improvement divided by ``|baseline|`` must be at least this.
    :param max_change: the improvement must be at most this: a suspiciously large gain fails (data leak?).
    :param max_relative_change: the relative improvement must be at most this.
    :param greater_is_better: direction; defaults to the known direction of the metric.
    :param min_samples: evidence needs at least this many samples (live labelled requests, or holdout rows).
    :param query: ``prometheus``: PromQL template of the value (``{model}``, ``{version}``, ``{metric}``);
        ``metrics_url``: the metric family name on the page.
    :param samples_query: as ``query``, for the sample count.
    :param fail_below: failure condition: a measurement with a value below this fails. With a failure
        condition, a measurement that meets neither it nor the success checks is *inconclusive*.
    :param fail_above: failure condition: a measurement with a value above this fails.
    :param interval: seconds between measurements (or a duration such as ``"30s"``, ``"5m"``, ``"1h"``).
    :param count: measurements to take (default 1 when no ``interval`` is given).
    :param initial_delay: seconds to wait before the first measurement.
    :param failure_limit: failed measurements tolerated: the rule fails when they go above it (default 0;
        -1: no limit, only ``consecutive_success_limit`` decides).
    :param consecutive_error_limit: source errors (Prometheus down, a query error) tolerated in a row; the
        rule errors when they go above it (default 4; the counter resets on any measurement without error).
    :param consecutive_success_limit: the rule succeeds as soon as this many measurements in a row succeeded.
    :param inconclusive_limit: inconclusive measurements tolerated: above it the gate is inconclusive (a
        human decides).
    :param slices: compute the metric per data slice too (holdout and prediction_log sources): see
        :class:`airflow_mlops.core.gate.slices.SliceSpec`.
    """

    metric: str
    min: float | None = None
    max: float | None = None
    min_change: float | None = None
    min_relative_change: float | None = None
    max_change: float | None = None
    max_relative_change: float | None = None
    greater_is_better: bool | None = None
    min_samples: int | None = None
    query: str | None = None
    samples_query: str | None = None
    fail_below: float | None = None
    fail_above: float | None = None
    interval: float | None = None
    count: int | None = None
    initial_delay: float | None = None
    failure_limit: int | None = None
    consecutive_error_limit: int | None = None
    consecutive_success_limit: int | None = None
    inconclusive_limit: int | None = None
    slices: SliceSpec | None = None

    @property
    def compares(self) -> bool:
        """Whether the rule needs the baseline's evidence (change rules, on all the data or per slice)."""
        return self.has_change_rules or (self.slices is not None and self.slices.min_change is not None)

    @property
    def has_analysis(self) -> bool:
        """Whether the rule has analysis settings (measurements over time, limits, a failure condition)."""
        return any(getattr(self, k) is not None for k in ANALYSIS_KEYS)

    @property
    def has_failure_condition(self) -> bool:
        """Whether a failure condition is explicit (then a measurement can be inconclusive)."""
        return self.fail_below is not None or self.fail_above is not None

    @property
    def better_is_greater(self) -> bool:
        """The direction in effect: explicit, or the metric's default."""
        return (
            self.greater_is_better if self.greater_is_better is not None else default_direction(self.metric)
        )

    @property
    def has_change_rules(self) -> bool:
        """Whether the rule compares against a baseline."""
        return any(
            v is not None
            for v in (self.min_change, self.min_relative_change, self.max_change, self.max_relative_change)
        )

    @classmethod
    def from_dict(cls, raw: Any, where: str = "rule") -> Rule:
        """Build and validate a rule from a mapping."""
        if not isinstance(raw, dict):
            raise MlopsInputError(f"{where} is {raw!r}: each rule must be a mapping with a 'metric' key.")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise MlopsInputError(f"{where} has unknown keys {unknown}: use only {sorted(known)}.")
        metric = raw.get("metric")
        if not isinstance(metric, str) or not metric.strip():
            raise MlopsInputError(f"{where} has no 'metric': name the metric, e.g. metric: f1.")
        where = f"rule {metric!r}"
        gib = raw.get("greater_is_better")
        if gib is not None and not isinstance(gib, bool):
            raise MlopsInputError(f"{where}: greater_is_better = {gib!r} must be true or false.")
        min_samples = raw.get("min_samples")
        if min_samples is not None and (
            isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 1
        ):
            raise MlopsInputError(f"{where}: min_samples = {min_samples!r} must be a positive whole number.")
        for key in ("query", "samples_query"):
            if raw.get(key) is not None and not (isinstance(raw[key], str) and raw[key].strip()):
                raise MlopsInputError(f"{where}: {key} = {raw[key]!r} must be a non-empty string.")
        nums = {
            k: _number(f"{where}: {k}", raw.get(k))
            for k in (
                "min", "max", "min_change", "min_relative_change", "max_change", "max_relative_change",
                "fail_below", "fail_above",
            )
        }  # fmt: skip
        durations = {k: _duration(f"{where}: {k}", raw.get(k)) for k in ("interval", "initial_delay")}
        limits = {
            k: _whole(f"{where}: {k}", raw.get(k), lowest)
            for k, lowest in (
                ("count", 1), ("failure_limit", -1), ("consecutive_error_limit", 0),
                ("consecutive_success_limit", 0), ("inconclusive_limit", 0),
            )
        }  # fmt: skip
        slices = None
        if raw.get("slices") is not None:
            from airflow_mlops.core.gate.slices import SliceSpec

            slices = SliceSpec.from_raw(raw["slices"], where)
        settings: dict[str, Any] = {**nums, **durations, **limits}
        rule = cls(
            metric=metric.strip(),
            greater_is_better=gib,
            min_samples=min_samples,
            query=raw.get("query"),
            samples_query=raw.get("samples_query"),
            slices=slices,
            **settings,
        )
        rule.check()
        return rule

    def check(self) -> None:
        """Reject rules that check nothing, name an unknown metric, or can never pass."""
        where = f"rule {self.metric!r}"
        if self.metric.lower() not in KNOWN_METRICS and not self.metric.lower().startswith("latency"):
            if self.greater_is_better is None:
                raise MlopsInputError(
                    f"{where}: unknown metric {self.metric!r}. Use one of {sorted(KNOWN_METRICS)}, or set "
                    "greater_is_better for a custom metric."
                )
        checks = (self.min, self.max, self.min_samples, self.slices)
        if all(v is None for v in checks) and not self.has_change_rules:
            raise MlopsInputError(
                f"{where} checks nothing: set min, max, min_change, min_relative_change, max_change, "
                "max_relative_change, min_samples or slices."
            )
        self._check_analysis(where)
        pairs = (
            ("min", self.min, "max", self.max),
            ("min_change", self.min_change, "max_change", self.max_change),
            (
                "min_relative_change",
                self.min_relative_change,
                "max_relative_change",
                self.max_relative_change,
            ),
        )
        for lo_name, lo, hi_name, hi in pairs:
            if lo is not None and hi is not None and lo > hi:
                raise MlopsInputError(
                    f"{where}: {lo_name} = {lo} is above {hi_name} = {hi}, so no model can pass: "
                    f"lower {lo_name} or raise {hi_name}."
                )
        if self.metric.lower() in UNIT_INTERVAL:
            if self.min is not None and self.min > 1:
                raise MlopsInputError(
                    f"{where}: min = {self.min} but {self.metric} is at most 1: give a bound within [0, 1]."
                )
            if self.max is not None and self.max < 0:
                raise MlopsInputError(
                    f"{where}: max = {self.max} but {self.metric} is at least 0: give a bound within [0, 1]."
                )
        if self.min_relative_change is not None and self.min_relative_change <= -1 and self.has_change_rules:
            # A relative change of -100% or less tolerates anything: almost surely a percent typo.
            raise MlopsInputError(
                f"{where}: min_relative_change = {self.min_relative_change} tolerates any regression; "
                "relative changes are fractions (-0.05 means a 5% drop is tolerated)."
            )

    def _check_analysis(self, where: str) -> None:
        if self.interval is not None and self.interval <= 0:
            raise MlopsInputError(f"{where}: interval must be above 0 seconds (e.g. 60s).")
        if self.fail_below is not None and self.min is not None and self.fail_below > self.min:
            raise MlopsInputError(
                f"{where}: fail_below = {self.fail_below} is above min = {self.min}, so a value can both pass "
                "and fail: set fail_below at or under min (between them a measurement is inconclusive)."
            )
        if self.fail_above is not None and self.max is not None and self.fail_above < self.max:
            raise MlopsInputError(
                f"{where}: fail_above = {self.fail_above} is under max = {self.max}, so a value can both pass "
                "and fail: set fail_above at or over max."
            )
        if self.fail_below is not None and self.fail_above is not None and self.fail_below > self.fail_above:
            raise MlopsInputError(
                f"{where}: fail_below = {self.fail_below} is above fail_above = {self.fail_above}, so every "
                "value fails: swap them."
            )
        if self.count is not None and self.count > 1 and self.interval is None:
            raise MlopsInputError(
                f"{where}: count = {self.count} needs an interval between the measurements: set interval "
                "(e.g. interval: 60s)."
            )
        if self.interval is not None and self.count is None and not self.consecutive_success_limit:
            raise MlopsInputError(
                f"{where}: interval without count measures forever, so the rule could never pass: set count "
                "(measurements to take) or consecutive_success_limit (successes in a row that pass it)."
            )
        if self.failure_limit == -1 and not self.consecutive_success_limit:
            raise MlopsInputError(
                f"{where}: failure_limit = -1 turns failures off, so only consecutive_success_limit can decide: "
                "set consecutive_success_limit, or a failure_limit >= 0."
            )
        if (
            self.count is not None
            and self.consecutive_success_limit
            and self.consecutive_success_limit > self.count
        ):
            raise MlopsInputError(
                f"{where}: consecutive_success_limit = {self.consecutive_success_limit} is above count = "
                f"{self.count}, so it can never be reached: lower it or raise count."
            )

    def to_dict(self) -> dict[str, Any]:
        """The rule as a mapping without unset keys."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        if self.slices is not None:
            out["slices"] = self.slices.to_dict()
        return out


# Rule keys that make it an analysis rule (Argo Rollouts' AnalysisTemplate metric settings).
ANALYSIS_KEYS = (
    "fail_below", "fail_above", "interval", "count", "initial_delay", "failure_limit",
    "consecutive_error_limit", "consecutive_success_limit", "inconclusive_limit",
)  # fmt: skip
_DURATION_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)(ms|s|m|h))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# A day: a gate's measurements are minutes apart; anything longer is a typo (ms for s?).
_MAX_DURATION = 86400.0


def _duration(where: str, value: Any) -> float | None:
    """Seconds from a number or a duration string such as ``30s``, ``5m``, ``1h30m``."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        if not _DURATION_RE.match(text):
            raise MlopsInputError(
                f"{where} = {value!r} is not a duration: give seconds (30) or a duration such as 30s, 5m, 1h."
            )
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
    else:
        seconds = _number(where, value)  # type: ignore[assignment]
    assert seconds is not None
    if not 0 <= seconds <= _MAX_DURATION:
        raise MlopsInputError(f"{where} = {value!r} must be between 0 and 24h.")
    return float(seconds)


def _whole(where: str, value: Any, lowest: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
        raise MlopsInputError(f"{where} = {value!r} must be a whole number >= {lowest}.")
    return value


@dataclass(frozen=True)
class SourceSpec:
    """Where the evidence comes from.

    :param kind: ``mlflow`` (metrics logged on each version's run), ``holdout`` (both models re-scored on
        the same data), ``prometheus`` (PromQL over live canary metrics) or ``metrics_url`` (a gateway's
        ``/metrics`` page read directly).
    :param path: ``holdout``: a CSV/Parquet file or folder; with ``rev``, a path inside the DVC repo.
    :param rev: ``holdout``: a DVC/git revision of ``path`` (read through DVC).
    :param repo: ``holdout``: the DVC repo (URL or folder) when not given by an Airflow connection.
    :param target: ``holdout``: the label column.
    :param url: ``prometheus``: the server's base URL (when not given by a connection); ``metrics_url``:
        the page's URL.
    :param samples_query: the default sample-count query of ``prometheus`` rules (or family name of
        ``metrics_url`` rules).
    :param timeout: seconds to wait for a live source.
    :param window: ``prediction_log``: seconds of labelled traffic to read back (default: all of it).
    """

    kind: str = "mlflow"
    path: str | None = None
    rev: str | None = None
    repo: str | None = None
    target: str | None = None
    url: str | None = None
    samples_query: str | None = None
    timeout: float = 10.0
    window: float | None = None

    @property
    def live(self) -> bool:
        """Whether evidence grows over time (then too few samples means wait, not fail)."""
        return self.kind in LIVE_SOURCES

    @property
    def dvc(self) -> bool:
        """Whether the holdout data is read through DVC."""
        return self.kind == "holdout" and (self.rev is not None or self.repo is not None)

    @classmethod
    def from_dict(cls, raw: Any) -> SourceSpec:
        """Build and validate a source from a mapping (or a bare kind name)."""
        if raw is None:
            return cls()
        if isinstance(raw, str):
            raw = {"kind": raw}
        if not isinstance(raw, dict):
            raise MlopsInputError(f"source = {raw!r} must be a mapping such as {{kind: mlflow}}.")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise MlopsInputError(f"source has unknown keys {unknown}: use only {sorted(known)}.")
        kind = raw.get("kind", "mlflow")
        if kind not in SOURCES:
            raise MlopsInputError(f"source kind {kind!r} is unknown: use one of {list(SOURCES)}.")
        for key in ("path", "rev", "repo", "target", "url", "samples_query"):
            if raw.get(key) is not None and not isinstance(raw[key], str):
                raise MlopsInputError(f"source {key} = {raw[key]!r} must be a string.")
        timeout = _number("source timeout", raw.get("timeout", 10.0))
        if timeout is None or not 0 < timeout <= 600:
            raise MlopsInputError(
                f"source timeout = {timeout} must be a number of seconds in (0, 600]: e.g. 10 (a sensor "
                "waits longer through its own timeout)."
            )
        window = _duration("source window", raw.get("window"))
        if window is not None and window <= 0:
            raise MlopsInputError("source window must be above 0 seconds (e.g. 1h), or omitted for all.")
        src = cls(**{**raw, "kind": kind, "timeout": timeout, "window": window})
        if kind == "prediction_log" and not src.path:
            raise MlopsInputError(
                "A prediction_log source needs 'path': the gateway's --log-dir (prediction and feedback logs)."
            )
        if kind == "holdout":
            if not src.path or not src.target:
                raise MlopsInputError(
                    "A holdout source needs 'path' (a file, or a DVC path with 'rev') and 'target' (the "
                    "label column)."
                )
        if kind == "metrics_url" and not (src.url or "").startswith(("http://", "https://")):
            raise MlopsInputError(
                f"A metrics_url source needs 'url', the http(s) URL of a /metrics page (got {src.url!r})."
            )
        return src

    def to_dict(self) -> dict[str, Any]:
        """The source as a mapping without unset keys."""
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class GateSpec:
    """A named gate: rules, the evidence source, the baseline alias and an optional alias to set on pass.

    :param name: the gate's name; the verdict is tagged as ``mlops.gate.<name>`` on the model version.
    :param rules: one rule per metric.
    :param source: where the evidence comes from.
    :param baseline: alias of the baseline model version (``champion`` by default); ``"none"`` (or None)
        compares with nothing on purpose: only bounds apply, and change rules are refused.
    :param promote_alias: alias set on the candidate when it passes (e.g. ``challenger``).
    """

    name: str
    rules: tuple[Rule, ...]
    source: SourceSpec = field(default_factory=SourceSpec)
    baseline: str = CHAMPION
    promote_alias: str | None = None

    def __post_init__(self) -> None:
        if self.baseline is None or (
            isinstance(self.baseline, str) and self.baseline.strip().lower() == NO_BASELINE
        ):
            object.__setattr__(self, "baseline", NO_BASELINE)
        self.check()

    @property
    def has_baseline(self) -> bool:
        """False when the spec says ``baseline: none`` (compare with nothing)."""
        return self.baseline != NO_BASELINE

    def check(self) -> None:
        """Validate the spec as a whole (rules against the source, names)."""
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name) or len(self.name) > _MAX_NAME:
            raise MlopsInputError(
                f"Gate name {str(self.name)[:80]!r} must be 1 to {_MAX_NAME} letters, digits, '.', '_' or '-' "
                "(it becomes a tag key)."
            )
        if not self.rules:
            raise MlopsInputError(
                f"Gate {self.name!r} has no rules: add at least one, e.g. {{metric: f1, min: 0.9}}."
            )
        seen: set[str] = set()
        for rule in self.rules:
            if rule.metric in seen:
                raise MlopsInputError(
                    f"Gate {self.name!r} has two rules for {rule.metric!r}: merge them into one."
                )
            seen.add(rule.metric)
        for alias in (self.baseline, self.promote_alias):
            if alias is not None and (
                not isinstance(alias, str) or not _NAME_RE.match(alias) or len(alias) > _MAX_NAME
            ):
                raise MlopsInputError(
                    f"Alias {str(alias)[:80]!r} must be 1 to {_MAX_NAME} letters, digits, '.', '_' or '-'."
                )
        if self.promote_alias is not None and self.promote_alias.lower() == NO_BASELINE:
            raise MlopsInputError(f"promote_alias {self.promote_alias!r} is reserved: use e.g. 'challenger'.")
        if not self.has_baseline:
            changing = [r.metric for r in self.rules if r.compares]
            if changing:
                raise MlopsInputError(
                    f"Gate {self.name!r} has baseline: none, so the change rules of {changing} compare with "
                    "nothing: remove them, or set baseline to the alias of the version to compare with."
                )
        if self.promote_alias is not None and self.promote_alias == self.baseline:
            raise MlopsInputError(
                f"promote_alias {self.promote_alias!r} is the baseline alias: the gate must not move the "
                "baseline; promote with DeployOperator, or use another alias such as 'challenger'."
            )
        kind = self.source.kind
        for rule in self.rules:
            if kind == "holdout" and rule.metric not in SCORED_METRICS:
                raise MlopsInputError(
                    f"Metric {rule.metric!r} cannot be computed on a holdout: use one of {sorted(SCORED_METRICS)}."
                )
            if kind == "metrics_url" and rule.query is None and rule.metric not in GATEWAY_LIVE_METRICS:
                raise MlopsInputError(
                    f"The gateway exports no live {rule.metric!r}: use one of {sorted(GATEWAY_LIVE_METRICS)}, "
                    "or name the metric family in 'query'."
                )
            if kind == "prometheus" and rule.query is None and rule.metric not in GATEWAY_LIVE_METRICS:
                raise MlopsInputError(
                    f"Rule {rule.metric!r} needs a PromQL 'query' (the gateway exports live "
                    f"{sorted(GATEWAY_LIVE_METRICS)} only)."
                )
            if kind == "holdout" and rule.has_analysis:
                # Measuring a fixed file again gives the same value; and an analysed gate waits in the
                # triggerer, where a holdout's model loads (process-wide MLflow settings) must not run.
                raise MlopsInputError(
                    f"Rule {rule.metric!r} has analysis settings (interval, count, limits), but a holdout gives "
                    "the same value at every measurement: remove them, or gate on a live source (prometheus, "
                    "metrics_url, prediction_log)."
                )
            if rule.slices is not None and kind not in ROW_SOURCES:
                raise MlopsInputError(
                    f"Rule {rule.metric!r} has slices, but the {kind!r} source gives one number per model, not "
                    "rows: use a holdout or prediction_log source for per-slice metrics."
                )
            if kind == "prediction_log" and rule.metric not in LOGGED_METRICS:
                raise MlopsInputError(
                    f"Metric {rule.metric!r} cannot be computed from the prediction log (it holds predictions, "
                    f"not probabilities): use one of {sorted(LOGGED_METRICS)}."
                )
            if kind in ("mlflow", "holdout", "prediction_log") and (rule.query or rule.samples_query):
                raise MlopsInputError(
                    f"Rule {rule.metric!r} has a query, but the {kind!r} source does not use queries: "
                    "remove it or use a prometheus source."
                )

    @classmethod
    def from_dict(cls, raw: Any) -> GateSpec:
        """Build and validate a spec from a mapping (as loaded from YAML or JSON)."""
        if not isinstance(raw, dict):
            raise MlopsInputError(
                f"The gate spec must be a mapping with 'name' and 'rules' (got {type(raw).__name__})."
            )
        known = {"name", "rules", "source", "baseline", "promote_alias"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise MlopsInputError(f"The gate spec has unknown keys {unknown}: use only {sorted(known)}.")
        rules = raw.get("rules")
        if isinstance(rules, dict):
            # {f1: {min: 0.9}} is accepted as a shorter form of [{metric: f1, min: 0.9}].
            rules = [
                {"metric": k, **(v or {})} if isinstance(v, dict | None) else v for k, v in rules.items()
            ]
        if not isinstance(rules, list):
            raise MlopsInputError(
                "The gate spec's 'rules' must be a list of rules (or a mapping metric -> rule)."
            )
        return cls(
            name=raw.get("name", "default"),
            rules=tuple(Rule.from_dict(r, f"rule #{i + 1}") for i, r in enumerate(rules)),
            source=SourceSpec.from_dict(raw.get("source")),
            baseline=raw.get("baseline", CHAMPION),
            promote_alias=raw.get("promote_alias"),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able mapping that :meth:`from_dict` turns back into an equal spec."""
        out: dict[str, Any] = {
            "name": self.name,
            "rules": [r.to_dict() for r in self.rules],
            "source": self.source.to_dict(),
            "baseline": self.baseline,
        }
        if self.promote_alias is not None:
            out["promote_alias"] = self.promote_alias
        return out


def load_spec(spec: GateSpec | dict[str, Any] | str | os.PathLike[str]) -> GateSpec:
    """Accept a GateSpec, a mapping, a path to a ``.yaml``/``.yml``/``.json`` file, or YAML/JSON text.

    A string of one line that is not a ``{...}`` mapping is a path: it must name an existing file with one
    of those suffixes (it is never parsed as YAML, where a mistyped path would read as a plain string).

    :param spec: the gate spec in any of those forms.
    :raises MlopsInputError: the spec cannot be read or is invalid.
    """
    if isinstance(spec, GateSpec):
        return spec
    if isinstance(spec, dict):
        return GateSpec.from_dict(spec)
    if isinstance(spec, bytes):
        return GateSpec.from_dict(_parse(_decode(spec, "the gate spec text"), "the gate spec text"))
    if isinstance(spec, os.PathLike) or (isinstance(spec, str) and _is_path(spec)):
        path = Path(os.fspath(spec).strip())
        text = _read_spec_file(path)
        return GateSpec.from_dict(
            _parse(text, f"gate spec file {str(path)!r}", path.suffix.lower() == ".json")
        )
    if isinstance(spec, str):
        return GateSpec.from_dict(_parse(spec, "the gate spec text"))
    raise MlopsInputError(
        f"A gate spec of type {type(spec).__name__} is not understood: give a mapping, YAML/JSON text, or the "
        "path of a .yaml/.yml/.json file."
    )


def _is_path(text: str) -> bool:
    # A real spec needs a name and rules: in text that is several lines, or a one-line {...} mapping.
    stripped = text.strip()
    return "\n" not in stripped and not stripped.startswith(("{", "["))


def _read_spec_file(path: Path) -> str:
    if not path.exists():
        raise MlopsInputError(
            f"Gate spec file not found: {str(path)[:300]!r} does not exist. Check the path (inline specs must be YAML/JSON "
            "text of several lines, or a {...} mapping)."
        )
    if not path.is_file():
        raise MlopsInputError(
            f"Gate spec {str(path)!r} is not a file: give the path of a .yaml or .json file."
        )
    if path.suffix.lower() not in SPEC_SUFFIXES:
        raise MlopsInputError(
            f"Gate spec file {str(path)!r} does not end in .yaml, .yml or .json: rename it, or point at the "
            "right file (its suffix says how it is parsed)."
        )
    try:
        with path.open("rb") as f:
            raw = f.read(_MAX_SPEC_BYTES + 1)
    except OSError as e:
        raise MlopsInputError(
            f"Gate spec file {str(path)!r} cannot be read ({e.strerror or e}): check its permissions."
        ) from None
    if len(raw) > _MAX_SPEC_BYTES:
        raise MlopsInputError(
            f"Gate spec file {str(path)!r} is larger than {_MAX_SPEC_BYTES} bytes, so it is not a gate spec: "
            "check the path."
        )
    return _decode(raw, f"Gate spec file {str(path)!r}")


def _decode(raw: bytes, where: str) -> str:
    if b"\x00" in raw:
        raise MlopsInputError(f"{where} is binary, not YAML/JSON text: point at the gate spec file.")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise MlopsInputError(
            f"{where} is not UTF-8 text (byte {e.start}: {raw[e.start : e.start + 1]!r}): save the spec as "
            "UTF-8 YAML/JSON, or point at the right file."
        ) from None


def _unique_key_loader() -> Any:
    """A safe YAML loader that refuses duplicate keys (plain YAML keeps the last one silently)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):  # type: ignore[misc]  # yaml ships no type information here
        pass

    def construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:
                continue  # an unhashable key: the mapping's own construction reports it
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return loader.construct_mapping(node, deep)

    UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return UniqueKeyLoader


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _parse(text: str, where: str, json_file: bool = False) -> Any:
    import yaml

    if not text.strip():
        raise MlopsInputError(f"{where} is empty: write a spec with 'name' and 'rules'.")
    try:
        if json_file or text.lstrip().startswith("{"):
            # JSON is YAML, but json.loads gives better errors for JSON; a {...} that is not JSON may
            # still be a YAML flow mapping ({name: g, rules: ...}).
            try:
                return json.loads(text, object_pairs_hook=_reject_duplicates)
            except ValueError as e:
                if json_file or "duplicate key" in str(e):
                    raise
        return yaml.load(text, Loader=_unique_key_loader())  # a SafeLoader subclass: safe
    except (ValueError, yaml.YAMLError) as e:
        raise MlopsInputError(f"Cannot parse {where}: {e}. Fix the YAML/JSON syntax.") from None
    except RecursionError:
        raise MlopsInputError(f"Cannot parse {where}: it is nested too deeply to be a gate spec.") from None
