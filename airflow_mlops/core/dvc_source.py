"""An MLflow dataset source for DVC-tracked data, so runs show ``dvc`` inputs with repo, path and commit."""

from __future__ import annotations

import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from mlflow.data.dataset_source import DatasetSource
from mlflow.data.dataset_source_registry import register_dataset_source


class DvcDatasetSource(DatasetSource):
    """A file in a DVC repository at a git commit.

    :param repo: repository path or git URL.
    :param path: file path inside the repository.
    :param rev: git commit (or any revision).
    """

    def __init__(self, repo: str, path: str, rev: str) -> None:
        self.repo, self.path, self.rev = repo, path, rev

    @staticmethod
    def _get_source_type() -> str:
        return "dvc"

    @property
    def uri(self) -> str:
        """``dvc://<repo>/<path>@<rev>`` (the form :meth:`_resolve` reads back)."""
        return f"dvc://{self.repo}::{self.path}@{self.rev}"

    def load(self, dst_path: str | None = None) -> str:
        """Fetch the file at its revision into ``dst_path`` (a temporary folder by default); return its path."""
        from airflow_mlops.core.dvc_data import read_dvc_bytes

        raw, _ = read_dvc_bytes(self.repo, self.path, self.rev)
        out = Path(dst_path or tempfile.mkdtemp()) / PurePosixPath(self.path).name
        out.write_bytes(raw)
        return str(out)

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return isinstance(raw_source, str) and raw_source.startswith("dvc://") and "::" in raw_source

    @classmethod
    def _resolve(cls, raw_source: Any) -> DvcDatasetSource:
        repo, _, rest = raw_source.removeprefix("dvc://").partition("::")
        path, _, rev = rest.rpartition("@")
        return cls(repo, path, rev)

    def to_dict(self) -> dict[str, Any]:
        return {"repo": self.repo, "path": self.path, "rev": self.rev}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> DvcDatasetSource:
        return cls(source_dict["repo"], source_dict["path"], source_dict["rev"])


register_dataset_source(DvcDatasetSource)  # type: ignore[arg-type]  # MLflow registers the class
