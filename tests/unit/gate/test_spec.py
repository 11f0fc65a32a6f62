"""The gate spec: loading from YAML/JSON/dicts, defaults, and rejecting contradictory or unknown rules."""

from __future__ import annotations

import json
import math

import pytest

from airflow_mlops.core.errors import MlopsInputError
from airflow_mlops.core.gate.spec import GateSpec, Rule, load_spec

YAML = """
name: offline
baseline: champion
promote_alias: challenger
source: {kind: mlflow}
rules:
  - metric: f1
    min: 0.9
    min_change: -0.01
    max_change: 0.2
  - metric: rmse
    max: 5
"""


def test_yaml_file_json_text_and_dict_load_to_the_same_spec(tmp_path):
    path = tmp_path / "gate.yaml"
    path.write_text(YAML)
    from_file = load_spec(str(path))
    assert from_file.name == "offline"
    assert from_file.promote_alias == "challenger"
    assert from_file.rules[0] == Rule("f1", min=0.9, min_change=-0.01, max_change=0.2)
    json_path = tmp_path / "gate.json"
    json_path.write_text(json.dumps(from_file.to_dict()))
    assert load_spec(json_path) == from_file
    assert load_spec(from_file.to_dict()) == from_file
    assert load_spec(YAML) == from_file


def test_directions_default_from_the_metric_and_can_be_overridden():
    assert Rule("f1", min=0.5).better_is_greater
    for lower in ("rmse", "mae", "log_loss", "latency_p95"):
        assert not Rule(lower, max=1.0).better_is_greater
    assert Rule("rmse", max=1.0, greater_is_better=True).better_is_greater


def test_rules_as_a_mapping_are_accepted():
    spec = load_spec({"name": "g", "rules": {"f1": {"min": 0.8}, "rmse": {"max": 2}}})
    assert [r.metric for r in spec.rules] == ["f1", "rmse"]


@pytest.mark.parametrize(
    ("rule", "needle"),
    [
        ({"metric": "f1", "min": 0.9, "max": 0.8}, "min = 0.9 is above max = 0.8"),
        ({"metric": "f1", "min_change": 0.1, "max_change": 0.05}, "min_change = 0.1 is above max_change"),
        ({"metric": "f1", "min_relative_change": 0.2, "max_relative_change": 0.1}, "min_relative_change"),
        ({"metric": "f1", "min": 1.5}, "at most 1"),
        ({"metric": "f2", "min": 0.5}, "unknown metric 'f2'"),
        ({"metric": "f1"}, "checks nothing"),
        ({"metric": "f1", "min": float("nan")}, "not a finite number"),
        ({"metric": "f1", "min": "high"}, "not a number"),
        ({"metric": "f1", "min": True}, "not a number"),
        ({"metric": "f1", "min_samples": 0}, "positive whole number"),
        ({"metric": "f1", "minimum": 0.5}, "unknown keys ['minimum']"),
        ({"metric": "f1", "min_relative_change": -5}, "fractions"),
        ({"metric": "f1", "min": 0.5, "greater_is_better": "yes"}, "true or false"),
    ],
)
def test_bad_rules_are_rejected_with_the_fix(rule, needle):
    with pytest.raises(MlopsInputError) as e:
        load_spec({"name": "g", "rules": [rule]})
    assert needle in str(e.value)


