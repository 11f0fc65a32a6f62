"""``airflow-mlops drift``: exit 0 without drift, 1 with drift, 2 on bad input; references from files, a
profile JSON, or a registered model's training profile (a real local MLflow store)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.cli import main


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(3)
    ref = pd.DataFrame(
        {"x": rng.normal(size=500), "y": rng.normal(size=500), "c": rng.choice(["a", "b"], 500)}
    )
    out = {
        "ref": tmp_path / "ref.csv",
        "calm": tmp_path / "calm.parquet",
        "shifted": tmp_path / "shifted.csv",
    }
    ref.to_csv(out["ref"], index=False)
    ref.sample(frac=1.0, random_state=2).to_parquet(out["calm"])
    ref.assign(x=ref.x * 2 + 3, y=ref.y + 2).to_csv(out["shifted"], index=False)
    return {k: str(v) for k, v in out.items()}


def test_no_drift_exits_0_and_drift_exits_1_with_json(files, tmp_path, capsys):
    assert main(["drift", "--reference", files["ref"], "--current", files["calm"]]) == 0
    assert "not drifted" in capsys.readouterr().out
    out = tmp_path / "drift.json"
    assert (
        main(["drift", "--reference", files["ref"], "--current", files["shifted"], "--json", str(out)]) == 1
    )
    summary = json.loads(out.read_text())
    assert summary["drift_detected"] and summary["n_drifted"] == 2 and summary["columns"]["x"]["drifted"]


def test_a_profile_json_reference(files, tmp_path):
    from airflow_mlops.core.drift import build_profile, dump_profile

    profile = tmp_path / "profile.json"
    profile.write_text(dump_profile(build_profile(pd.read_csv(files["ref"]))))
    assert main(["drift", "--reference", str(profile), "--current", files["shifted"]]) == 1
    args = ["drift", "--reference", str(profile), "--current", files["shifted"], "--columns", "c"]
    assert main(args) == 0  # only the untouched column tested


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--reference", "{ref}", "--current", "/nowhere.csv"], "does not exist"),
        (["--reference", "/nowhere/profile.json", "--current", "{calm}"], "does not exist"),
        (["--reference", "justaname", "--current", "{calm}"], "NAME@ALIAS"),
        (["--reference", "bc@champion", "--current", "{calm}"], "tracking-uri"),
        (["--reference", "{ref}", "--current", "{calm}", "--drift-share", "2"], "drift_share"),
        (["--reference", "{ref}", "--current", "{calm}", "--method", "nope"], "nope"),
    ],
)
def test_bad_input_exits_2_with_the_fix(files, capsys, monkeypatch, args, message):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["drift", *[a.format(**files) for a in args]]) == 2
    assert message in capsys.readouterr().err


def test_a_dead_mlflow_exits_2_within_seconds(files, capsys):
    args = [
        "drift",
        "--reference",
        "bc@champion",
        "--current",
        files["calm"],
        "--tracking-uri",
        "http://127.0.0.1:9",
    ]
    assert main(args) == 2
    assert "unreachable" in capsys.readouterr().err


def test_model_reference_by_alias_and_version(files, tmp_path):
    from airflow_mlops.core.drift import PROFILE_ARTIFACT, build_profile, dump_profile
    from airflow_mlops.core.tracking import MlflowTarget

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowTarget(uri, artifact_location=str(tmp_path / "art")).client()
    eid = client.create_experiment("cli", artifact_location=str(tmp_path / "art"))
    run = client.create_run(eid)
    client.log_text(run.info.run_id, dump_profile(build_profile(pd.read_csv(files["ref"]))), PROFILE_ARTIFACT)
    client.create_registered_model("bc")
    client.create_model_version("bc", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    client.set_registered_model_alias("bc", "champion", "1")
    json_out = tmp_path / "s.json"
    args = ["--current", files["shifted"], "--tracking-uri", uri, "--json", str(json_out)]
    assert main(["drift", "--reference", "bc@champion", *args]) == 1
    assert json.loads(json_out.read_text())["reference"] == "models:/bc/1"
    assert main(["drift", "--reference", "bc@v1", "--current", files["calm"], "--tracking-uri", uri]) == 0
    assert main(["drift", "--reference", "bc@v9", "--current", files["calm"], "--tracking-uri", uri]) == 2


def test_the_console_script(files):
    out = subprocess.run(
        [sys.executable, "-m", "airflow_mlops.cli", "drift", "--reference", files["ref"], "--current", files["shifted"]],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 1, out.stderr[-2000:]
    assert "DRIFTED" in out.stdout
