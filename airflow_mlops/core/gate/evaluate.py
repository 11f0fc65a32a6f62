"""Evaluating a gate: per-check rows, the verdict, its table, and recording it on the model version."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_mlops.core import registry
from airflow_mlops.core.errors import MlopsInputError, MlopsServiceError
from airflow_mlops.core.gate.evidence import (
    Evidence,
    FrameLoader,
    HoldoutSource,
    MetricsUrlSource,
    MlflowMetricsSource,
    PredictionLogSource,
    PrometheusSource,
    VersionRef,
    read_holdout,
)
from airflow_mlops.core.gate.spec import GateSpec, Rule, load_spec
from airflow_mlops.core.promql import PromClient, PromQLQueryError
from airflow_mlops.core.redact import redact, without_userinfo

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from airflow_mlops.core.tracking import MlflowTarget

PASSED, FAILED, PENDING, SKIPPED = "passed", "failed", "pending", "skipped"
# Outcomes only an analysed gate reaches: neither condition held (a human decides), or the source kept erroring.
INCONCLUSIVE, ERROR = "inconclusive", "error"
DECIDED = frozenset({PASSED, FAILED, INCONCLUSIVE, ERROR})
TAG_PREFIX = "mlops.gate."
# MLflow caps a tag value at 5000 characters; the details tag stays under it.
_TAG_LIMIT = 5000
# Float noise must not fail a change that is exactly at its threshold.
_EPS = 1e-12
# Seconds for the reachability probe of an MLflow server before any registry call.
PROBE_TIMEOUT = 5.0


@dataclass
class Row:
    """One check of one rule.

    :param metric: the metric.
    :param check: ``min``, ``max``, ``min_change``, ``min_relative_change``, ``max_change``,
        ``max_relative_change`` or ``min_samples``.
    :param candidate: the candidate's value (for change checks: its metric value).
    :param baseline: the baseline's value, when compared.
    :param observed: what the threshold is compared with (value, change, relative change or sample count).
    :param threshold: the threshold.
    :param status: passed, failed, pending (not enough evidence yet), skipped (no baseline; a slice with too
        few rows) or inconclusive (analysis: between the success and the failure condition, or NaN).
    :param reason: a sentence saying why.
    :param slice: the data slice the check is about (None: all the data).
    """

    metric: str
    check: str
    candidate: float | None
    baseline: float | None
    observed: float | None
    threshold: float | None
    status: str
    reason: str
    slice: str | None = None


@dataclass
class Verdict:
    """The outcome of a gate for one candidate version.

    :param gate: the gate name.
    :param model_name: the registered model.
    :param version: the candidate version.
    :param source: the evidence source kind.
    :param baseline_alias: the alias compared against.
    :param baseline_version: the version behind it (None for the first model).
    :param status: passed, failed or pending; an analysed gate also ends inconclusive or error.
    :param rows: one row per check (of the latest measurement of each rule, for an analysed gate).
    :param baseline_note: what stands in the table's title when there is no baseline version.
    :param analysis: the measurement history of an analysed gate (see
        :class:`airflow_mlops.core.gate.analysis.Analysis`), None otherwise.
    :param evidence: where the candidate's and the baseline's values were read (``mlflow`` source: their
        LoggedModels, or their runs for versions registered without one).
    """

    gate: str
    model_name: str
    version: str
    source: str
    baseline_alias: str
    baseline_version: str | None
    status: str
    rows: list[Row] = field(default_factory=list)
    baseline_note: str | None = None
    analysis: dict[str, Any] | None = None
    evidence: dict[str, str] | None = None

    @property
    def passed(self) -> bool:
        """Whether every check passed (or was skipped for lack of a baseline)."""
        return self.status == PASSED

    @property
    def decided(self) -> bool:
        """Whether the verdict is final (more waiting cannot change it)."""
        return self.status in DECIDED

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able mapping (for XCom and trigger events); NaN/inf become None."""
        out = asdict(self)
        for row in out["rows"]:
            for k in ("candidate", "baseline", "observed", "threshold"):
                if isinstance(row[k], float) and not math.isfinite(row[k]):
                    row[k] = None if math.isnan(row[k]) else (1e308 if row[k] > 0 else -1e308)
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Verdict:
        """Rebuild a verdict from :meth:`to_dict`'s output."""
        return cls(**{**raw, "rows": [Row(**r) for r in raw.get("rows", [])]})

    def failures(self) -> list[Row]:
        """The failed checks."""
        return [r for r in self.rows if r.status == FAILED]

    def summary(self) -> str:
        """One line: gate, model, status and the failed (or pending) checks."""
        head = f"Gate {self.gate!r} {self.status.upper()} for {self.model_name} v{self.version}"
        base = f" vs {self.baseline_alias}=v{self.baseline_version}" if self.baseline_version else ""
        bad = [r for r in self.rows if r.status in (FAILED, PENDING, INCONCLUSIVE)]
        tail = "; ".join(
            f"{r.metric}{f' [{r.slice}]' if r.slice else ''} {r.check}: {r.reason}" for r in bad[:5]
        )
        if self.status == ERROR and self.analysis:
            errored = [
                f"{k}: {v['message']}" for k, v in self.analysis["rules"].items() if v["phase"] == ERROR
            ]
            tail = "; ".join(errored[:3]) or tail
        return f"{head}{base}" + (f": {tail}" if tail else "")

    def table(self) -> str:
        """The verdict as a fixed-width table for task logs and CI output."""
        sliced = any(r.slice for r in self.rows)
        header: tuple[str, ...] = ("metric", "check", "candidate", "baseline", "observed", "threshold", "status",
                                   "reason")  # fmt: skip
        lines: list[tuple[str, ...]] = [
            (r.metric, r.check, _fmt(r.candidate), _fmt(r.baseline), _fmt(r.observed), _fmt(r.threshold),
             r.status.upper(), r.reason)
            for r in self.rows
        ]  # fmt: skip
        if sliced:
            # Every slice gets its lines: the slice column after the metric's.
            header = (header[0], "slice", *header[1:])
            lines = [(x[0], r.slice or "(all)", *x[1:]) for x, r in zip(lines, self.rows, strict=True)]
        widths = [
            max(len(h), *(len(str(x[i])) for x in lines)) if lines else len(h) for i, h in enumerate(header)
        ]
        widths[-1] = len(header[-1])  # the reason is last and not padded

        def line(cells: tuple[str, ...]) -> str:
            return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

        base = (
            f"{self.baseline_alias} = v{self.baseline_version}"
            if self.baseline_version
            else (self.baseline_note or f"no {self.baseline_alias} yet (first model)")
        )
        read = ""
        if self.evidence:
            read = " (" + ", ".join(f"{k}: {v}" for k, v in self.evidence.items()) + ")"
        title = (
            f"Gate {self.gate!r}: {self.model_name} v{self.version} vs {base}, evidence: {self.source}{read}"
            f" -> {self.status.upper()}"
        )
        rule = "-" * min(120, max(len(title), sum(widths) + 2 * (len(widths) - 1)))
        out = "\n".join([title, rule, line(header), rule, *(line(x) for x in lines), rule])
        history = self.history_table()
        return f"{out}\n{history}" if history else out

    def history_table(self) -> str:
        """The measurement history of an analysed gate, one line per measurement ("" otherwise)."""
        if not self.analysis:
            return ""
        from airflow_mlops.core.gate.analysis import Analysis, RuleResult

        raw = self.analysis
        rules = {k: RuleResult.from_dict(v) for k, v in raw.get("rules", {}).items()}
        return Analysis(float(raw["started_at"]), rules, str(raw.get("phase", ""))).table()


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if float(x).is_integer() and abs(x) >= 1:
        return str(int(x))
    return f"{x:.4g}"


