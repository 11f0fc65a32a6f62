"""Reading DVC-tracked data at a revision, with its lineage, and snapshotting new data into DVC."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.data import read_bytes_table
from airflow_mlops.core.errors import MlopsInputError, MlopsServiceError
from airflow_mlops.core.redact import redact, url_secrets

if TYPE_CHECKING:
    import pandas as pd


def read_dvc_bytes(
    repo: str, path: str, rev: str | None = None, remote: str | None = None
) -> tuple[bytes, dict[str, Any]]:
    """Read a DVC-tracked file at a revision; return its bytes and lineage.

    Lineage: ``repo`` (credentials in its URL masked), ``rev`` (as asked), ``commit`` (the resolved git
    sha), ``path`` and ``md5`` (the hash of the content read). No message names the repository with
    its credentials.

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

    shown = redact(repo)
    at = rev or "HEAD"
    # An exception that quotes a URL with credentials must not travel on as the cause of ours.
    secret = bool(url_secrets(repo))

    def cause(e: BaseException) -> BaseException | None:
        return None if secret else e

    if not str(path or "").strip():
        raise MlopsInputError("No DVC path given: set `dvc_path` to a file tracked in the repository.")
    try:
        with Repo.open(repo, rev=rev, subrepos=False) as r:
            commit = r.scm.get_rev()
            tracked = _tracked_hash(r, path)
            store = _remote_location(r, remote)
    except (RevError, DvcRevError) as e:
        raise MlopsInputError(
            f"Revision {rev!r} does not exist in DVC repo {shown}: give a branch, tag or commit."
        ) from cause(e)
    except MlopsInputError:
        raise
    except (DvcException, OSError) as e:
        if not Path(repo).exists() and "://" not in repo and "@" not in repo:
            raise MlopsInputError(
                f"DVC repo {shown} does not exist: fix the `dvc` connection's host."
            ) from cause(e)
        if Path(repo).is_dir():
            raise MlopsInputError(
                f"{shown} is not a git repository with DVC ({_why(e)}): point the `dvc` connection's host "
                "at the repository's root (run `git init` and `dvc init` there first)."
            ) from cause(e)
        raise MlopsServiceError(
            f"Cannot open DVC repo {shown} at {at} ({_why(e)}): check that the git URL is reachable and its "
            "credentials are valid."
        ) from cause(e)
    try:
        with dvc.api.open(path, repo=repo, rev=rev, remote=remote, mode="rb") as f:
            raw = f.read()
    except PathMissingError as e:
        if tracked is not None:
            _check_remote_answers(store, path, cause(e))
            raise MlopsInputError(_never_pushed(path, shown, at, tracked, store)) from cause(e)
        raise MlopsInputError(
            f"{path!r} is not in DVC repo {shown} at revision {at}: check path and rev "
            "(the path is relative to the repository root)."
        ) from cause(e)
    except (DvcException, OSError) as e:
        if tracked is not None and _missing_data(e):
            _check_remote_answers(store, path, cause(e))
            raise MlopsInputError(_never_pushed(path, shown, at, tracked, store)) from cause(e)
        raise MlopsServiceError(
            f"Cannot read {path} from DVC repo {shown}@{at} ({_why(e)}): check that the DVC remote "
            f"{store[0] if store else ''} ({redact(store[1]) if store else 'none configured'}) is reachable "
            "and its credentials are valid."
        ) from cause(e)
    lineage = {
        "repo": shown,
        "rev": at,
        "commit": commit,
        "path": path,
        "md5": hashlib.md5(raw).hexdigest(),
    }
    return raw, lineage


def _tracked_hash(r: Any, path: str) -> str | None:
    """The hash DVC records for ``path`` at the open revision, or None when DVC does not track it."""
    try:
        outs = r.find_outs_by_path(r.fs.join(r.root_dir, path))
    except Exception:  # noqa: BLE001 - not tracked (or not found): the read decides what went wrong
        return None
    return next((str(o.hash_info.value) for o in outs if o.hash_info), None) if outs else None


def _remote_location(r: Any, remote: str | None) -> tuple[str, str] | None:
    """The name and URL of the remote DVC reads from (``remote``, else the default), or None."""
    remotes = dict(r.config.get("remote") or {})
    name = remote or r.config.get("core", {}).get("remote")
    if remote and remote not in remotes:
        raise MlopsInputError(
            f"DVC remote {remote!r} is not configured in the repository (remotes: {sorted(remotes)}): fix the "
            "`remote` extra of the `dvc` connection or add it with `dvc remote add`."
        )
    if not name or name not in remotes:
        return None
    return name, str(remotes[name].get("url", ""))


def _check_remote_answers(store: tuple[str, str] | None, path: str, cause: BaseException | None) -> None:
    """DVC reports an HTTP remote that does not answer as missing data: tell the two apart.

    :param store: the remote's name and URL.
    :param path: the file being read, for the message.
    :param cause: the DVC error to chain (None when it quotes credentials).
    """
    import urllib.error
    import urllib.request
    from urllib.parse import urlsplit, urlunsplit

    if store is None or not store[1].startswith(("http://", "https://")):
        return
    parts = urlsplit(store[1])
    probe = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))  # no credentials needed
    try:
        with urllib.request.urlopen(probe, timeout=5):
            return
    except urllib.error.HTTPError:
        return  # it answered: the data is really not there
    except OSError as e:
        raise MlopsServiceError(
            f"Cannot read {path}: the DVC remote {store[0]!r} ({redact(store[1])}) does not answer "
            f"({redact(e)}): start it or fix its URL (`dvc remote modify`), then retry."
        ) from cause


def _missing_data(e: BaseException) -> bool:
    """Whether DVC failed because the content of a tracked file is nowhere to be found."""
    from dvc.exceptions import CheckoutError, FileMissingError

    chain: BaseException | None = e
    while chain is not None:
        if isinstance(chain, (FileMissingError, CheckoutError)):
            return True
        chain = chain.__cause__ or chain.__context__
    return False


def _never_pushed(path: str, repo: str, rev: str, md5: str, store: tuple[str, str] | None) -> str:
    where = (
        f"on the DVC remote {store[0]!r} ({redact(store[1])})"
        if store
        else "on any DVC remote (the repository configures none)"
    )
    fix = (
        "run `dvc push` in the repository where it was added, then retry"
        if store
        else "add a remote (`dvc remote add -d NAME URL`) and run `dvc push` where the data was added"
    )
    return (
        f"{path!r} is tracked by DVC at revision {rev} of {repo} (md5 {md5}), but its data is neither in "
        f"the DVC cache nor {where}: it was never pushed. To fix it, {fix}."
    )


def _why(e: BaseException) -> str:
    """The most telling message of an exception chain (DVC wraps the real reason), redacted."""
    parts: list[str] = []
    chain: BaseException | None = e
    while chain is not None and len(parts) < 3:
        text = str(chain).strip()
        if text and text not in parts and text != "SCM error":
            parts.append(text)
        chain = chain.__cause__ or chain.__context__
    return redact(": ".join(parts) or type(e).__name__)


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
    name = f"{path} (DVC repo {lineage['repo']}@{lineage['rev']})"
    return read_bytes_table(raw, PurePosixPath(path).suffix, name), lineage


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
