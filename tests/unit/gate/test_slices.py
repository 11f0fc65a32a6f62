"""Per-slice gates: the safe slice parser, metrics per slice of a real scikit-learn model (holdout) and of
logged live traffic written by the gateway's own log writers, min_samples, per-slice and worst-slice
bounds, and the table that shows every slice."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from airflow_mlops.core.errors import MlopsInputError
from airflow_mlops.core.gate import FAILED, PASSED, SKIPPED, evaluate, load_spec
from airflow_mlops.core.gate.evidence import Evidence, PredictionLogSource, VersionRef
from airflow_mlops.core.gate.slices import parse_slice, slice_values


@functools.cache
def data():
    """Breast-cancer features with a 'big' band column, a fitted LogisticRegression, and a holdout."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    frame = load_breast_cancer(as_frame=True).frame
    frame["band"] = np.where(frame["mean radius"] >= 15, "big", "small")
    train, holdout = train_test_split(frame, test_size=0.4, random_state=3, stratify=frame["target"])
    features = [c for c in frame.columns if c not in ("target", "band")]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(
        train[features], train["target"]
    )
    return model, features, holdout.reset_index(drop=True)


def f1_of(model, features, part) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(part["target"], model.predict(part[features]), pos_label=1, zero_division=0))


@pytest.mark.parametrize(
    ("text", "columns", "names"),
    [
        ("band", ["band"], None),
        ("`mean radius` >= 15", ["mean radius"], ["`mean radius` >= 15"]),
        ("band == 'big' and `mean texture` < 20.5", ["band", "mean texture"], None),
        ("flag == true", ["flag"], None),
        ("age>=65", ["age"], ["age >= 65"]),
    ],
)
def test_parser_accepts_columns_and_conditions(text, columns, names):
    definition = parse_slice(text)
    assert definition.columns == columns
    if names and definition.conditions:
        assert " and ".join(c.text() for c in definition.conditions) == names[0]


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('true')",
        "age >= 65 or sex == 1",
        "age >= (65)",
        "age >= 65 and",
        "age => 65",
        "sex == female",
        "len(age) > 1",
        "age >= 65; import os",
        "",
    ],
)
def test_parser_refuses_anything_else_without_running_it(text):
    with pytest.raises(MlopsInputError, match="Slice"):
        parse_slice(text)


def test_slice_values_match_sklearn_on_each_slice():
    from airflow_mlops.core.metrics import score_model

    model, features, holdout = data()
    spec = load_spec({"name": "s", "source": {"kind": "holdout", "path": "x.csv", "target": "target"},
                      "rules": [{"metric": "f1", "slices": {"by": ["band", "`mean radius` >= 15"]}}]}).rules[0].slices  # fmt: skip
    values = slice_values(
        spec, holdout, "f1", lambda p: score_model(model, "classification", p[features], p["target"])
    )
    assert set(values) == {"band == 'big'", "band == 'small'", "`mean radius` >= 15"}
    big = holdout[holdout["band"] == "big"]
    assert values["band == 'big'"] == (pytest.approx(f1_of(model, features, big)), len(big))
    assert values["`mean radius` >= 15"][1] == len(big)
    # A column slice of a numeric column with many values is refused (an identifier, not a slice).
    with pytest.raises(MlopsInputError, match="distinct values"):
        slice_values(load_spec({"name": "s", "source": {"kind": "holdout", "path": "x", "target": "target"},
                                "rules": [{"metric": "f1", "slices": ["`mean radius`"]}]}).rules[0].slices,
                     holdout, "f1", lambda p: {})  # fmt: skip


def _evidence(slices: dict, overall: float = 0.9, n: int = 200) -> Evidence:
    return Evidence(values={"f1": overall}, samples={"f1": n}, slices={"f1": slices})


HOLDOUT = {"kind": "holdout", "path": "h.csv", "target": "target"}


