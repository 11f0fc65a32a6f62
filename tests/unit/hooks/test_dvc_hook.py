"""DvcHook against a real git+DVC repo with a local remote."""

from __future__ import annotations

import shutil
import subprocess

import pandas as pd
import pytest

from airflow_mlops.core.errors import MlopsInputError
from airflow_mlops.hooks.dvc import DvcHook


def test_read_at_revision_with_lineage(dvc_repo):
    frame, lineage = DvcHook().read_dataframe(dvc_repo["data_path"], rev=dvc_repo["rev"])
    assert frame.shape == dvc_repo["frame"].shape
    assert lineage["commit"] == dvc_repo["rev"] and lineage["path"] == dvc_repo["data_path"]
    assert lineage["md5"] in (dvc_repo["path"] / "data" / "breast_cancer.csv.dvc").read_text()


def test_snapshot_then_read_both_revisions_from_the_remote(dvc_repo, tmp_path):
    new = tmp_path / "new.csv"
    dvc_repo["frame"].head(100).to_csv(new, index=False)
    hook = DvcHook()
    rev2 = hook.snapshot(str(new), dvc_repo["data_path"], "data v2")
    assert rev2 != dvc_repo["rev"]
    # Drop the local cache: both versions must come back from the DVC remote.
    shutil.rmtree(dvc_repo["path"] / ".dvc" / "cache")
    v1, _ = hook.read_dataframe(dvc_repo["data_path"], rev=dvc_repo["rev"])
    v2, lineage2 = hook.read_dataframe(dvc_repo["data_path"], rev=rev2)
    assert len(v1) == len(dvc_repo["frame"]) and len(v2) == 100
    assert lineage2["commit"] == rev2
    log = subprocess.run(
        ["git", "log", "--format=%s"], cwd=dvc_repo["path"], capture_output=True, text=True
    ).stdout
    assert log.splitlines()[0] == "data v2"


def test_bad_path_and_revision_are_clear_errors(dvc_repo):
    with pytest.raises(MlopsInputError, match="is not in DVC repo"):
        DvcHook().read_dataframe("data/nope.csv")
    with pytest.raises(MlopsInputError, match="does not exist"):
        DvcHook().read_dataframe(dvc_repo["data_path"], rev="no-such-branch")


def test_snapshot_refuses_paths_outside_the_repo(dvc_repo, tmp_path):
    src = tmp_path / "x.csv"
    pd.DataFrame({"a": [1]}).to_csv(src, index=False)
    with pytest.raises(MlopsInputError, match="outside the repository"):
        DvcHook().snapshot(str(src), "../escape.csv", "nope")
