"""Where MLflow lives: a tracking URI plus credentials, applied only inside a scope."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from airflow_mlops.core.errors import MlopsServiceError

if TYPE_CHECKING:
    from mlflow import MlflowClient

_CRED_VARS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


@dataclass(frozen=True)
class MlflowTarget:
    """An MLflow tracking store (server or local) and how to authenticate to it.

    :param tracking_uri: ``http(s)://host:port``, ``sqlite:///path`` or ``file:...``.
    :param registry_uri: model registry URI when it differs from the tracking URI.
    :param username: basic-auth user.
    :param password: basic-auth password.
    :param token: bearer token.
    :param artifact_location: artifact root for experiments this provider creates (local stores).
    :param ui_url: base URL of the MLflow UI, for links.
    """

    tracking_uri: str
    registry_uri: str | None = None
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    artifact_location: str | None = None
    ui_url: str | None = None

    def _env(self) -> dict[str, str | None]:
        return {
            "MLFLOW_TRACKING_USERNAME": self.username,
            "MLFLOW_TRACKING_PASSWORD": self.password,
            "MLFLOW_TRACKING_TOKEN": self.token,
        }

    @contextmanager
    def activate(self) -> Iterator[MlflowTarget]:
        """Point MLflow's process-wide settings (tracking and registry URI, credentials) here, and
        restore what was there before on exit, so one task's settings never leak into another's."""
        import mlflow
        from mlflow.tracking._model_registry import utils as reg_utils
        from mlflow.tracking._tracking_service import utils as trk_utils

        saved_env = {
            k: os.environ.get(k) for k in (*_CRED_VARS, "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
        }
        saved_uris = (trk_utils._tracking_uri, reg_utils._registry_uri)
        try:
            for k, v in self._env().items():
                if v:
                    os.environ[k] = v
                else:
                    os.environ.pop(k, None)
            mlflow.set_tracking_uri(self.tracking_uri)
            mlflow.set_registry_uri(self.registry_uri or self.tracking_uri)
            yield self
        finally:
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            trk_utils._tracking_uri, reg_utils._registry_uri = saved_uris

    def client(self) -> MlflowClient:
        """An MlflowClient bound to this store (credentials apply within :meth:`activate`)."""
        from mlflow import MlflowClient

        return MlflowClient(
            tracking_uri=self.tracking_uri, registry_uri=self.registry_uri or self.tracking_uri
        )

    def run_url(self, experiment_id: str, run_id: str) -> str | None:
        """Link to a run in the MLflow UI, when a UI is known."""
        base = self.ui_url or (self.tracking_uri if self.tracking_uri.startswith("http") else None)
        return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}" if base else None


def check_reachable(tracking_uri: str, timeout: float = 10.0) -> None:
    """Fail fast, with a clear message, when an MLflow server does not answer (MLflow's own client
    would retry for minutes first).

    :param tracking_uri: the tracking URI; only http(s) servers are probed.
    """
    import urllib.error
    import urllib.request

    if not tracking_uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=timeout):
            return
    except urllib.error.HTTPError:
        return  # it answered (maybe behind auth): reachable
    except OSError as e:
        raise MlopsServiceError(
            f"MLflow at {tracking_uri} is unreachable ({e}): start the server or fix the connection's host."
        ) from e