def _check(ok: bool) -> str:
    return PASSED if ok else FAILED


def improvement(rule: Rule, candidate: float, baseline: float) -> tuple[float, float]:
    """The change in the better direction, absolute and relative to ``|baseline|``.

    With a zero baseline the relative change is +inf, 0 or -inf (any gain is infinitely large).
    """
    delta = candidate - baseline if rule.better_is_greater else baseline - candidate
    if baseline != 0:
        return delta, delta / abs(baseline)
    return delta, math.inf if delta > 0 else (-math.inf if delta < 0 else 0.0)


def _nan_check(value: float | None, where: str) -> None:
    if value is not None and math.isnan(value):
        raise MlopsInputError(
            f"{where} is NaN: the metric is undefined for this model or data (e.g. a class never predicted). "
            "Fix the data or the metric; a NaN can neither pass nor fail a gate."
        )


def evaluate_rule(
    rule: Rule,
    candidate: Evidence,
    baseline: Evidence | None,
    *,
    live: bool,
    baseline_label: str,
) -> list[Row]:
    """All rows of one rule: its checks on all the data, then on every slice.

    A rule with analysis settings turns a NaN into an inconclusive row (neither condition can hold) rather
    than an input error.

    :param rule: the rule.
    :param candidate: the candidate's evidence.
    :param baseline: the baseline's evidence, or None when there is no baseline.
    :param live: whether evidence may still grow (too few samples: pending rather than failed).
    :param baseline_label: how to name the baseline in reasons (e.g. ``champion v3``).
    """
    rows = _overall_rows(rule, candidate, baseline, live=live, baseline_label=baseline_label)
    if rule.slices is not None and not any(r.status in (PENDING, INCONCLUSIVE) for r in rows):
        from airflow_mlops.core.gate.slices import slice_rows

        rows.extend(slice_rows(rule, candidate, baseline, baseline_label))
    return rows