def test_every_slice_is_shown_small_ones_not_judged_and_the_worst_slice_bounded():
    spec = load_spec({"name": "s", "source": HOLDOUT, "baseline": "none", "rules": [
        {"metric": "f1", "min": 0.85, "slices": {"by": ["band"], "min_samples": 30, "min": 0.8, "max_gap": 0.05}}]})  # fmt: skip
    verdict = evaluate(spec, "m", "2", _evidence({"band == 'big'": (0.83, 60), "band == 'small'": (0.95, 140),
                                                   "band == 'odd'": (0.1, 5)}), None, None)  # fmt: skip
    rows = {(r.check, r.slice): r for r in verdict.rows}
    assert rows[("slice_min", "band == 'big'")].status == PASSED
    assert (
        rows[("slice", "band == 'odd'")].status == SKIPPED
        and "fewer than 30" in rows[("slice", "band == 'odd'")].reason
    )
    gap = rows[("worst_slice_gap", "band == 'big'")]
    assert gap.status == FAILED and gap.observed == pytest.approx(0.07)
    assert verdict.status == FAILED
    table = verdict.table()
    assert "slice" in table.splitlines()[2] and "band == 'odd'" in table and "(all)" in table
    # A regression on a slice vs the baseline's same slice fails; an undefined slice is shown, skipped.
    spec = load_spec({"name": "s", "source": HOLDOUT, "rules": [
        {"metric": "f1", "slices": {"by": ["band"], "min_samples": 30, "min_change": -0.02}}]})  # fmt: skip
    cand = _evidence({"band == 'big'": (0.80, 60), "band == 'small'": (None, 140)})
    base = _evidence({"band == 'big'": (0.86, 60), "band == 'small'": (0.9, 140)})
    verdict = evaluate(spec, "m", "2", cand, base, "1")
    change = next(r for r in verdict.rows if r.check == "slice_min_change")
    assert change.status == FAILED and change.baseline == 0.86 and verdict.status == FAILED
    assert next(r for r in verdict.rows if r.slice == "band == 'small'").status == SKIPPED


def test_slices_need_a_row_source_and_valid_keys():
    with pytest.raises(MlopsInputError, match="holdout or prediction_log"):
        load_spec({"name": "s", "rules": [{"metric": "f1", "slices": ["band"]}]})
    with pytest.raises(MlopsInputError, match="unknown keys"):
        load_spec(
            {"name": "s", "source": HOLDOUT, "rules": [{"metric": "f1", "slices": {"by": ["a"], "mn": 1}}]}
        )
    with pytest.raises(MlopsInputError, match="joined by 'and'"):
        load_spec({"name": "s", "source": HOLDOUT, "rules": [{"metric": "f1", "slices": ["a > 1 > 2"]}]})
    spec = load_spec(
        {"name": "s", "source": HOLDOUT, "rules": [{"metric": "f1", "slices": ["band", "x >= 1"]}]}
    )
    assert load_spec(spec.to_dict()) == spec


def test_prediction_log_source_scores_live_labelled_traffic_per_version_and_slice(tmp_path):
    """Logs written by the gateway's own writers (PredictionLogWriter, FeedbackLogWriter)."""
    from airflow_mlops.serving.feedback_log import FeedbackLogWriter
    from airflow_mlops.serving.models import Batch
    from airflow_mlops.serving.prediction_writer import PredictionLogWriter

    model, features, holdout = data()
    names = [*features, "band"]
    predictions = model.predict(holdout[features])
    wrong = 1 - predictions  # version 1 answers the opposite: its live F1 is poor
    writer, feedback = (
        PredictionLogWriter(tmp_path, flush_seconds=3600),
        FeedbackLogWriter(tmp_path, flush_seconds=3600),
    )
    try:
        for i, row in holdout.iterrows():
            version, pred = ("2", predictions[i]) if i % 2 == 0 else ("1", wrong[i])
            cols = {c: np.array([row[c]], dtype=object if c == "band" else float) for c in names}
            writer.add("bc", version, f"r{i}", Batch(names, 1, columns=cols), np.array([pred]))
            feedback.add("bc", f"r{i}", [int(row["target"])])
        writer.flush()
        feedback.flush()
    finally:
        writer.close()
        feedback.close()
    spec = load_spec({"name": "live", "source": {"kind": "prediction_log", "path": str(tmp_path)}, "rules": [
        {"metric": "f1", "min": 0.9, "slices": {"by": ["band"], "min_samples": 20, "min": 0.8}}]})  # fmt: skip
    source = PredictionLogSource(str(tmp_path))
    mine = source.collect(VersionRef("bc", "2", None), spec.rules)
    served = holdout[holdout.index % 2 == 0]
    assert mine.samples["f1"] == len(served)
    assert mine.values["f1"] == pytest.approx(f1_of(model, features, served))
    big = served[served["band"] == "big"]
    assert mine.slices["f1"]["band == 'big'"] == (pytest.approx(f1_of(model, features, big)), len(big))
    assert evaluate(spec, "bc", "2", mine, None, None).status == PASSED
    theirs = source.collect(VersionRef("bc", "1", None), spec.rules)
    assert theirs.values["f1"] < 0.2 and evaluate(spec, "bc", "1", theirs, None, None).status == FAILED
    nothing = source.collect(VersionRef("bc", "9", None), spec.rules)
    assert nothing.values["f1"] is None and evaluate(spec, "bc", "9", nothing, None, None).status == "pending"
