"""Per-slice gates (TFMA-style slicing and thresholds): slice definitions, their safe parser, and the rows.

A slice is a column (one slice per value) or a condition on columns such as ``age >= 65`` or
``sex == 'F' and age < 30``. Conditions are parsed by a small grammar (a column, a comparison, a literal;
joined by ``and``) and applied as pandas masks: nothing is ever evaluated as code.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.errors import MlopsInputError

if TYPE_CHECKING:
    import pandas as pd

    from airflow_mlops.core.gate.evaluate import Row
    from airflow_mlops.core.gate.evidence import Evidence
    from airflow_mlops.core.gate.spec import Rule

# A column with more values than this is not a slice but an identifier: slice it by a condition instead.
MAX_GROUPS = 50
DEFAULT_MIN_SAMPLES = 30
_OPS = ("==", "!=", "<=", ">=", "<", ">")
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<col>`[^`]+`)
      | (?P<op>==|!=|<=|>=|<|>)
      | (?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
      | (?P<str>'[^']*'|"[^"]*")
      | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Condition:
    """``column op value``."""

    column: str
    op: str
    value: float | str | bool

    def mask(self, frame: pd.DataFrame) -> pd.Series:
        """The rows of ``frame`` where the condition holds."""
        col = frame[self.column]
        ops: dict[str, Callable[[Any, Any], Any]] = {
            "==": lambda a, b: a == b,
            "!=": lambda a, b: a != b,
            "<": lambda a, b: a < b,
            "<=": lambda a, b: a <= b,
            ">": lambda a, b: a > b,
            ">=": lambda a, b: a >= b,
        }
        try:
            out = ops[self.op](col, self.value)
        except TypeError:
            raise MlopsInputError(
                f"Slice condition {self.text()!r} compares column {self.column!r} ({col.dtype}) with "
                f"{self.value!r}: give a value of the column's type."
            ) from None
        return out.fillna(False).astype(bool)

    def text(self) -> str:
        """The condition as written canonically."""
        name = self.column if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", self.column) else f"`{self.column}`"
        value = repr(self.value) if isinstance(self.value, str) else _num(self.value)
        return f"{name} {self.op} {value}"


def _num(v: float | bool) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    return str(int(v)) if float(v).is_integer() else repr(float(v))


@dataclass(frozen=True)
class SliceDef:
    """One slice definition: a column to group by, or conditions that must all hold."""

    source: str
    column: str | None = None
    conditions: tuple[Condition, ...] = ()

    @property
    def columns(self) -> list[str]:
        """The columns the slice reads."""
        return [self.column] if self.column else [c.column for c in self.conditions]

    def slices(self, frame: pd.DataFrame) -> Iterator[tuple[str, pd.Series]]:
        """``(name, mask)`` of every slice this definition makes on ``frame``."""
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise MlopsInputError(
                f"Slice {self.source!r} names columns {missing} that the data lacks (it has "
                f"{[str(c) for c in frame.columns][:20]}): fix the slice."
            )
        if self.column is not None:
            values = frame[self.column].dropna().unique().tolist()
            if len(values) > MAX_GROUPS:
                raise MlopsInputError(
                    f"Slice column {self.column!r} has {len(values)} distinct values (more than {MAX_GROUPS}): "
                    f"slice it by conditions instead, e.g. '{self.column} >= 10'."
                )
            for value in sorted(values, key=lambda v: (str(type(v)), v)):
                yield Condition(self.column, "==", value).text(), frame[self.column] == value
            return
        mask = None
        for cond in self.conditions:
            m = cond.mask(frame)
            mask = m if mask is None else (mask & m)
        assert mask is not None
        yield " and ".join(c.text() for c in self.conditions), mask


def parse_slice(text: str) -> SliceDef:
    """Parse a slice: a column name, or ``column op literal`` conditions joined by ``and``.

    Columns with spaces go in backquotes (`` `mean radius` > 15 ``); strings in quotes; numbers, true and
    false as literals.

    :param text: the slice as written in the spec.
    :raises MlopsInputError: anything else (no expression is ever run as code).
    """
    if not isinstance(text, str) or not text.strip():
        raise MlopsInputError(f"Slice {text!r} must be a non-empty string: a column, or e.g. 'age >= 65'.")
    tokens = _tokens(text)
    if len(tokens) == 1 and tokens[0][0] in ("col", "word"):
        return SliceDef(text, column=_column(tokens[0]))
    conditions: list[Condition] = []
    i = 0
    while True:
        part = tokens[i : i + 3]
        if (
            len(part) < 3
            or part[0][0] not in ("col", "word")
            or part[1][0] != "op"
            or part[2][0] not in ("num", "str", "word")
        ):
            raise MlopsInputError(
                f"Slice {text!r} is not understood: write a column name, or conditions 'column op value' "
                f"({', '.join(_OPS)}) joined by 'and', e.g. \"age >= 65 and sex == 'F'\"."
            )
        conditions.append(Condition(_column(part[0]), part[1][1], _literal(part[2], text)))
        i += 3
        if i == len(tokens):
            return SliceDef(text, conditions=tuple(conditions))
        if tokens[i] != ("word", "and"):
            raise MlopsInputError(f"Slice {text!r}: conditions are joined by 'and' (got {tokens[i][1]!r}).")
        i += 1


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    stripped = text.rstrip()
    while pos < len(stripped):
        m = _TOKEN.match(stripped, pos)
        if m is None or m.end() == pos:
            raise MlopsInputError(
                f"Slice {text!r} has an unexpected character at {pos}: {stripped[pos : pos + 10]!r}. Write a "
                "column, or conditions such as 'age >= 65'."
            )
        kind = m.lastgroup
        assert kind is not None
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def _column(token: tuple[str, str]) -> str:
    kind, value = token
    return value[1:-1] if kind == "col" else value


def _literal(token: tuple[str, str], text: str) -> float | str | bool:
    kind, value = token
    if kind == "num":
        return float(value)
    if kind == "str":
        return value[1:-1]
    if value in ("true", "True"):
        return True
    if value in ("false", "False"):
        return False
    raise MlopsInputError(
        f"Slice {text!r}: {value!r} is neither a number, a quoted string, true nor false: quote strings "
        f"('{value}')."
    )


@dataclass(frozen=True)
class SliceSpec:
    """Per-slice checks of one rule.

    :param by: slice definitions (columns or conditions, see :func:`parse_slice`).
    :param min_samples: slices with fewer rows are shown but not judged.
    :param min: every judged slice's value must be at least this.
    :param max: every judged slice's value must be at most this.
    :param min_change: every judged slice must improve on the baseline's same slice by at least this
        (negative: a tolerated regression).
    :param max_gap: the worst judged slice may trail the overall value by at most this (in the
        metric's better direction).
    """

    by: tuple[str, ...]
    min_samples: int = DEFAULT_MIN_SAMPLES
    min: float | None = None
    max: float | None = None
    min_change: float | None = None
    max_gap: float | None = None

    @property
    def defs(self) -> list[SliceDef]:
        """The parsed definitions."""
        return [parse_slice(s) for s in self.by]

    @classmethod
    def from_raw(cls, raw: Any, where: str) -> SliceSpec:
        """Accept a list of slices, one slice string, or a mapping ``{by: [...], min_samples, min, ...}``."""
        from airflow_mlops.core.gate.spec import _number

        if isinstance(raw, str):
            raw = {"by": [raw]}
        elif isinstance(raw, list):
            raw = {"by": raw}
        if not isinstance(raw, dict):
            raise MlopsInputError(
                f"{where}: slices = {raw!r} must be a list of slices or a mapping {{by: [...], min: ...}}."
            )
        known = {"by", "min_samples", "min", "max", "min_change", "max_gap"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise MlopsInputError(f"{where}: slices has unknown keys {unknown}: use only {sorted(known)}.")
        by = raw.get("by")
        if isinstance(by, str):
            by = [by]
        if not isinstance(by, list) or not by or not all(isinstance(b, str) for b in by):
            raise MlopsInputError(f"{where}: slices needs 'by', a list such as [sex, 'age >= 65'].")
        for b in by:
            parse_slice(b)  # refuse a bad slice now, not at the first evaluation
        if len(set(by)) != len(by):
            raise MlopsInputError(f"{where}: slices lists the same slice twice: {by}.")
        n = raw.get("min_samples", DEFAULT_MIN_SAMPLES)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise MlopsInputError(f"{where}: slices min_samples = {n!r} must be a positive whole number.")
        nums = {
            k: _number(f"{where}: slices {k}", raw.get(k)) for k in ("min", "max", "min_change", "max_gap")
        }
        spec = cls(by=tuple(by), min_samples=n, **nums)
        if spec.min is not None and spec.max is not None and spec.min > spec.max:
            raise MlopsInputError(f"{where}: slices min = {spec.min} is above max = {spec.max}.")
        if spec.max_gap is not None and spec.max_gap < 0:
            raise MlopsInputError(f"{where}: slices max_gap = {spec.max_gap} must be >= 0.")
        return spec

    def to_dict(self) -> dict[str, Any]:
        """The slice spec as a mapping without unset keys."""
        out: dict[str, Any] = {"by": list(self.by), "min_samples": self.min_samples}
        for k in ("min", "max", "min_change", "max_gap"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        return out


# Per slice name: (value or None when undefined, rows).
SliceValues = dict[str, tuple[float | None, int]]


def slice_values(
    spec: SliceSpec, frame: pd.DataFrame, metric: str, score: Callable[[pd.DataFrame], dict[str, float]]
) -> SliceValues:
    """The metric on every slice of ``frame``: ``score`` computes the metrics of a subset."""
    out: SliceValues = {}
    for definition in spec.defs:
        for name, mask in definition.slices(frame):
            part = frame[mask.to_numpy()]
            n = len(part)
            value = None
            if n:
                got = score(part).get(metric)
                value = None if got is None or math.isnan(got) else float(got)
            out[name] = (value, n)
    return out


def slice_rows(rule: Rule, candidate: Evidence, baseline: Evidence | None, baseline_label: str) -> list[Row]:
    """One or more rows per slice (every slice is shown), and the worst-slice row.

    A slice with fewer than ``min_samples`` rows, or where the metric is undefined (one class only), is
    shown and skipped. The worst slice is the judged slice with the worst value in the metric's direction.
    """
    from airflow_mlops.core.gate.evaluate import _EPS, FAILED, PASSED, SKIPPED, Row, _fmt, improvement

    spec = rule.slices
    assert spec is not None
    m, gib = rule.metric, rule.better_is_greater
    mine = candidate.slices.get(m, {})
    theirs = baseline.slices.get(m) if baseline is not None else None
    rows: list[Row] = []
    judged: dict[str, float] = {}

    def status(ok: bool) -> str:
        return PASSED if ok else FAILED

    for name, (value, n) in mine.items():
        if n < spec.min_samples:
            rows.append(Row(m, "slice", value, None, float(n), spec.min_samples, SKIPPED,
                            f"{n} rows, fewer than {spec.min_samples}: shown, not judged", name))  # fmt: skip
            continue
        if value is None:
            rows.append(Row(m, "slice", None, None, float(n), None, SKIPPED,
                            f"{m} is undefined on this slice ({n} rows; one class only?)", name))  # fmt: skip
            continue
        judged[name] = value
        checked = False
        if spec.min is not None:
            ok = value >= spec.min
            rows.append(Row(m, "slice_min", value, None, value, spec.min, status(ok),
                            f"{_fmt(value)} {'>=' if ok else '<'} {_fmt(spec.min)} ({n} rows)", name))  # fmt: skip
            checked = True
        if spec.max is not None:
            ok = value <= spec.max
            rows.append(Row(m, "slice_max", value, None, value, spec.max, status(ok),
                            f"{_fmt(value)} {'<=' if ok else '>'} {_fmt(spec.max)} ({n} rows)", name))  # fmt: skip
            checked = True
        if spec.min_change is not None:
            checked = True
            base = theirs.get(name) if theirs is not None else None
            if theirs is None:
                rows.append(Row(m, "slice_min_change", value, None, None, spec.min_change, SKIPPED,
                                f"no baseline ({baseline_label}): slice change skipped", name))  # fmt: skip
            elif base is None or base[0] is None or base[1] < spec.min_samples:
                rows.append(Row(m, "slice_min_change", value, None, None, spec.min_change, SKIPPED,
                                f"{baseline_label} has too few rows on this slice to compare", name))  # fmt: skip
            else:
                delta, _rel = improvement(rule, value, base[0])
                ok = delta >= spec.min_change - _EPS
                word = "gain" if delta >= 0 else "regression"
                rows.append(Row(m, "slice_min_change", value, base[0], delta, spec.min_change, status(ok),
                                f"{word} of {_fmt(abs(delta))} vs {baseline_label} ({_fmt(base[0])})", name))  # fmt: skip
        if not checked:
            rows.append(Row(m, "slice", value, None, value, None, PASSED, f"{n} rows (shown)", name))
    if spec.max_gap is not None:
        overall = candidate.values.get(m)
        if not judged or overall is None:
            rows.append(Row(m, "worst_slice_gap", None, None, None, spec.max_gap, SKIPPED,
                            f"no slice has {spec.min_samples} rows or more: nothing to compare"))  # fmt: skip
        else:
            name = min(judged, key=judged.__getitem__) if gib else max(judged, key=judged.__getitem__)
            gap = overall - judged[name] if gib else judged[name] - overall
            ok = gap <= spec.max_gap + _EPS
            rows.append(Row(m, "worst_slice_gap", judged[name], None, gap, spec.max_gap, status(ok),
                            f"the worst slice trails all the data ({_fmt(overall)}) by {_fmt(gap)}"
                            + ("" if ok else f", more than {_fmt(spec.max_gap)}"), name))  # fmt: skip
    return rows