def _nan_row(rule: Rule, whose: str) -> Row:
    return Row(rule.metric, "value", None, None, None, None, INCONCLUSIVE,
               f"the {whose}'s value is NaN: neither the success nor the failure condition can hold")  # fmt: skip


def _overall_rows(
    rule: Rule, candidate: Evidence, baseline: Evidence | None, *, live: bool, baseline_label: str
) -> list[Row]:
    m = rule.metric
    rows: list[Row] = []
    value = candidate.values.get(m)
    n = candidate.samples.get(m)
    short = PENDING if live else FAILED
    enough = True
    if rule.min_samples is not None:
        if n is None:
            enough = False
            rows.append(Row(m, "min_samples", value, None, None, rule.min_samples, short,
                            "the source gives no sample count"))  # fmt: skip
        else:
            enough = n >= rule.min_samples
            status = PASSED if enough else short
            reason = f"{n} samples" + ("" if enough else f", fewer than {rule.min_samples}")
            rows.append(Row(m, "min_samples", value, None, float(n), rule.min_samples, status, reason))
    if value is not None and math.isnan(value) and live and not enough:
        value = None  # a live gauge is NaN until it has data: that is "not yet", not bad input
    if value is not None and math.isnan(value) and rule.has_analysis:
        return [*rows, _nan_row(rule, "candidate")]
    _nan_check(value, f"The candidate's {m}")
    if value is None:
        note = candidate.notes.get(m, "no value")
        rows.append(Row(m, "value", None, None, None, None, PENDING, f"no live value yet ({note})"))
        return rows
    if live and not enough:
        # Values over too few samples are noise: neither a pass nor a final failure.
        checks = [k for k in ("min", "max") if getattr(rule, k) is not None]
        for k in checks:
            rows.append(
                Row(m, k, value, None, value, getattr(rule, k), PENDING, "waiting for enough samples")
            )
        if rule.has_change_rules:
            rows.append(Row(m, "change", value, None, None, None, PENDING, "waiting for enough samples"))
        return rows
    if rule.min is not None:
        ok = value >= rule.min
        rows.append(Row(m, "min", value, None, value, rule.min, _check(ok),
                        f"{_fmt(value)} {'>=' if ok else '<'} {_fmt(rule.min)}"))  # fmt: skip
    if rule.max is not None:
        ok = value <= rule.max
        rows.append(Row(m, "max", value, None, value, rule.max, _check(ok),
                        f"{_fmt(value)} {'<=' if ok else '>'} {_fmt(rule.max)}"))  # fmt: skip
    if rule.fail_below is not None:
        held = value < rule.fail_below
        rows.append(Row(m, "fail_below", value, None, value, rule.fail_below, _check(not held),
                        f"{_fmt(value)} < {_fmt(rule.fail_below)}: the failure condition holds" if held
                        else f"{_fmt(value)} >= {_fmt(rule.fail_below)}"))  # fmt: skip
    if rule.fail_above is not None:
        held = value > rule.fail_above
        rows.append(Row(m, "fail_above", value, None, value, rule.fail_above, _check(not held),
                        f"{_fmt(value)} > {_fmt(rule.fail_above)}: the failure condition holds" if held
                        else f"{_fmt(value)} <= {_fmt(rule.fail_above)}"))  # fmt: skip
    if not rule.has_change_rules:
        return rows
    if baseline is None:
        rows.append(Row(m, "change", value, None, None, None, SKIPPED,
                        f"no baseline ({baseline_label}): change rules skipped, bounds still apply"))  # fmt: skip
        return rows
    base = baseline.values.get(m)
    bn = baseline.samples.get(m)
    if live and base is not None and math.isnan(base):
        base = None
    if base is not None and math.isnan(base) and rule.has_analysis:
        return [*rows, _nan_row(rule, f"baseline ({baseline_label})")]
    _nan_check(base, f"The baseline's ({baseline_label}) {m}")
    if base is None or (live and rule.min_samples is not None and (bn or 0) < rule.min_samples):
        why = (
            f"baseline {baseline_label} has no live value yet"
            if base is None
            else (f"baseline {baseline_label} has {bn or 0} samples, fewer than {rule.min_samples}")
        )
        rows.append(Row(m, "change", value, base, None, None, PENDING, why))
        return rows
    delta, rel = improvement(rule, value, base)
    word = "gain" if delta >= 0 else "regression"
    direction = "higher" if rule.better_is_greater else "lower"
    specs = (
        ("min_change", rule.min_change, delta, True, f"{word} of {_fmt(abs(delta))} ({direction} is better)"),
        (
            "max_change",
            rule.max_change,
            delta,
            False,
            f"{word} of {_fmt(abs(delta))} ({direction} is better)",
        ),
        ("min_relative_change", rule.min_relative_change, rel, True, f"relative {word} of {abs(rel):.2%}"),
        ("max_relative_change", rule.max_relative_change, rel, False, f"relative {word} of {abs(rel):.2%}"),
    )
    for check, threshold, observed, is_min, what in specs:
        if threshold is None:
            continue
        ok = observed >= threshold - _EPS if is_min else observed <= threshold + _EPS
        if ok:
            reason = f"{what} vs {baseline_label} ({_fmt(base)})"
        elif is_min:
            allowed = (
                f"at most {_fmt(-threshold)} regression allowed"
                if threshold < 0
                else f"needs {_fmt(threshold)}"
            )
            reason = f"{what} vs {baseline_label} ({_fmt(base)}); {allowed}"
        else:
            reason = (
                f"{what} vs {baseline_label} ({_fmt(base)}) is suspiciously large (cap {_fmt(threshold)})"
            )
        rows.append(Row(m, check, value, base, observed, threshold, _check(ok), reason))
    return rows


