"""Reading DVC-tracked data at a revision, with its lineage, and snapshotting new data into DVC."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.data import read_bytes_table
from airflow_mlops.core.errors import MlopsInputError, MlopsServiceError

if TYPE_CHECKING:
    import pandas as pd


def read_dvc_bytes(
    repo: str, path: str, rev: str | None = None, remote: str | None = None
) -> tuple[bytes, dict[str, Any]]:
    """Read a DVC-tracked file at a revision; return its bytes and lineage.

    Lineage: ``repo``, ``rev`` (as asked), ``commit`` (the resolved git sha), ``path`` and ``md5``
    (the content hash DVC records for the file).

    :param repo: local path or git URL of the DVC repository.
    :param path: path of the tracked file inside the repository.
    :param rev: git revision (branch, tag or sha); the default branch when None.
    :param remote: DVC remote to pull from when the cache lacks the file.
    """
    import dvc.api
    from dvc.exceptions import DvcException, PathMissingError
    from dvc.repo import Repo
    from dvc.scm import RevError as DvcRevError
    from scmrepo.exceptions import RevError

    try:
        with Repo.open(repo, rev=rev, subrepos=False) as r:
            commit = r.scm.get_rev()
        with dvc.api.open(path, repo=repo, rev=rev, remote=remote, mode="rb") as f:
            raw = f.read()
    except PathMissingError as e:
        raise MlopsInputError(
            f"{path!r} is not in DVC repo {repo} at revision {rev or 'HEAD'}: check path and rev."
        ) from e
    except (RevError, DvcRevError) as e:
        raise MlopsInputError(
            f"Revision {rev!r} does not exist in {repo}: give a branch, tag or commit."
        ) from e
    except (DvcException, OSError) as e:
        if not Path(repo).exists() and "://" not in repo and "@" not in repo:
            raise MlopsInputError(f"DVC repo {repo} does not exist: fix the `dvc` connection's host.") from e
        raise MlopsServiceError(f"Cannot read {path} from DVC repo {repo}@{rev or 'HEAD'}: {e}") from e
    lineage = {
        "repo": repo,
        "rev": rev or "HEAD",
        "commit": commit,
        "path": path,
        "md5": hashlib.md5(raw).hexdigest(),
    }
    return raw, lineage


def read_dvc_frame(
    repo: str, path: str, rev: str | None = None, remote: str | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a DVC-tracked CSV/Parquet file at a revision into a DataFrame, with its lineage.

    :param repo: local path or git URL of the DVC repository.
    :param path: path of the tracked file inside the repository.
    :param rev: git revision; the default branch when None.
    :param remote: DVC remote to pull from.
    """
    raw, lineage = read_dvc_bytes(repo, path, rev, remote)
    return read_bytes_table(raw, PurePosixPath(path).suffix), lineage


def snapshot(repo: str, source: str | Path, dest: str, message: str, remote: str | None = None) -> str:
    """Version a new data file with DVC: copy it into the repo, ``dvc add``, git commit, ``dvc push``.

    :param repo: local working copy of the DVC repository (a git URL cannot be committed to).
    :param source: the file to snapshot.
    :param dest: path inside the repository to store it at (replaced if tracked already).
    :param message: the git commit message.
    :param remote: DVC remote to push to (the repo's default when None).
    :return: the new git commit sha.
    """
    from dvc.repo import Repo

    root = Path(repo)
    if not (root / ".dvc").is_dir():
        raise MlopsInputError(
            f"{repo} is not a local DVC working copy: snapshots need a checked-out repository."
        )
    src = Path(source)
    if not src.is_file():
        raise MlopsInputError(f"Snapshot source {src} does not exist: write the new data file first.")
    target = root / dest
    if root.resolve() not in target.resolve().parents:
        raise MlopsInputError(
            f"Snapshot destination {dest!r} is outside the repository: give a relative path."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, target)
    with Repo(str(root)) as r:
        r.add(str(target))
        r.push(remote=remote)
    rel = target.relative_to(root)
    _git(root, "add", f"{rel}.dvc", str(rel.parent / ".gitignore"))
    _git(root, "commit", "-q", "-m", message, "--allow-empty")
    return _git(root, "rev-parse", "HEAD")


def _git(root: Path, *args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=root, check=True, capture_output=True, text=True
        ).stdout.strip()
    except subprocess.CalledProcessError as e:
        raise MlopsServiceError(f"git {' '.join(args)} failed in {root}: {e.stderr.strip()}") from e
