"""The gate on a real MLflow server: the mlflow evidence source, verdict tags and aliases, bad input,
and the ``airflow-mlops gate`` command."""

from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from airflow_mlops.core.errors import MlopsInputError
from airflow_mlops.core.gate import FAILED, PASSED, SKIPPED, record_verdict, run_gate
from airflow_mlops.core.tracking import MlflowTarget
from tests.integration.gate.conftest import gate_tags, make_version

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def bc(mlflow_server):
    """A classifier with three versions: 1 logistic regression, 2 a majority-class dummy, 3 a weaker LR."""
    name = f"gate-bc-{uuid.uuid4().hex[:6]}"
    v1 = make_version(mlflow_server, name, "sklearn.linear_model.LogisticRegression", {"max_iter": 500})
    v2 = make_version(mlflow_server, name, "sklearn.dummy.DummyClassifier", {"strategy": "prior"})
    v3 = make_version(mlflow_server, name, "sklearn.linear_model.LogisticRegression", {"C": 0.002})
    return {"name": name, "v": {"1": v1, "2": v2, "3": v3}}


@pytest.fixture(scope="module")
def reg(mlflow_server):
    """A regressor (lower-is-better metrics): 1 ridge, 2 a mean-predicting dummy."""
    name = f"gate-reg-{uuid.uuid4().hex[:6]}"
    v1 = make_version(mlflow_server, name, "sklearn.linear_model.Ridge", dataset="diabetes")
    v2 = make_version(mlflow_server, name, "sklearn.dummy.DummyRegressor", dataset="diabetes")
    return {"name": name, "v": {"1": v1, "2": v2}}


def set_champion(client, name: str, version: str | None) -> None:
    if version is None:
        try:
            client.delete_registered_model_alias(name, "champion")
        except Exception:  # noqa: BLE001 - not set
            pass
    else:
        client.set_registered_model_alias(name, "champion", version)


def aliases(client, name: str) -> dict[str, str]:
    return dict(client.get_registered_model(name).aliases)


@pytest.fixture(scope="module")
def single(mlflow_server):
    """A model that has only ever had one version: a real first model."""
    name = f"gate-first-{uuid.uuid4().hex[:6]}"
    v1 = make_version(mlflow_server, name, "sklearn.linear_model.LogisticRegression", {"max_iter": 500})
    return {"name": name, "v": {"1": v1}}


def test_first_model_passes_on_bounds_and_records_tag_and_alias(single, mlflow_server, mlflow_client):
    name, bc = single["name"], single
    spec = {
        "name": "first",
        "rules": [{"metric": "f1", "min": 0.9, "min_change": 0.0}],
        "promote_alias": "challenger",
    }
    target = MlflowTarget(mlflow_server)
    verdict = run_gate(spec, name, "1", target)
    assert verdict.status == PASSED, verdict.table()
    assert verdict.baseline_version is None
    change = next(r for r in verdict.rows if r.check == "change")
    assert change.status == SKIPPED and "no baseline" in change.reason
    assert gate_tags(mlflow_client, name, "1") == {}  # evaluating changes nothing
    record_verdict(target, verdict, "challenger")
    tags = gate_tags(mlflow_client, name, "1")
    assert tags["mlops.gate.first"] == "passed"
    details = json.loads(tags["mlops.gate.first.details"])
    assert details["rows"][0]["candidate"] == pytest.approx(bc["v"]["1"]["metrics"]["f1"])
    assert aliases(mlflow_client, name)["challenger"] == "1"


def test_regression_beyond_tolerance_fails_and_moves_no_alias(bc, mlflow_server, mlflow_client):
    name = bc["name"]
    set_champion(mlflow_client, name, "1")
    before = aliases(mlflow_client, name)
    spec = {"name": "tolerance", "rules": [{"metric": "f1", "min_change": -0.01}]}
    target = MlflowTarget(mlflow_server)
    verdict = run_gate(spec, name, "2", target)
    assert verdict.status == FAILED
    row = verdict.failures()[0]
    assert row.baseline == pytest.approx(bc["v"]["1"]["metrics"]["f1"])
    assert row.candidate == pytest.approx(bc["v"]["2"]["metrics"]["f1"])
    assert "regression allowed" in row.reason
    record_verdict(target, verdict, "challenger")
    assert gate_tags(mlflow_client, name, "2")["mlops.gate.tolerance"] == "failed"
    assert aliases(mlflow_client, name) == before