def evaluate(
    spec: GateSpec,
    model_name: str,
    version: str,
    candidate: Evidence,
    baseline: Evidence | None,
    baseline_version: str | None,
) -> Verdict:
    """Apply every rule to the evidence and decide.

    Failed if any check failed; otherwise pending if any check waits for evidence; otherwise passed.
    """
    if baseline_version:
        label = f"{spec.baseline} v{baseline_version}"
    else:
        label = "baseline: none" if not spec.has_baseline else f"{spec.baseline} (unset)"
    rows: list[Row] = []
    for rule in spec.rules:
        rows.extend(evaluate_rule(rule, candidate, baseline, live=spec.source.live, baseline_label=label))
    statuses = {r.status for r in rows}
    status = FAILED if FAILED in statuses else PENDING if PENDING in statuses else PASSED
    return Verdict(spec.name, model_name, str(version), spec.source.kind, spec.baseline, baseline_version,
                   status, rows)  # fmt: skip


def _version_ref(client: MlflowClient, model_name: str, version: str) -> VersionRef:
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version(model_name, str(version))
    except MlflowException as e:
        if _not_found(e):
            raise MlopsInputError(
                f"Model version {model_name} v{version} does not exist: check the model name and version."
            ) from None
        raise
    return VersionRef(model_name, str(mv.version), mv.run_id or None, logged_model_id(mv))


_LOGGED_MODEL_URI = re.compile(r"^models:/(m-[0-9a-f]{32})/?$")


def logged_model_id(mv: Any) -> str | None:
    """The MLflow 3 LoggedModel behind a model version: its ``model_id``, or the ``models:/m-...`` source it
    was registered from (MLflow's SQL registry stores the source, not the id); None for older versions."""
    model_id = getattr(mv, "model_id", None)
    if model_id:
        return str(model_id)
    match = _LOGGED_MODEL_URI.match(str(getattr(mv, "source", "") or ""))
    return match.group(1) if match else None


def _not_found(e: Exception) -> bool:
    return "RESOURCE_DOES_NOT_EXIST" in str(getattr(e, "error_code", ""))


@contextmanager
def mlflow_errors(target: MlflowTarget) -> Iterator[None]:
    """Turn MLflow's own errors (other than "does not exist") into a :class:`MlopsServiceError` that names
    the server and the fix; input errors pass through.

    :param target: the MLflow store being used.
    """
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as e:
        code = str(getattr(e, "error_code", ""))
        where = redact(target.tracking_uri)
        text = redact(" ".join(str(getattr(e, "message", e)).split()))[:300]
        if code in ("PERMISSION_DENIED", "UNAUTHENTICATED") or " 401" in text or " 403" in text:
            raise MlopsServiceError(
                f"MLflow at {where} refused the request ({text}): check MLFLOW_TRACKING_USERNAME/PASSWORD "
                "or MLFLOW_TRACKING_TOKEN (or the connection's login)."
            ) from None
        if code == "ENDPOINT_NOT_FOUND" or "error code 404" in text:
            raise MlopsServiceError(
                f"{where} has no MLflow REST API (HTTP 404 for an MLflow request): point the tracking URI at "
                "an MLflow tracking server (e.g. http://mlflow:5000)."
            ) from None
        if _not_found(e):
            raise MlopsInputError(
                f"MLflow has no such object ({text}): check the model name and version."
            ) from None
        raise MlopsServiceError(
            f"MLflow at {where} failed ({text}): check that the server is up and reachable, then retry."
        ) from None