def test_a_custom_metric_needs_a_direction():
    spec = load_spec({"name": "g", "rules": [{"metric": "auc_pr", "min": 0.5, "greater_is_better": True}]})
    assert spec.rules[0].better_is_greater


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"name": "g", "rules": []}, "no rules"),
        ({"name": "g h", "rules": [{"metric": "f1", "min": 0.5}]}, "Gate name"),
        ({"name": "g", "rules": [{"metric": "f1", "min": 0.5}, {"metric": "f1", "max": 1}]}, "two rules"),
        ({"name": "g", "rules": [{"metric": "f1", "min": 0.5}], "source": {"kind": "s3"}}, "kind 's3'"),
        (
            {"name": "g", "rules": [{"metric": "f1", "min": 0.5}], "source": {"kind": "holdout"}},
            "needs 'path'",
        ),
        ({"name": "g", "rules": [{"metric": "f1", "min": 0.5}], "source": "metrics_url"}, "needs 'url'"),
        (
            {"name": "g", "rules": [{"metric": "latency_p95", "max": 0.2}], "source": "prometheus"},
            "needs a PromQL 'query'",
        ),
        (
            {
                "name": "g",
                "rules": [{"metric": "latency_p95", "max": 0.2}],
                "source": {"kind": "holdout", "path": "x.csv", "target": "y"},
            },
            "cannot be computed on a holdout",
        ),
        ({"name": "g", "rules": [{"metric": "f1", "min": 0.5, "query": "up"}]}, "does not use queries"),
        (
            {"name": "g", "rules": [{"metric": "f1", "min": 0.5}], "promote_alias": "champion"},
            "baseline alias",
        ),
        ({"name": "g", "rules": [{"metric": "f1", "min": 0.5}], "thresholds": {}}, "unknown keys"),
    ],
)
def test_bad_specs_are_rejected(raw, needle):
    with pytest.raises(MlopsInputError) as e:
        load_spec(raw)
    assert needle in str(e.value)


def test_unreadable_files_and_syntax_errors_are_input_errors(tmp_path):
    with pytest.raises(MlopsInputError, match="does not exist"):
        load_spec(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: g\nrules: [\n")
    with pytest.raises(MlopsInputError, match="Cannot parse"):
        load_spec(bad)


def test_to_dict_round_trips_every_field():
    spec = GateSpec(
        name="online",
        rules=(
            Rule("f1", min=0.8, min_change=-0.02, max_relative_change=0.5, min_samples=100,
                 samples_query='sum(x{model="{model}"})'),
            Rule("latency_p95", max=0.25, query='histogram_quantile(0.95, y{version="{version}"})'),
        ),
        source=load_spec({"name": "x", "rules": {"f1": {"min": 0}}, "source": {"kind": "prometheus",
                          "url": "http://p:9090", "timeout": 3}}).source,
        promote_alias="challenger",
    )  # fmt: skip
    again = GateSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    assert not math.isnan(again.source.timeout)


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("binary.yaml", bytes(range(256)) * 4, "binary"),
        ("latin1.yaml", "name: g\nrules: {f1: {min: 0.5}}\n# caf\xe9\n".encode("latin-1"), "not UTF-8"),
        ("gate.txt", b"name: g\nrules: {f1: {min: 0.5}}\n", "does not end in .yaml"),
        ("gate", b"name: g\nrules: {f1: {min: 0.5}}\n", "does not end in .yaml"),
        ("empty.yaml", b"  \n", "is empty"),
        ("dup.yaml", b"name: g\nrules:\n  - metric: f1\n    min: 0.5\n    min: 0.9\n", "duplicate key 'min'"),
        ("dup.json", b'{"name": "g", "name": "h", "rules": {"f1": {"min": 0.5}}}', "duplicate key 'name'"),
        ("bad.json", b'{"name": "g", rules: []}', "Cannot parse"),
    ],
)
def test_spec_files_that_are_not_specs_are_refused_with_the_fix(tmp_path, name, content, needle):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(MlopsInputError, match=needle):
        load_spec(str(path))
    with pytest.raises(MlopsInputError, match=needle):
        load_spec(path)


def test_a_one_line_string_is_a_path_never_yaml_text(tmp_path):
    for missing in ("gates/offline.yml", "offline", str(tmp_path / "nope.txt")):
        with pytest.raises(MlopsInputError, match="not found"):
            load_spec(missing)
    with pytest.raises(MlopsInputError, match="not a file"):
        load_spec(str(tmp_path))
    # A one-line YAML flow mapping is text.
    assert load_spec("{name: g, rules: {f1: {min: 0.5}}}").rules[0].min == 0.5


def test_baseline_none_is_the_explicit_opt_out():
    for raw in ("none", "None", None):
        spec = load_spec({"name": "g", "rules": {"f1": {"min": 0.5}}, "baseline": raw})
        assert spec.baseline == "none" and not spec.has_baseline
        assert load_spec(spec.to_dict()) == spec
    assert load_spec({"name": "g", "rules": {"f1": {"min": 0.5}}}).has_baseline
    with pytest.raises(MlopsInputError, match="baseline: none, so the change rules of \\['f1'\\]"):
        load_spec({"name": "g", "rules": {"f1": {"min_change": 0}}, "baseline": "none"})
