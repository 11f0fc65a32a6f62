"""MlflowHook: an MLflow tracking server or local store, from an Airflow connection of type ``mlflow``."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from airflow_mlops.core import registry
from airflow_mlops.core.tracking import MlflowTarget
from airflow_mlops.hooks._conn import conn_url

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion


class MlflowHook(BaseHook):
    """Talk to MLflow through an Airflow connection.

    The connection's host is the tracking URI: ``http(s)://host:port`` of a server (login/password for
    basic auth, or the password alone as a bearer token) or a local store such as
    ``sqlite:////data/mlflow.db``. Extras: ``registry_uri``, ``artifact_location`` (artifact root of
    experiments created on a local store), ``ui_url`` (for links).

    Credentials apply only inside :meth:`activate`; nothing leaks to other tasks of the process.

    :param mlflow_conn_id: the connection id.
    """

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = "mlflow_default"
    conn_type = "mlflow"
    hook_name = "MLflow"

    def __init__(self, mlflow_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.mlflow_conn_id = mlflow_conn_id

    @cached_property
    def target(self) -> MlflowTarget:
        """The connection resolved into an :class:`MlflowTarget`."""
        conn = self.get_connection(self.mlflow_conn_id)
        extra = conn.extra_dejson
        host = conn_url(conn, "the MLflow tracking URI", verbatim=("file:", "databricks"))
        login, password = conn.login or None, conn.password or None
        return MlflowTarget(
            tracking_uri=host,
            registry_uri=extra.get("registry_uri"),
            username=login if login else None,
            password=password if login else None,
            token=password if not login else extra.get("token"),
            artifact_location=extra.get("artifact_location"),
            ui_url=extra.get("ui_url"),
        )

    def activate(self):  # a context manager of MlflowTarget
        """Context manager: MLflow's process-wide settings point at this connection inside it."""
        return self.target.activate()

    def get_conn(self) -> MlflowClient:
        """An ``MlflowClient`` bound to this connection."""
        return self.target.client()

    def get_version_by_alias(self, name: str, alias: str) -> ModelVersion | None:
        """The version behind ``name@alias``, or None when unset."""
        with self.activate():
            return registry.get_version_by_alias(self.get_conn(), name, alias)

    def tag_version(self, name: str, version: str | int, tags: dict[str, Any]) -> None:
        """Tag a model version (non-string values are stored as JSON)."""
        with self.activate():
            registry.tag_version(self.get_conn(), name, version, tags)

    def test_connection(self) -> tuple[bool, str]:
        """Check that the tracking store answers."""
        try:
            with self.activate():
                self.get_conn().search_experiments(max_results=1)
            return True, "MLflow answered"
        except Exception as e:  # noqa: BLE001 - reported to the UI, not raised
            return False, str(e)
