"""Where a deployment is recorded between tasks: backend handle, port, routing, and what to roll back to.

One JSON file per deployment under a state folder (``<state_dir>/<name>.json``), written atomically
and guarded by a lock file, so that a retried or concurrent task sees one consistent record.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from airflow_mlops.core.errors import MlopsInputError

DEFAULT_STATE_DIR_ENV = "MLOPS_DEPLOY_STATE_DIR"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def default_state_dir() -> Path:
    """``$MLOPS_DEPLOY_STATE_DIR``, else ``~/.mlops/deployments``."""
    env = os.environ.get(DEFAULT_STATE_DIR_ENV)
    return Path(env) if env else Path.home() / ".mlops" / "deployments"


def check_name(name: str) -> str:
    """A deployment name is used in file names, container names and labels: keep it plain.

    :raises MlopsInputError: the name has characters other than letters, digits, ``_ . -``.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise MlopsInputError(
            f"Deployment name {name!r} is not usable: use 1-63 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit."
        )
    return name


@dataclass
class DeploymentState:
    """Everything needed to find, change and roll back one deployment.

    :param name: deployment name (unique per state folder).
    :param model_name: registered model name.
    :param backend: ``local`` or ``docker``.
    :param port: the gateway's port on 127.0.0.1.
    :param endpoint: the gateway's base URL.
    :param handle: backend facts (``pid`` of a local gateway, ``container_id`` of a Docker one).
    :param admin_token: the gateway's admin bearer token (the file is private: mode 0600).
    :param config: the routing applied now (gateway deployment config).
    :param previous_config: the routing before the last deploy, restored by a rollback.
    :param previous_champion: the ``champion`` version before the last deploy.
    :param last_op: the last deploy or rollback: its id, target version, status, what it expected.
    :param history: short log of operations (id, action, version, status, time).
    """

    name: str
    model_name: str
    backend: str
    port: int | None = None
    endpoint: str | None = None
    handle: dict[str, Any] = field(default_factory=dict)
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    config: dict[str, Any] | None = None
    previous_config: dict[str, Any] | None = None
    previous_champion: str | None = None
    last_op: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    MAX_HISTORY = 50

    def served_versions(self) -> list[str]:
        """Versions with a route in the current config."""
        return [str(r["version"]) for r in (self.config or {}).get("routes", [])]

    def weights(self) -> dict[str, float]:
        """``{version: weight}`` of the current config."""
        return {str(r["version"]): float(r.get("weight", 1.0)) for r in (self.config or {}).get("routes", [])}

    def add_history(self, **entry: Any) -> None:
        """Append an entry (time added), keeping the last ``MAX_HISTORY``."""
        self.history.append({"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **entry})
        del self.history[: -self.MAX_HISTORY]

    def to_json(self) -> dict[str, Any]:
        """The JSON form written to the state file."""
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> DeploymentState:
        """Read the JSON form; unknown keys (from newer versions) are ignored."""
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in raw.items() if k in known})


class StateStore:
    """Deployment state files in one folder.

    :param root: the state folder (created with mode 0700: files hold admin tokens).
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root else default_state_dir()

    def _ensure_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path(self, name: str) -> Path:
        """The state file of deployment ``name``."""
        return self.root / f"{check_name(name)}.json"

    def workdir(self, name: str) -> Path:
        """A folder for the deployment's files (config, gateway log); created on demand."""
        d = self.root / check_name(name)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        return d

    def load(self, name: str) -> DeploymentState | None:
        """The recorded state of ``name``, or None when it was never deployed."""
        p = self.path(name)
        if not p.exists():
            return None
        try:
            return DeploymentState.from_json(json.loads(p.read_text()))
        except (ValueError, TypeError) as e:
            raise MlopsInputError(
                f"Deployment state {p} is unreadable ({e}): fix or delete the file (the gateway it "
                "describes may need stopping by hand)."
            ) from e

    def save(self, state: DeploymentState) -> None:
        """Write the state atomically (a reader never sees half a file), private to the owner."""
        self._ensure_root()
        p = self.path(state.name)
        tmp = p.with_suffix(f".tmp-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(state.to_json(), f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)

    def delete(self, name: str) -> None:
        """Forget a deployment (after its gateway was stopped)."""
        self.path(name).unlink(missing_ok=True)

    @contextmanager
    def lock(self, name: str, timeout: float = 600.0) -> Iterator[None]:
        """Hold the deployment's lock: one deploy or rollback at a time per deployment.

        :param timeout: seconds to wait for another holder before giving up.
        :raises MlopsInputError: another operation holds the lock longer than ``timeout``.
        """
        self._ensure_root()
        fd = os.open(self.root / f"{check_name(name)}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise MlopsInputError(
                            f"Deployment {name!r} is locked by another deploy or rollback for more than "
                            f"{timeout:.0f}s: wait for it to finish, or remove {self.root}/{name}.lock if "
                            "its process is gone."
                        ) from None
                    time.sleep(0.2)
            yield
        finally:
            os.close(fd)  # closing releases the flock