def probe_mlflow(target: MlflowTarget, timeout: float = PROBE_TIMEOUT) -> None:
    """Fail within ``timeout`` seconds, naming the server, when MLflow does not answer (MLflow's own client
    retries for minutes first, then reports a missing object).

    :param target: the MLflow store.
    :param timeout: seconds per probe.
    :raises MlopsServiceError: the tracking (or registry) server does not answer.
    """
    from airflow_mlops.core.tracking import check_reachable

    for uri in dict.fromkeys([target.tracking_uri, target.registry_uri or target.tracking_uri]):
        uri = without_userinfo(uri)  # urllib would take "user:pw@host" for the host name
        try:
            check_reachable(uri, timeout=timeout)
        except MlopsServiceError as e:
            reason = e.__cause__ if e.__cause__ is not None else e
            raise MlopsServiceError(
                f"MLflow at {redact(uri)} is unreachable ({redact(getattr(reason, 'reason', reason))}): start "
                "the MLflow server, or fix the tracking URI (--tracking-uri, MLFLOW_TRACKING_URI or the "
                "connection's host)."
            ) from None
        if _no_mlflow_api(uri, timeout):
            raise MlopsServiceError(
                f"{redact(uri)} has no MLflow REST API (HTTP 404 for an MLflow request): point the tracking "
                "URI at an MLflow tracking server (e.g. http://mlflow:5000)."
            )


def _no_mlflow_api(uri: str, timeout: float) -> bool:
    """True when an HTTP server answers 404 to MLflow's registry API: it is not an MLflow server (with a
    server behind auth the answer is 401/403, and anything else is left to the real request)."""
    import urllib.error
    import urllib.request

    if not uri.startswith(("http://", "https://")):
        return False
    try:
        url = f"{uri.rstrip('/')}/api/2.0/mlflow/registered-models/search?max_results=1"
        with urllib.request.urlopen(url, timeout=timeout):
            return False
    except urllib.error.HTTPError as e:
        return e.code == 404
    except (OSError, ValueError):
        return False


def run_gate(
    spec: GateSpec | dict[str, Any] | str,
    model_name: str,
    version: str | int,
    target: MlflowTarget,
    *,
    prometheus: PromClient | None = None,
    frame_loader: FrameLoader | None = None,
) -> Verdict:
    """Collect evidence for the candidate and its baseline, and evaluate the gate. Changes nothing.

    With no version behind the baseline alias the candidate is a first model (change rules are skipped)
    only when the model never had another version or a promotion; otherwise the alias was removed, or
    its version deleted, and comparing with nothing would wave the candidate through: that is an error
    (set the alias, or say ``baseline: none`` in the spec).

    :param spec: the gate spec (or anything :func:`load_spec` takes).
    :param model_name: registered model name.
    :param version: candidate version.
    :param target: the MLflow store.
    :param prometheus: client for a ``prometheus`` source (default: the source's ``url``).
    :param frame_loader: reads a ``holdout`` source's data (default: local file or ``dvc.api``).
    :raises MlopsInputError: bad spec, unknown version, baseline alias missing on a model with history,
        alias on a deleted version, missing metric, NaN.
    :raises MlopsServiceError: MLflow (or Prometheus, or the metrics page) cannot be used.
    """
    spec = load_spec(spec)
    version = str(version).strip()
    _check_version(model_name, version)
    probe_mlflow(target)
    prometheus = _probe_live_source(spec, prometheus)
    # Only a holdout loads models through MLflow's process-wide settings; every other source uses the
    # client alone, whose stores carry the credentials: safe in a triggerer's threads.
    scope = target.activate() if spec.source.kind == "holdout" else contextlib.nullcontext()
    with scope, mlflow_errors(target):
        client = target.client()
        cand_ref = _version_ref(client, model_name, version)
        base_mv = None
        if spec.has_baseline:
            base_mv = registry.get_version_by_alias(client, model_name, spec.baseline)
        note = None
        if not spec.has_baseline:
            note = "no baseline (baseline: none)"
        elif base_mv is None:
            history = registry.signs_of_history(client, model_name, version)
            if history and _compares(spec):
                raise MlopsInputError(
                    f"{model_name}@{spec.baseline} is not set, but {model_name} is not a new model "
                    f"({'; '.join(history)}): the alias was removed or its version deleted (MLflow drops an "
                    "alias with its version), and comparing with nothing would skip every change rule. Set "
                    f"{spec.baseline!r} on the version to compare with (e.g. MlflowClient()."
                    f"set_registered_model_alias({model_name!r}, {spec.baseline!r}, VERSION)), or set "
                    "'baseline: none' in the gate spec to compare with nothing on purpose."
                )
            if history:
                note = f"{spec.baseline} unset (bounds only)"
        base_ref = None
        if base_mv is not None and str(base_mv.version) != cand_ref.version:
            base_ref = VersionRef(
                model_name, str(base_mv.version), base_mv.run_id or None, logged_model_id(base_mv)
            )
        source = _make_source(spec, client, prometheus, frame_loader)
        cand_ev = source.collect(cand_ref, spec.rules)
        base_ev = source.collect(base_ref, spec.rules) if base_ref and _compares(spec) else None
    verdict = evaluate(spec, model_name, version, cand_ev, base_ev, base_ref.version if base_ref else None)
    verdict.baseline_note = note
    origins = {"candidate": cand_ev.origin, "baseline": base_ev.origin if base_ev is not None else None}
    verdict.evidence = {k: v for k, v in origins.items() if v} or None
    if base_mv is not None and base_ref is None:
        verdict.baseline_version = str(base_mv.version)  # the title then reads "v1 vs champion = v1"
        for row in verdict.rows:
            if row.status == SKIPPED:
                row.reason = f"the candidate is {spec.baseline} itself: change rules skipped"
    return verdict