def test_tolerated_regression_passes(bc, mlflow_server, mlflow_client):
    name = bc["name"]
    f1 = {v: bc["v"][v]["metrics"]["f1"] for v in ("1", "3")}
    champion, candidate = sorted(f1, key=f1.get, reverse=True)
    drop = f1[champion] - f1[candidate]
    assert 0 < drop < 0.05, f1  # the weaker LR is a little worse
    set_champion(mlflow_client, name, champion)
    ok = run_gate({"name": "tol", "rules": [{"metric": "f1", "min_change": -0.05}]}, name, candidate,
                  MlflowTarget(mlflow_server))  # fmt: skip
    assert ok.status == PASSED, ok.table()
    assert ok.rows[0].observed == pytest.approx(-drop)
    strict = run_gate({"name": "tol", "rules": [{"metric": "f1", "min_change": 0.0}]}, name, candidate,
                      MlflowTarget(mlflow_server))  # fmt: skip
    assert strict.status == FAILED


def test_suspicious_gain_is_capped(bc, mlflow_server, mlflow_client):
    name = bc["name"]
    set_champion(mlflow_client, name, "2")
    spec = {"name": "cap", "rules": [{"metric": "accuracy", "min_change": 0, "max_change": 0.1}]}
    verdict = run_gate(spec, name, "1", MlflowTarget(mlflow_server))
    assert verdict.status == FAILED
    assert [r.check for r in verdict.failures()] == ["max_change"]
    assert "suspiciously large" in verdict.failures()[0].reason


def test_lower_is_better_metric(reg, mlflow_server, mlflow_client):
    name = reg["name"]
    spec = {
        "name": "rmse",
        "rules": [{"metric": "rmse", "max": 100, "min_change": 1.0}, {"metric": "mae", "min_change": 0}],
    }
    set_champion(mlflow_client, name, "2")
    better = run_gate(spec, name, "1", MlflowTarget(mlflow_server))
    assert better.status == PASSED, better.table()
    gain = next(r for r in better.rows if r.check == "min_change" and r.metric == "rmse")
    assert gain.observed == pytest.approx(reg["v"]["2"]["metrics"]["rmse"] - reg["v"]["1"]["metrics"]["rmse"])
    assert gain.observed > 1.0
    set_champion(mlflow_client, name, "1")
    worse = run_gate(spec, name, "2", MlflowTarget(mlflow_server))
    assert worse.status == FAILED


def test_candidate_that_is_the_champion_skips_change_rules(bc, mlflow_server, mlflow_client):
    set_champion(mlflow_client, bc["name"], "1")
    verdict = run_gate({"name": "self", "rules": [{"metric": "f1", "min_change": 0.01}]}, bc["name"], "1",
                       MlflowTarget(mlflow_server))  # fmt: skip
    assert verdict.status == PASSED and "itself" in verdict.rows[0].reason


def _nan_version(client, name: str, source_version: dict) -> str:
    """A version registered without a LoggedModel (so its run's metrics are read) whose run logged f1 = NaN."""
    exp = client.get_run(source_version["run_id"]).info.experiment_id
    run = client.create_run(exp)
    client.log_metric(run.info.run_id, "f1", math.nan)
    client.log_metric(run.info.run_id, "accuracy", 0.9)
    client.set_terminated(run.info.run_id)
    mv = client.create_model_version(name, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    return str(mv.version)


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("unknown_metric", "unknown metric 'f2'"),
        ("missing_metric", "has no metric ['pr_auc']"),
        ("contradictory", "is above max"),
        ("unknown_version", "does not exist"),
        ("nan", "is NaN"),
    ],
)
def test_bad_input_is_a_clear_error_and_changes_nothing(case, needle, bc, mlflow_server, mlflow_client):
    name = bc["name"]
    set_champion(mlflow_client, name, "1")
    version = "3"
    rules = {
        "unknown_metric": [{"metric": "f2", "min": 0.5}],
        "missing_metric": [{"metric": "pr_auc", "min": 0.5, "greater_is_better": True}],
        "contradictory": [{"metric": "f1", "min": 0.9, "max": 0.8}],
        "unknown_version": [{"metric": "f1", "min": 0.5}],
        "nan": [{"metric": "accuracy", "min": 0.5}, {"metric": "f1", "min": 0.5}],
    }[case]
    if case == "unknown_version":
        version = "999"
    if case == "nan":
        version = _nan_version(mlflow_client, name, bc["v"]["1"])
    before = aliases(mlflow_client, name)
    spec = {"name": f"bad-{case}", "rules": rules, "promote_alias": "challenger"}
    with pytest.raises(MlopsInputError) as e:
        run_gate(spec, name, version, MlflowTarget(mlflow_server))
    assert needle in str(e.value)
    if version != "999":
        assert not any(f"bad-{case}" in k for k in gate_tags(mlflow_client, name, version))
    assert aliases(mlflow_client, name) == before


