"""docker/airflow/init-dvc-repo.sh: seeds the git + DVC repository behind the stack's ``dvc_default``.

Run here with the real git and DVC, then read back through the provider's own DVC reader from the
DVC remote alone (local cache deleted), as a fresh worker would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.integration.stack.stack_files import DOCKER, compose

SCRIPT = DOCKER / "airflow" / "init-dvc-repo.sh"


def _seed(root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHON": sys.executable, "DVC_NO_ANALYTICS": "1", **env}
    return subprocess.run(
        ["bash", str(SCRIPT), str(root)], env=full, capture_output=True, text=True, timeout=180
    )


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def test_seeds_a_repo_that_the_provider_reads_from_the_remote(tmp_path: Path) -> None:
    from sklearn.datasets import load_breast_cancer

    from airflow_mlops.core.dvc_data import read_dvc_frame

    proc = _seed(tmp_path)
    assert proc.returncode == 0, proc.stderr
    repo = tmp_path / "repo"
    assert _git(repo, "status", "--porcelain") == ""
    assert len(_git(repo, "log", "--oneline").splitlines()) == 1
    shutil.rmtree(repo / ".dvc" / "cache")  # only the remote holds the data now
    frame, lineage = read_dvc_frame(str(repo), "data/breast_cancer.csv", remote="local")
    expected = load_breast_cancer(as_frame=True).frame
    assert frame.shape == expected.shape and list(frame.columns) == list(expected.columns)
    assert lineage["commit"] == _git(repo, "rev-parse", "HEAD") and lineage["md5"]

    again = _seed(tmp_path)  # airflow-init runs on every `up`: the second run changes nothing
    assert again.returncode == 0 and "already" in again.stdout
    assert len(_git(repo, "log", "--oneline").splitlines()) == 1


def test_unknown_dataset_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    proc = _seed(tmp_path, DATASET="iris; rm -rf /")
    assert proc.returncode == 2
    assert "breast_cancer, wine, diabetes" in proc.stderr
    assert not (tmp_path / "repo").exists()


def test_compose_connection_matches_the_seeded_layout() -> None:
    services = compose()["services"]
    conn = json.loads(services["airflow-worker"]["environment"]["AIRFLOW_CONN_DVC_DEFAULT"])
    command = services["airflow-init"]["command"][-1]
    root = "/opt/airflow/mlops-data"
    assert f"/opt/mlops/stack/init-dvc-repo.sh {root}" in command
    assert conn["host"] == f"{root}/repo" and conn["extra"]["remote"] == "local"
    assert any(v.endswith(f":{root}") for v in services["airflow-worker"]["volumes"])