def _check_version(model_name: Any, version: str) -> None:
    if not isinstance(model_name, str) or not model_name.strip() or not version or version in ("None", ""):
        raise MlopsInputError(f"Model name {model_name!r} and version {version!r} must both be given.")
    if not version.isdigit():
        raise MlopsInputError(
            f"Model version {version!r} is not a version number: give the number MLflow assigned, e.g. 3."
        )


def _probe_live_source(spec: GateSpec, prometheus: PromClient | None) -> PromClient | None:
    """Reach a live source once before MLflow is even imported, so a dead one is reported in seconds."""
    src = spec.source
    if src.kind == "prometheus":
        if prometheus is None and src.url:
            prometheus = PromClient(src.url, timeout=src.timeout)
        if prometheus is not None:
            prometheus.query("1")  # raises MlopsServiceError naming the server when it does not answer
    elif src.kind == "metrics_url":
        assert src.url is not None
        MetricsUrlSource(src.url, src.timeout, src.samples_query).fetch()
    return prometheus


def _compares(spec: GateSpec) -> bool:
    return any(r.compares for r in spec.rules)


def _make_source(
    spec: GateSpec, client: MlflowClient, prometheus: PromClient | None, frame_loader: FrameLoader | None
) -> Any:
    src = spec.source
    if src.kind == "mlflow":
        return MlflowMetricsSource(client)
    if src.kind == "holdout":
        frame = (frame_loader or read_holdout)(src)
        assert src.target is not None
        return HoldoutSource(client, frame, src.target)
    if src.kind == "prometheus":
        if prometheus is None:
            if not src.url:
                raise MlopsInputError(
                    "A prometheus source needs a server: set the source's 'url', a Prometheus connection, "
                    "or --prometheus-url."
                )
            prometheus = PromClient(src.url, timeout=src.timeout)
        return PrometheusSource(prometheus, src.samples_query)
    if src.kind == "prediction_log":
        assert src.path is not None
        return PredictionLogSource(src.path, src.window)
    assert src.url is not None
    return MetricsUrlSource(src.url, src.timeout, src.samples_query)


def is_analysed(spec: GateSpec) -> bool:
    """Whether any rule of the gate has analysis settings (then :func:`run_analysis` evaluates it)."""
    return any(r.has_analysis for r in spec.rules)


def measurement_phase(rule: Rule, rows: list[Row]) -> str:
    """The phase of one measurement of ``rule`` from its rows (see :mod:`airflow_mlops.core.gate.analysis`).

    Rows that make the measurement inconclusive are marked so.
    """
    from airflow_mlops.core.gate import analysis as an

    statuses = {r.status for r in rows}
    if not rule.has_analysis:
        return an.FAILED if FAILED in statuses else an.PENDING if PENDING in statuses else an.SUCCESSFUL
    if INCONCLUSIVE in statuses:
        return an.INCONCLUSIVE
    failure_held = any(r.status == FAILED and r.check in ("fail_below", "fail_above") for r in rows)
    if rule.has_failure_condition and failure_held:
        return an.FAILED
    if not rule.has_failure_condition and FAILED in statuses:
        return an.FAILED
    if FAILED in statuses or PENDING in statuses:
        for r in rows:
            if r.status in (FAILED, PENDING):
                r.status = INCONCLUSIVE  # thin evidence, or between success and failure: neither held
        return an.INCONCLUSIVE
    return an.SUCCESSFUL


