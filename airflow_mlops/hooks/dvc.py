"""DvcHook: a DVC repository (local path or git URL) from an Airflow connection of type ``dvc``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

if TYPE_CHECKING:
    import pandas as pd


class DvcHook(BaseHook):
    """Read DVC-tracked data with lineage, and snapshot new data.

    The connection's host is the repository (a local path or a git URL); extras: ``rev`` (default
    revision) and ``remote`` (DVC remote name).

    :param dvc_conn_id: the connection id.
    """

    conn_name_attr = "dvc_conn_id"
    default_conn_name = "dvc_default"
    conn_type = "dvc"
    hook_name = "DVC"

    def __init__(self, dvc_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.dvc_conn_id = dvc_conn_id

    def _settings(self) -> tuple[str, str | None, str | None]:
        from airflow_mlops.core.errors import MlopsInputError

        conn = self.get_connection(self.dvc_conn_id)
        if not conn.host:
            raise MlopsInputError(
                f"Connection {self.dvc_conn_id!r} has no host: set it to the DVC repository (path or git URL)."
            )
        extra = conn.extra_dejson
        return conn.host, extra.get("rev"), extra.get("remote")

    @property
    def repo(self) -> str:
        """The repository path or URL (may hold credentials: redact it before printing)."""
        return self._settings()[0]

    def read_dataframe(self, path: str, rev: str | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
        """Read a tracked CSV/Parquet file at ``rev`` (default: the connection's); return it with lineage.

        :param path: path inside the repository.
        :param rev: git revision; the connection's ``rev`` extra when None.
        """
        from airflow_mlops.core.dvc_data import read_dvc_frame

        repo, default_rev, remote = self._settings()
        return read_dvc_frame(repo, path, rev or default_rev, remote)

    def snapshot(self, source: str, dest_path: str, message: str) -> str:
        """Version ``source`` at ``dest_path`` in the repository; return the new commit sha.

        :param source: local file holding the new data.
        :param dest_path: path inside the repository.
        :param message: git commit message.
        """
        from airflow_mlops.core.dvc_data import snapshot

        repo, _, remote = self._settings()
        return snapshot(repo, source, dest_path, message, remote)
