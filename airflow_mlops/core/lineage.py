"""Lineage facts: the git commit of the code and a digest of a dataset."""

from __future__ import annotations

import hashlib
import os
import subprocess
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def git_commit(path: str | os.PathLike[str]) -> dict[str, str] | None:
    """The git commit (and whether the tree is dirty) of the repo holding ``path``, or None.

    :param path: a file or folder inside the repository.
    """
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=folder, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return {"sha": sha, "dirty": str(bool(dirty)).lower()}


def frame_digest(df: pd.DataFrame) -> str:
    """A content digest of a DataFrame (values, column names and dtypes), stable across runs.

    :param df: the frame.
    """
    import pandas as pd

    h = hashlib.sha256()
    h.update(repr([(str(c), str(t)) for c, t in df.dtypes.items()]).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]