# The analysis phase -> the verdict status.
_STATUS = {"successful": PASSED, "failed": FAILED, "inconclusive": INCONCLUSIVE, "error": ERROR}


def run_analysis(
    spec: GateSpec | dict[str, Any] | str,
    model_name: str,
    version: str | int,
    target: MlflowTarget,
    *,
    state: dict[str, Any] | None = None,
    now: float | None = None,
    prometheus: PromClient | None = None,
    frame_loader: FrameLoader | None = None,
) -> Verdict:
    """Take the measurements that are due at ``now`` and assess the analysis. Changes nothing.

    Call it again with ``state=verdict.analysis`` when :func:`next_measurement` says; the verdict is
    decided (passed, failed, inconclusive or error) once the analysis is. Source errors (an unreachable
    service, a query Prometheus rejects) are error measurements; other bad input raises as in
    :func:`run_gate`.

    :param spec: the gate spec.
    :param model_name: registered model name.
    :param version: candidate version.
    :param target: the MLflow store.
    :param state: the previous verdict's ``analysis`` (None: start now).
    :param now: epoch seconds (default: the clock).
    :param prometheus: as in :func:`run_gate`.
    :param frame_loader: as in :func:`run_gate`.
    """
    spec = load_spec(spec)
    if not state:
        # Bad input fails now, not at the first measurement after the initial delay.
        _check_version(model_name, str(version).strip())
        probe_mlflow(target)
        with mlflow_errors(target):
            _version_ref(target.client(), model_name, str(version).strip())

    def measure(due: GateSpec) -> Verdict:
        return run_gate(due, model_name, version, target, prometheus=prometheus, frame_loader=frame_loader)

    return analysis_step(spec, model_name, str(version).strip(), measure, state=state, now=now)


def analysis_step(
    spec: GateSpec,
    model_name: str,
    version: str,
    measure: Callable[[GateSpec], Verdict],
    *,
    state: dict[str, Any] | None = None,
    now: float | None = None,
) -> Verdict:
    """One step of an analysis: ``measure`` (a gate evaluation, :func:`run_gate` in production) runs on the
    rules due at ``now``, each rule's measurement is tallied, and the analysis is assessed.

    :param spec: the gate spec.
    :param model_name: registered model name.
    :param version: candidate version.
    :param measure: evaluates a gate of the due rules; its source errors are error measurements.
    :param state: the previous verdict's ``analysis`` (None: start now).
    :param now: epoch seconds (default: the clock).
    """
    from airflow_mlops.core.gate import analysis as an

    now = time.time() if now is None else float(now)
    analysis = an.Analysis.from_dict(state, spec) if state else an.Analysis.start(spec, now)
    due = [r for r in spec.rules if analysis.due(r, now)]
    if due:
        try:
            verdict = measure(dataclasses.replace(spec, rules=tuple(due)))
        except (MlopsServiceError, PromQLQueryError) as e:
            message = redact(" ".join(str(e).split()))[:300]
            for rule in due:
                result = analysis.rules[rule.metric]
                an.record(rule, result, an.Measurement(now, an.ERROR, message=message))
                result.rows = [
                    dataclasses.asdict(Row(rule.metric, "source", None, None, None, None, ERROR, message))
                ]
        else:
            analysis.baseline_version, analysis.baseline_note = (
                verdict.baseline_version,
                verdict.baseline_note,
            )
            for rule in due:
                rows = [r for r in verdict.rows if r.metric == rule.metric]
                phase = measurement_phase(rule, rows)
                overall = [r for r in rows if r.slice is None]
                value = next((r.candidate for r in overall if r.candidate is not None), None)
                base = next((r.baseline for r in overall if r.baseline is not None), None)
                n = next((r.observed for r in overall if r.check == "min_samples"), None)
                bad = [f"{r.check}{f' [{r.slice}]' if r.slice else ''}: {r.reason}" for r in rows
                       if r.status in (FAILED, INCONCLUSIVE, PENDING)]  # fmt: skip
                result = analysis.rules[rule.metric]
                an.record(rule, result, an.Measurement(now, phase, value, base, None if n is None else int(n),
                                                       "; ".join(bad)[:300]))  # fmt: skip
                result.rows = [dataclasses.asdict(r) for r in rows]
    analysis.assess(spec)
    rows = [Row(**r) for rule in spec.rules for r in analysis.rules[rule.metric].rows]
    return Verdict(spec.name, model_name, version, spec.source.kind, spec.baseline, analysis.baseline_version,
                   _STATUS.get(analysis.phase, PENDING), rows, analysis.baseline_note, analysis.to_dict())  # fmt: skip


