"""Analysis semantics for gate rules, as Argo Rollouts' AnalysisTemplate defines them.

Each rule of an analysed gate takes measurements (``count`` of them, ``interval`` apart, the first after
``initial_delay``). A measurement is

* ``successful``: every check of the rule passed;
* ``failed``: the failure condition held (``fail_below``/``fail_above`` when given; otherwise any failed
  check);
* ``inconclusive``: neither (a value between the success and the failure condition, a NaN, or evidence
  too thin to judge: no series yet, too few samples);
* ``error``: the source could not be read (Prometheus down, a query error, MLflow unreachable).

The rule is then assessed in Argo's order: failed when failed measurements > ``failure_limit``
(default 0), else inconclusive when inconclusive ones > ``inconclusive_limit`` (default 0), else error
when errors in a row > ``consecutive_error_limit`` (default 4; reset by any measurement that is not an
error), else successful when ``consecutive_success_limit`` successes came in a row, else, once ``count``
measurements (errors do not count) are taken: successful, or with a ``consecutive_success_limit`` that was
never reached, inconclusive (failed when ``failure_limit`` is -1). The gate is the worst completed rule
(failed > error > inconclusive > successful); it ends as soon as one rule fails, errors or is inconclusive,
and passes when every rule succeeded.

Rules without analysis settings in an analysed gate keep their single-evaluation meaning: they are measured
until decided (thin live evidence is waited for, not counted) and fail on their first failed measurement.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_mlops.core.gate.spec import GateSpec, Rule

SUCCESSFUL, FAILED, INCONCLUSIVE, ERROR = "successful", "failed", "inconclusive", "error"
RUNNING, PENDING = "running", "pending"
COMPLETED = frozenset({SUCCESSFUL, FAILED, INCONCLUSIVE, ERROR})
# Argo's order of completed phases, best to worst.
_ORDER = (SUCCESSFUL, INCONCLUSIVE, ERROR, FAILED)
DEFAULT_CONSECUTIVE_ERROR_LIMIT = 4
# Seconds before an errored measurement is retried when the rule has no interval (Argo's default).
ERROR_RETRY_INTERVAL = 10.0
# Measurements kept per rule (older ones are dropped; the counters keep counting).
HISTORY_LIMIT = 10


@dataclass
class Measurement:
    """One measurement of one rule.

    :param at: epoch seconds when it finished.
    :param phase: successful, failed, inconclusive, error (or pending: not counted, rules without analysis).
    :param value: the candidate's value.
    :param baseline: the baseline's value.
    :param samples: samples behind the value.
    :param message: why (the failed checks, the error).
    """

    at: float
    phase: str
    value: float | None = None
    baseline: float | None = None
    samples: int | None = None
    message: str = ""


@dataclass
class RuleResult:
    """The running tally of one rule (Argo's MetricResult).

    :param metric: the rule's metric.
    :param phase: pending (nothing measured), running, or a completed phase.
    :param count: measurements without error.
    :param rows: the rows of the latest measurement (as dicts), for the verdict table.
    """

    metric: str
    phase: str = PENDING
    count: int = 0
    successful: int = 0
    failed: int = 0
    inconclusive: int = 0
    error: int = 0
    consecutive_error: int = 0
    consecutive_success: int = 0
    message: str = ""
    last_at: float | None = None
    measurements: list[Measurement] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RuleResult:
        """Rebuild from :meth:`Analysis.to_dict`'s output."""
        return cls(**{**raw, "measurements": [Measurement(**m) for m in raw.get("measurements", [])]})


def effective_count(rule: Rule) -> int | None:
    """Measurements to take: ``count``; 1 with neither count nor interval; None (no end) with an interval only."""
    if rule.count is not None:
        return rule.count
    return 1 if rule.interval is None else None


def failure_limit(rule: Rule) -> int:
    """The failed measurements tolerated (-1: no limit)."""
    return 0 if rule.failure_limit is None else rule.failure_limit


def record(rule: Rule, result: RuleResult, m: Measurement) -> None:
    """Add a measurement to the tally (Argo's counters) and keep the last :data:`HISTORY_LIMIT`."""
    if m.phase == SUCCESSFUL:
        result.successful += 1
        result.consecutive_success += 1
    elif m.phase == FAILED:
        result.failed += 1
        result.consecutive_success = 0
    elif m.phase == INCONCLUSIVE:
        result.inconclusive += 1
        result.consecutive_success = 0
    elif m.phase == ERROR:
        result.error += 1
        result.consecutive_error += 1
        result.consecutive_success = 0
    if m.phase in (SUCCESSFUL, FAILED, INCONCLUSIVE):
        result.count += 1
        result.consecutive_error = 0
    result.last_at = m.at
    result.message = m.message
    result.measurements = [*result.measurements, m][-HISTORY_LIMIT:]
    if result.phase == PENDING:
        result.phase = RUNNING


def assess_rule(rule: Rule, result: RuleResult) -> str:
    """The rule's phase from its tally, in Argo Rollouts' order (see the module docstring)."""
    if result.phase in COMPLETED:
        return result.phase
    if not result.measurements:
        return PENDING
    limit = failure_limit(rule)
    if limit >= 0 and result.failed > limit:
        return FAILED
    if result.inconclusive > (rule.inconclusive_limit or 0):
        return INCONCLUSIVE
    errors = (
        DEFAULT_CONSECUTIVE_ERROR_LIMIT
        if rule.consecutive_error_limit is None
        else rule.consecutive_error_limit
    )
    if result.consecutive_error > errors:
        return ERROR
    streak = rule.consecutive_success_limit or 0
    if streak and result.consecutive_success >= streak:
        return SUCCESSFUL
    wanted = effective_count(rule)
    if wanted is not None and result.count >= wanted:
        if streak:
            # Neither limit was reached: Argo leaves that to a human (or fails with failure_limit -1).
            return INCONCLUSIVE if limit >= 0 else FAILED
        return SUCCESSFUL
    return RUNNING


def worst(phases: list[str]) -> str:
    """The worst completed phase (failed > error > inconclusive > successful)."""
    return max(phases, key=_ORDER.index)


@dataclass
class Analysis:
    """The measurement history of one gate evaluation over time; JSON-able for XCom and triggers.

    :param started_at: epoch seconds when the analysis began (``initial_delay`` counts from it).
    :param rules: metric -> its tally.
    :param phase: running, or the gate's completed phase.
    """

    started_at: float
    rules: dict[str, RuleResult] = field(default_factory=dict)
    phase: str = RUNNING
    baseline_version: str | None = None
    baseline_note: str | None = None

    @classmethod
    def start(cls, spec: GateSpec, now: float) -> Analysis:
        """A fresh analysis of every rule of ``spec``."""
        return cls(now, {r.metric: RuleResult(r.metric) for r in spec.rules})

    @classmethod
    def from_dict(cls, raw: dict[str, Any], spec: GateSpec) -> Analysis:
        """Rebuild from :meth:`to_dict`; rules the spec no longer has are dropped, new ones start fresh."""
        rules = {k: RuleResult.from_dict(v) for k, v in (raw.get("rules") or {}).items()}
        return cls(
            float(raw["started_at"]),
            {r.metric: rules.get(r.metric) or RuleResult(r.metric) for r in spec.rules},
            str(raw.get("phase", RUNNING)),
            raw.get("baseline_version"),
            raw.get("baseline_note"),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able mapping (NaN/inf values become None)."""
        out = asdict(self)
        for result in out["rules"].values():
            for m in result["measurements"]:
                for k in ("value", "baseline"):
                    if isinstance(m[k], float) and not math.isfinite(m[k]):
                        m[k] = None
        return out

    @property
    def completed(self) -> bool:
        """Whether the gate's outcome is decided."""
        return self.phase in COMPLETED

    def due(self, rule: Rule, now: float) -> bool:
        """Whether ``rule`` takes a measurement at ``now``."""
        when = self.next_time(rule)
        return when is not None and now >= when

    def next_time(self, rule: Rule) -> float | None:
        """When ``rule`` measures next (None: it is done, or the gate is)."""
        result = self.rules[rule.metric]
        if self.completed or result.phase in COMPLETED:
            return None
        if result.last_at is None:
            return self.started_at + (rule.initial_delay or 0.0)
        if not rule.has_analysis:
            # Thin evidence is waited for, as without analysis: measured again a little later until decided.
            return result.last_at + ERROR_RETRY_INTERVAL
        wanted = effective_count(rule)
        last = result.measurements[-1] if result.measurements else None
        if wanted is not None and result.count >= wanted:
            return None
        if rule.interval is not None:
            return result.last_at + rule.interval
        if last is not None and last.phase == ERROR:
            return result.last_at + ERROR_RETRY_INTERVAL
        return result.last_at

    def next_due(self, spec: GateSpec) -> float | None:
        """The earliest time a rule measures next (None when nothing will)."""
        times = [t for t in (self.next_time(r) for r in spec.rules) if t is not None]
        return min(times) if times else None

    def assess(self, spec: GateSpec) -> str:
        """Update every rule's phase and the gate's: the worst completed one once a rule failed, errored or
        was inconclusive (the others stop, as Argo terminates the run), successful when all succeeded."""
        if self.completed:
            return self.phase
        phases = []
        for rule in spec.rules:
            result = self.rules[rule.metric]
            result.phase = assess_rule(rule, result)
            phases.append(result.phase)
        bad = [p for p in phases if p in (FAILED, ERROR, INCONCLUSIVE)]
        if bad:
            self.phase = worst(bad)
        elif all(p == SUCCESSFUL for p in phases):
            self.phase = SUCCESSFUL
        else:
            self.phase = RUNNING
        return self.phase

    def table(self) -> str:
        """Every kept measurement, one line each: rule, time since start, phase, value, baseline, samples, why."""
        header = ("metric", "#", "at", "phase", "value", "baseline", "samples", "message")
        lines: list[tuple[str, ...]] = []
        for name, result in self.rules.items():
            first = result.count + result.error - len([m for m in result.measurements if m.phase != PENDING])
            n = first
            for m in result.measurements:
                if m.phase != PENDING:
                    n += 1
                lines.append(
                    (name, str(n) if m.phase != PENDING else "-", f"+{m.at - self.started_at:.0f}s", m.phase.upper(),
                     _fmt(m.value), _fmt(m.baseline), "-" if m.samples is None else str(m.samples), m.message)
                )  # fmt: skip
        widths = [max(len(h), *(len(x[i]) for x in lines)) if lines else len(h) for i, h in enumerate(header)]
        widths[-1] = len(header[-1])

        def line(cells: tuple[str, ...]) -> str:
            return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

        tallies = "; ".join(
            f"{name}: {r.phase} ({r.successful} ok, {r.failed} failed, {r.inconclusive} inconclusive, "
            f"{r.error} errors)"
            for name, r in self.rules.items()
        )
        title = f"Analysis -> {self.phase.upper()}: {tallies}"
        rule = "-" * min(120, max(len(title), sum(widths) + 2 * (len(widths) - 1)))
        return "\n".join([title, rule, line(header), rule, *(line(x) for x in lines), rule])


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return str(int(x)) if float(x).is_integer() and abs(x) >= 1 else f"{x:.4g}"
