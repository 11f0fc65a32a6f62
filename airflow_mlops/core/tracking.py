"""Where MLflow lives: a tracking URI plus credentials.

:meth:`MlflowTarget.client` gives a client whose REST stores carry the target's credentials explicitly
(safe in a triggerer, where many triggers share one process); :meth:`MlflowTarget.activate` points
MLflow's process-wide settings here, for the fluent API (runs, artifacts) in a task's own process.
An embedded SQLite store is created once, under a file lock beside the database
(:func:`ensure_store`), whichever process touches it first.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.errors import MlopsServiceError

if TYPE_CHECKING:
    from mlflow import MlflowClient

_SUPPRESS_URL_PRINT = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"
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
        from airflow_mlops.core.redact import without_userinfo

        has_userinfo = without_userinfo(self.tracking_uri) != self.tracking_uri
        return {
            "MLFLOW_TRACKING_USERNAME": self.username,
            "MLFLOW_TRACKING_PASSWORD": self.password,
            "MLFLOW_TRACKING_TOKEN": self.token,
            # MLflow prints each run's URL straight to stdout, past any log masking.
            _SUPPRESS_URL_PRINT: "true" if has_userinfo else os.environ.get(_SUPPRESS_URL_PRINT),
        }

    @contextmanager
    def activate(self) -> Iterator[MlflowTarget]:
        """Point MLflow's process-wide settings (tracking and registry URI, credentials) here, and
        restore what was there before on exit, so one task's settings never leak into another's."""
        import mlflow
        from mlflow.tracking._model_registry import utils as reg_utils
        from mlflow.tracking._tracking_service import utils as trk_utils

        ensure_store(self.tracking_uri, self.artifact_location)
        if self.registry_uri and self.registry_uri != self.tracking_uri:
            ensure_store(self.registry_uri, self.artifact_location)
        saved_env = {
            k: os.environ.get(k)
            for k in (*_CRED_VARS, _SUPPRESS_URL_PRINT, "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
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

    def host_creds(self, uri: str) -> Any:
        """``MlflowHostCreds`` for a REST store at ``uri`` with this target's credentials (never read
        from, nor written to, ``os.environ``)."""
        from mlflow.utils.rest_utils import MlflowHostCreds

        return MlflowHostCreds(host=uri, username=self.username, password=self.password, token=self.token)

    def client(self) -> MlflowClient:
        """An MlflowClient bound to this store whose REST stores carry this target's credentials.

        Changes no process-wide state (environment, MLflow's global URIs), so concurrent clients of
        different targets (triggers in one triggerer) each talk with their own identity. Artifact
        transfers through MLflow's artifact repositories still read process-wide credentials: do those
        within :meth:`activate`, in a task's own process.
        """
        from mlflow import MlflowClient

        registry_uri = self.registry_uri or self.tracking_uri
        ensure_store(self.tracking_uri, self.artifact_location)
        if registry_uri != self.tracking_uri:
            ensure_store(registry_uri, self.artifact_location)
        client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=registry_uri)
        if _is_http(self.tracking_uri):
            client._tracking_client = _tracking_client(self.tracking_uri, self._creds_for(self.tracking_uri))
        if _is_http(registry_uri):
            client._registry_client_lazy = _registry_client(  # type: ignore[attr-defined]
                registry_uri, self.tracking_uri, self._creds_for(registry_uri)
            )
        return client

    def _creds_for(self, uri: str) -> Callable[[], Any]:
        return lambda: self.host_creds(uri)

    def ui_base(self) -> str | None:
        """Base URL of the MLflow UI: ``ui_url``, else an http(s) tracking URI, else None."""
        base = self.ui_url or (self.tracking_uri if self.tracking_uri.startswith("http") else None)
        return base.rstrip("/") if base else None

    def run_url(self, experiment_id: str, run_id: str) -> str | None:
        """Link to a run in the MLflow UI, when a UI is known."""
        base = self.ui_base()
        return f"{base}/#/experiments/{experiment_id}/runs/{run_id}" if base else None

    def model_version_url(self, name: str, version: str | int) -> str | None:
        """Link to a model version in the MLflow UI, when a UI is known."""
        from urllib.parse import quote

        base = self.ui_base()
        return f"{base}/#/models/{quote(name, safe='')}/versions/{version}" if base else None


def _is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def _tracking_client(uri: str, get_host_creds: Callable[[], Any]) -> Any:
    """A TrackingServiceClient whose store is a RestStore with explicit credentials."""
    from mlflow.store.tracking.rest_store import RestStore
    from mlflow.tracking._tracking_service.client import TrackingServiceClient

    class _Client(TrackingServiceClient):
        # MLflow resolves ``store`` from the URI and the environment on every call: pin ours.
        def __init__(self, tracking_uri: str, store: RestStore) -> None:
            self._store = store
            super().__init__(tracking_uri)  # type: ignore[no-untyped-call]  # unannotated in MLflow

        @property
        def store(self) -> RestStore:
            return self._store

    return _Client(uri, RestStore(get_host_creds))


def _registry_client(uri: str, tracking_uri: str, get_host_creds: Callable[[], Any]) -> Any:
    """A ModelRegistryClient whose store is a RestStore with explicit credentials."""
    from mlflow.store.model_registry.rest_store import RestStore
    from mlflow.tracking._model_registry.client import ModelRegistryClient

    class _Client(ModelRegistryClient):
        def __init__(self, registry_uri: str, tracking_uri: str, store: RestStore) -> None:
            self._store = store
            super().__init__(registry_uri, tracking_uri)  # type: ignore[no-untyped-call]  # unannotated in MLflow

        @property
        def store(self) -> RestStore:
            return self._store

    return _Client(uri, tracking_uri, RestStore(get_host_creds))


def sqlite_path(uri: str) -> str | None:
    """The database file of a ``sqlite:///`` URI, or None for other stores."""
    from urllib.parse import unquote

    if not uri.startswith("sqlite:///"):
        return None
    path = unquote(uri[len("sqlite:///") :]).split("?", 1)[0]
    return None if path in ("", ":memory:") else os.path.abspath(path)


@contextmanager
def store_lock(db_path: str) -> Iterator[None]:
    """An exclusive lock on ``<db>.lock`` beside a SQLite database file.

    The database's own folder is on the disk that holds it, which every process using that SQLite
    file shares, so a lock there is seen by all of them (SQLite cannot be shared across hosts anyway).
    """
    import fcntl

    folder = os.path.dirname(db_path) or "."
    os.makedirs(folder, exist_ok=True)
    with open(f"{db_path}.lock", "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def ensure_store(uri: str, artifact_location: str | None = None) -> None:
    """Create an embedded SQLite store (tables and migrations) once, safely, before any client
    touches it: under :func:`store_lock`, so that parallel tasks never race to create the same empty
    database (``table ... already exists``). Other stores are left alone. Cheap once created: MLflow
    caches the store per process.

    :param uri: the tracking URI.
    :param artifact_location: default artifact root of a store made here.
    """
    path = sqlite_path(uri)
    if path is None:
        return
    from mlflow.tracking._model_registry import utils as reg_utils
    from mlflow.tracking._tracking_service import utils as trk_utils

    with store_lock(path):
        try:
            trk_utils._get_store(uri, artifact_location)
            reg_utils._get_store(uri, uri)
        except Exception as e:  # reworded with the fix
            from airflow_mlops.core.redact import redact

            raise MlopsServiceError(
                f"The MLflow store {redact(uri)} could not be opened ({redact(e)}): check that its folder "
                "is writable and the file is an MLflow database."
            ) from e


def check_reachable(tracking_uri: str, timeout: float = 10.0) -> None:
    """Fail fast, with a clear message, when an MLflow server does not answer (MLflow's own client
    would retry for minutes first).

    :param tracking_uri: the tracking URI; only http(s) servers are probed.
    """
    import urllib.error
    import urllib.request

    from airflow_mlops.core.redact import redact, without_userinfo

    if not tracking_uri.startswith(("http://", "https://")):
        return
    bare = without_userinfo(tracking_uri)  # /health needs no credentials
    try:
        with urllib.request.urlopen(f"{bare.rstrip('/')}/health", timeout=timeout):
            return
    except urllib.error.HTTPError:
        return  # it answered (maybe behind auth): reachable
    except OSError as e:
        raise MlopsServiceError(
            f"MLflow at {redact(tracking_uri)} is unreachable ({redact(e)}): start the server or fix the "
            "connection's host."
        ) from None