def test_alias_on_a_deleted_version_is_a_clear_error(tmp_path, bc, mlflow_server):
    """A real local MLflow store; the server cleans aliases of deleted versions, so the dangling alias is
    written into its SQLite database directly, as an old or hand-edited store may hold it."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    name = "dangling"
    target = MlflowTarget(uri, artifact_location=str(tmp_path / "artifacts"))
    with target.activate():
        client = MlflowClient(uri, uri)
        client.create_registered_model(name)
        exp = client.create_experiment("x", artifact_location=(tmp_path / "artifacts").as_uri())
        for _ in range(2):
            run = client.create_run(exp)
            client.log_metric(run.info.run_id, "f1", 0.9)
            client.create_model_version(name, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
        client.delete_model_version(name, "1")
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        db.execute(
            "INSERT INTO registered_model_aliases (alias, version, name) VALUES ('champion', 1, ?)", (name,)
        )
    with pytest.raises(MlopsInputError, match="no longer exists"):
        run_gate({"name": "g", "rules": [{"metric": "f1", "min_change": 0}]}, name, "2", target)
    assert not any(
        k.startswith("mlops.gate") for k in MlflowClient(uri, uri).get_model_version(name, "2").tags
    )


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    exe = shutil.which("airflow-mlops", path=str(Path(sys.executable).parent)) or "airflow-mlops"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})  # fmt: skip


def test_cli_exit_codes_table_and_tags(bc, mlflow_server, mlflow_client, tmp_path):
    name = bc["name"]
    set_champion(mlflow_client, name, "1")
    spec = tmp_path / "gate.yaml"
    spec.write_text("name: ci\nrules:\n  - metric: f1\n    min: 0.8\n    min_change: -0.05\n")
    passed = _cli("gate", "--spec", str(spec), "--model", name, "--version", "3", "--tracking-uri", mlflow_server,
                  "--json", str(tmp_path / "v.json"))  # fmt: skip
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "Gate 'ci'" in passed.stdout and "min_change" in passed.stdout and "PASSED" in passed.stdout
    assert gate_tags(mlflow_client, name, "3")["mlops.gate.ci"] == "passed"
    assert json.loads((tmp_path / "v.json").read_text())["status"] == "passed"
    # The URI from the environment, as a CI job sets it.
    failed = _cli("gate", "--spec", str(spec), "--model", name, "--version", "2",
                  env={"MLFLOW_TRACKING_URI": mlflow_server})  # fmt: skip
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "FAILED" in failed.stdout
    assert gate_tags(mlflow_client, name, "2")["mlops.gate.ci"] == "failed"
    dry = _cli("gate", "--spec", str(spec), "--model", name, "--version", "1", "--tracking-uri", mlflow_server,
               "--dry-run")  # fmt: skip
    assert dry.returncode == 0 and "mlops.gate.ci" not in gate_tags(mlflow_client, name, "1")


def test_cli_bad_input_exits_2_and_tags_nothing(bc, mlflow_server, mlflow_client, tmp_path):
    name = bc["name"]
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: cibad\nrules:\n  - metric: f1\n    min: 0.9\n    max: 0.5\n")
    bad = _cli(
        "gate", "--spec", str(spec), "--model", name, "--version", "1", "--tracking-uri", mlflow_server
    )
    assert bad.returncode == 2
    assert "error: rule 'f1': min = 0.9 is above max = 0.5" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert "mlops.gate.cibad" not in gate_tags(mlflow_client, name, "1")
    no_uri = _cli(
        "gate", "--spec", str(spec), "--model", name, "--version", "1", env={"MLFLOW_TRACKING_URI": ""}
    )
    assert no_uri.returncode == 2 and "MLFLOW_TRACKING_URI" in no_uri.stderr


def test_a_deleted_champion_is_not_a_first_model(mlflow_server, mlflow_client):
    """MLflow drops an alias with its version; the gate then must not call the candidate a first model
    and skip every change rule."""
    from tests.models import register_versions

    name = f"gate-deleted-{uuid.uuid4().hex[:6]}"
    register_versions(mlflow_server, name, [{}, {"C": 0.002}])
    mlflow_client.set_registered_model_alias(name, "champion", "1")
    mlflow_client.delete_model_version(name, "1")
    assert "champion" not in aliases(mlflow_client, name)
    target = MlflowTarget(mlflow_server)
    with pytest.raises(MlopsInputError) as e:
        run_gate(
            {"name": "del", "rules": [{"metric": "f1", "min": 0.5, "min_change": 0.0}]}, name, "2", target
        )
    message = str(e.value)
    assert "@champion is not set" in message and "version 1 existed before v2" in message
    assert "set_registered_model_alias" in message and "baseline: none" in message
    assert gate_tags(mlflow_client, name, "2") == {} and aliases(mlflow_client, name) == {}
    # Bounds alone need no baseline, and the title does not claim a first model.
    bounds = run_gate({"name": "b", "rules": [{"metric": "f1", "min": 0.5}]}, name, "2", target)
    assert bounds.status == PASSED and "first model" not in bounds.table()
    assert "champion unset" in bounds.table()
    # The explicit opt-out.
    none = run_gate(
        {"name": "n", "baseline": "none", "rules": [{"metric": "f1", "min": 0.5}]}, name, "2", target
    )
    assert none.status == PASSED and "baseline: none" in none.table()


def test_a_promotion_history_alone_means_not_a_first_model(mlflow_server, mlflow_client):
    """A model whose only version is v1 but whose ledger shows promotions (e.g. a champion on a later
    version that was deleted and whose number was never reused)."""
    name = f"gate-history-{uuid.uuid4().hex[:6]}"
    mlflow_client.create_registered_model(name)
    run = mlflow_client.create_run(mlflow_client.create_experiment(f"exp-{name}"))
    mlflow_client.log_metric(run.info.run_id, "f1", 0.95)
    mlflow_client.create_model_version(name, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    spec = {"name": "h", "rules": [{"metric": "f1", "min": 0.5, "min_change": 0.0}]}
    target = MlflowTarget(mlflow_server)
    assert run_gate(spec, name, "1", target).status == PASSED  # a real first model
    mlflow_client.set_registered_model_tag(name, "mlops.promotion_history", '[{"action": "promote"}]')
    with pytest.raises(MlopsInputError, match="promotion history"):
        run_gate(spec, name, "1", target)


def test_gate_compares_the_logged_models_and_falls_back_to_runs(mlflow_server, mlflow_client):
    """Training records the MLflow 3 LoggedModel with its metrics linked to the model and the dataset; the
    gate reads them there (a later run metric does not change the model's), and reads run metrics for a
    version registered without a LoggedModel."""
    name = f"gate-lm-{uuid.uuid4().hex[:6]}"
    v1 = make_version(mlflow_server, name, "sklearn.linear_model.LogisticRegression", {"max_iter": 500})
    # MLflow's SQL registry keeps the LoggedModel as the version's source (models:/m-...), not its model_id.
    assert v1["model_id"] and mlflow_client.get_model_version(name, "1").source == f"models:/{v1['model_id']}"
    model = mlflow_client.get_logged_model(v1["model_id"])
    f1 = next(m for m in model.metrics if m.key == "f1")
    assert f1.value == pytest.approx(v1["metrics"]["f1"]) and f1.model_id == v1["model_id"]
    digest = mlflow_client.get_run(v1["run_id"]).inputs.dataset_inputs[0].dataset.digest
    assert f1.dataset_digest == digest and f1.dataset_name
    # The run's f1 is overwritten later; the model's own stays, and the gate reads the model's.
    mlflow_client.log_metric(v1["run_id"], "f1", 0.0)
    spec = {"name": "lm", "baseline": "none", "rules": [{"metric": "f1", "min": 0.9}]}
    verdict = run_gate(spec, name, "1", MlflowTarget(mlflow_server))
    assert verdict.status == PASSED, verdict.table()
    assert verdict.evidence == {"candidate": f"logged_model {v1['model_id']}"}
    assert f"logged_model {v1['model_id']}" in verdict.table()
    # A version registered before (no LoggedModel): its run's metrics, said so.
    run = mlflow_client.create_run(mlflow_client.get_run(v1["run_id"]).info.experiment_id)
    mlflow_client.log_metric(run.info.run_id, "f1", 0.5)
    mlflow_client.create_model_version(name, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    old = run_gate(spec, name, "2", MlflowTarget(mlflow_server))
    assert old.status == FAILED and old.evidence == {"candidate": f"run {run.info.run_id}"}
