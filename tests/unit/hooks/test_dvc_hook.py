"""DvcHook against a real git+DVC repo with a local remote."""

from __future__ import annotations

import shutil
import subprocess
import sys

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


def test_data_never_pushed_is_named_with_the_fix(dvc_repo):
    """Tracked and committed, but in neither the cache nor the remote: not a wrong path or revision."""
    repo = dvc_repo["path"]
    dvc_repo["frame"].head(50).to_csv(repo / "data" / "new.csv", index=False)
    subprocess.run([sys.executable, "-m", "dvc", "add", "-q", "data/new.csv"], cwd=repo, check=True)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "new"], cwd=repo, check=True)
    shutil.rmtree(repo / ".dvc" / "cache")
    (repo / "data" / "new.csv").unlink()
    with pytest.raises(
        MlopsInputError, match=r"tracked by DVC.*remote 'local'.*never pushed.*run `dvc push`"
    ):
        DvcHook().read_dataframe("data/new.csv", rev="main")
    # The data pushed before is still read from the remote.
    frame, _ = DvcHook().read_dataframe(dvc_repo["data_path"], rev=dvc_repo["rev"])
    assert len(frame) == len(dvc_repo["frame"])


def test_unknown_remote_and_non_repository(dvc_repo, tmp_path):
    from airflow_mlops.core.dvc_data import read_dvc_frame

    with pytest.raises(MlopsInputError, match=r"DVC remote 'nope' is not configured.*\['local'\]"):
        read_dvc_frame(str(dvc_repo["path"]), dvc_repo["data_path"], remote="nope")
    with pytest.raises(MlopsInputError, match="is not a git repository with DVC"):
        read_dvc_frame(str(tmp_path), dvc_repo["data_path"])


def test_credentials_in_a_git_url_never_reach_the_message():
    from airflow_mlops.core.dvc_data import read_dvc_frame
    from airflow_mlops.core.errors import MlopsServiceError
    from tests.servers import free_port

    url = f"https://ci:tok-123-secret@127.0.0.1:{free_port()}/org/data.git"
    with pytest.raises(MlopsServiceError) as info:
        read_dvc_frame(url, "data/x.csv")
    assert "tok-123-secret" not in str(info.value) and "https://***@127.0.0.1" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