def next_measurement(spec: GateSpec | dict[str, Any] | str, verdict: Verdict) -> float | None:
    """Epoch seconds of the next measurement of an analysed verdict (None when decided)."""
    from airflow_mlops.core.gate.analysis import Analysis

    if verdict.decided or not verdict.analysis:
        return None
    gate = load_spec(spec)
    return Analysis.from_dict(verdict.analysis, gate).next_due(gate)


def verdict_tags(verdict: Verdict) -> dict[str, str]:
    """The tags recording a verdict: ``mlops.gate.<name>`` = status, ``.details`` = JSON of the rows.

    The details stay valid JSON under MLflow's tag size limit: when the rows do not fit, they shrink (the
    prose first, then the numbers of passed checks, then every row but its outcome) and ``truncated``
    says so; a string is never cut.
    """
    return {
        f"{TAG_PREFIX}{verdict.gate}": verdict.status,
        f"{TAG_PREFIX}{verdict.gate}.details": details_json(verdict),
    }


def details_json(verdict: Verdict, limit: int = _TAG_LIMIT) -> str:
    """The verdict's details as JSON of at most ``limit`` characters (see :func:`verdict_tags`)."""
    rows = verdict.to_dict()["rows"]
    head: dict[str, Any] = {
        "status": verdict.status,
        "source": verdict.source,
        "baseline": {"alias": verdict.baseline_alias, "version": verdict.baseline_version},
    }
    numbers = ("metric", "check", "status", "candidate", "baseline", "observed", "threshold")
    outcome = ("metric", "check", "status")
    shrunk = [
        (None, rows),
        ("reasons dropped", [{k: r[k] for k in numbers} for r in rows]),
        (
            "numbers of passed checks dropped",
            [{k: r[k] for k in (outcome if r["status"] == PASSED else numbers)} for r in rows],
        ),
        ("only outcomes kept", [{k: r[k] for k in outcome} for r in rows]),
        ("only failed and pending checks kept", [{k: r[k] for k in outcome} for r in rows
                                                 if r["status"] in (FAILED, PENDING)]),
    ]  # fmt: skip
    counts = dict(Counter(r["status"] for r in rows))
    for history in _history_forms(verdict.analysis):
        for what, kept in shrunk:
            data = {**head, "rows": kept} if what is None else {**head, "rows": kept, "truncated": what,
                                                                  "n_rows": len(rows), "counts": counts}  # fmt: skip
            if history is not None:
                data["analysis"] = history
            text = json.dumps(data, sort_keys=True)
            if len(text) <= limit:
                return text
    text = json.dumps(
        {**head, "truncated": "no row fits", "n_rows": len(rows), "counts": counts}, sort_keys=True
    )
    if len(text) <= limit:
        return text
    return json.dumps({"status": verdict.status, "truncated": "no row fits", "n_rows": len(rows)})


def _history_forms(analysis: dict[str, Any] | None) -> list[dict[str, Any] | None]:
    """The analysis history in ever smaller forms for the details tag: measurements as
    ``[seconds since start, phase, value]``, then the tallies alone, then nothing."""
    if not analysis:
        return [None]
    tallies = ("phase", "count", "successful", "failed", "inconclusive", "error", "consecutive_error",
               "consecutive_success")  # fmt: skip
    start = float(analysis["started_at"])
    full = {
        "phase": analysis["phase"],
        "rules": {
            k: {**{t: v[t] for t in tallies},
                "measurements": [[round(m["at"] - start, 1), m["phase"], m["value"]] for m in v["measurements"]]}
            for k, v in analysis["rules"].items()
        },
    }  # fmt: skip
    short = {
        "phase": analysis["phase"],
        "rules": {k: {t: v[t] for t in tallies} for k, v in analysis["rules"].items()},
    }
    return [full, short, None]


def record_verdict(target: MlflowTarget, verdict: Verdict, promote_alias: str | None = None) -> None:
    """Tag a decided verdict on the candidate version and, if it passed, set ``promote_alias`` on it.

    :param target: the MLflow store.
    :param verdict: a passed or failed verdict.
    :param promote_alias: alias to point at the candidate on pass (e.g. ``challenger``).
    :raises ValueError: the verdict is still pending (nothing is recorded before a complete verdict).
    """
    if not verdict.decided:
        raise ValueError(
            f"Verdict of gate {verdict.gate!r} is {verdict.status}: only decided verdicts are recorded."
        )
    tags = verdict_tags(verdict)
    probe_mlflow(target)
    with target.activate(), mlflow_errors(target):
        client = target.client()
        registry.tag_version(client, verdict.model_name, verdict.version, tags)
        if verdict.passed and promote_alias:
            client.set_registered_model_alias(verdict.model_name, promote_alias, verdict.version)
