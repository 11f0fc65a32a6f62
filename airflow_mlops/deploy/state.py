"""Where a deployment is recorded between tasks: backend handle, port, routing, what to roll back to.

The state of record lives in MLflow, which every worker sees, and changes by compare-and-set:

- One MLflow run per record (a deployment, or a model's promotion ledger) in the experiment
  ``mlops-deployments``. Which run that is gets decided once, atomically: the first writer creates the
  experiment ``mlops-deployments/<kind>/<key>`` with the run id as a tag, and MLflow's unique
  experiment name makes every other writer adopt that run (and delete its own).
- Revision ``N`` of a record is the run's params ``rev.N`` (``<nonce> <chunks>``) and ``state.N.<i>``
  (the JSON, in chunks of at most 6000 characters), written by ONE ``log_batch``. MLflow params are
  immutable and the SQL stores enforce it with the ``(key, run_uuid)`` primary key inside one
  transaction, so of writers racing for ``rev.N+1`` exactly one succeeds; the others re-read, see
  another nonce, and get :class:`StateConflictError`.
- Readers take the highest complete revision.

The state holds no secret: the gateway's admin token comes from the caller (operator argument,
connection, ``MLOPS_GATEWAY_ADMIN_TOKEN``) or, for a gateway this worker started, from a private file in
the worker's work folder. Work files (gateway config, its log) stay on local disk; they are not state.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.errors import MlopsInputError, MlopsServiceError
from airflow_mlops.serving.config import DeploymentConfig

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Experiment

    from airflow_mlops.core.tracking import MlflowTarget

DEFAULT_STATE_DIR_ENV = "MLOPS_DEPLOY_STATE_DIR"
STATE_EXPERIMENT = "mlops-deployments"
RECORD_TAG = "mlops.record"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_CHUNK = 6000  # MLflow's param value limit
_MAX_CHUNKS = 90  # log_batch takes 100 params
_MOVED = "_mlops_moved_to_generation"


def default_state_dir() -> Path:
    """``$MLOPS_DEPLOY_STATE_DIR``, else ``~/.mlops/deployments`` (work files of this worker only)."""
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


def this_host() -> str:
    """The name of the machine this code runs on (recorded in backend handles)."""
    return socket.gethostname()


class StateConflictError(MlopsServiceError):
    """Another writer changed the record since it was read: re-read and decide again."""


class DeploymentBusyError(MlopsServiceError):
    """Another operation holds the deployment (its lease has not run out)."""


@dataclass
class Operation:
    """The deploy or rollback in progress (or the last one), as recorded in the state.

    :param id: the operation id (Airflow: dag_id/run_id/task_id/map_index); retries share it.
    :param action: ``deploy`` or ``rollback``.
    :param status: ``in_progress``, ``done``, ``rolled_back``, ``failed_validation`` or ``failed``.
    :param version: the version deployed (or restored by a rollback).
    :param strategy: rollout strategy (deploy).
    :param promote: whether the deploy was asked to promote (``canary`` with ``promote=False``: held).
    :param promoted: whether it moved ``champion``.
    :param expected_champion: ``champion`` when the operation began (compare-and-set baseline).
    :param previous_config: the routing before the operation (restored on failure / by rollback).
    :param restore_champion: rollback: the champion it restores.
    :param rolled_back: rollback: the version it takes out of traffic (the last deploy's).
    :param stage: index of the stage applied now (deploy).
    :param lease_until: epoch seconds until which the operation holds the deployment.
    :param host: where the operation runs now.
    :param validation: the infra validation report (deploy).
    """

    id: str | None
    action: str
    status: str = "in_progress"
    version: str | None = None
    strategy: str | None = None
    promote: bool = True
    promoted: bool = False
    expected_champion: str | None = None
    previous_config: DeploymentConfig | None = None
    restore_champion: str | None = None
    rolled_back: str | None = None
    stage: int = 0
    lease_until: float = 0.0
    host: str | None = None
    validation: dict[str, Any] | None = None

    def holds(self, now: float | None = None) -> bool:
        """Whether the operation is in progress and its lease still runs."""
        return self.status == "in_progress" and self.lease_until > (time.time() if now is None else now)

    def is_held_canary_of(self, version: str) -> bool:
        """Whether this was a finished ``canary`` of ``version`` with ``promote=False`` (held)."""
        return (
            self.action == "deploy"
            and self.status == "done"
            and self.version == str(version)
            and self.strategy == "canary"
            and not self.promoted
        )


@dataclass
class DeploymentState:
    """Everything needed to find, change and roll back one deployment. No secrets.

    :param name: deployment name.
    :param model_name: registered model name.
    :param backend: ``local``, ``docker`` or ``external``.
    :param port: the gateway's port.
    :param endpoint: the gateway's base URL.
    :param handle: backend facts (``pid``/``container_id``, ``host``: where it runs).
    :param config: the routing applied now (gateway deployment config).
    :param previous_config: the routing before the last deploy, restored by a rollback.
    :param previous_champion: the ``champion`` version before the last deploy.
    :param op: the operation in progress, or the last one.
    :param history: short log of operations (id, action, version, status, time), bounded.
    """

    name: str
    model_name: str
    backend: str
    port: int | None = None
    endpoint: str | None = None
    handle: dict[str, Any] = field(default_factory=dict)
    config: DeploymentConfig | None = None
    previous_config: DeploymentConfig | None = None
    previous_champion: str | None = None
    op: Operation | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    MAX_HISTORY = 20

    def served_versions(self) -> list[str]:
        """Versions with a route in the current config."""
        return self.config.versions if self.config else []

    def weights(self) -> dict[str, float]:
        """``{version: weight}`` of the current config."""
        return {r.version: r.weight for r in self.config.routes} if self.config else {}

    def add_history(self, **entry: Any) -> None:
        """Append an entry (time added), keeping the last ``MAX_HISTORY`` (the ledger keeps all)."""
        self.history.append({"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **entry})
        del self.history[: -self.MAX_HISTORY]

    def to_json(self) -> dict[str, Any]:
        """The JSON form of the record (configs as the gateway's JSON)."""
        out = {k: _json(v) for k, v in vars(self).items()}
        if self.op is not None:
            out["op"] = {k: _json(v) for k, v in vars(self.op).items()}
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> DeploymentState:
        """Read the JSON form; unknown keys (from newer versions) are ignored."""
        data = _typed(cls, raw)
        if isinstance(data.get("op"), dict):
            data["op"] = Operation(**_typed(Operation, data["op"]))
        return cls(**data)


def _json(value: Any) -> Any:
    return value.to_dict() if isinstance(value, DeploymentConfig) else value


def _typed(cls: type, raw: dict[str, Any]) -> dict[str, Any]:
    """The known fields of ``cls`` in ``raw``, configs parsed."""
    data = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}  # type: ignore[attr-defined]
    for key in ("config", "previous_config"):
        if isinstance(data.get(key), dict):
            data[key] = DeploymentConfig.parse(data[key])
    return data


class CasRecord:
    """One JSON record in MLflow with numbered, immutable revisions (see the module docstring).

    :param client: an MLflow client.
    :param kind: ``deployment`` or ``ledger``.
    :param key: the record's key (deployment name, model name).
    :param artifact_location: artifact root for the experiment this creates (local stores).
    """

    def __init__(
        self, client: MlflowClient, kind: str, key: str, artifact_location: str | None = None
    ) -> None:
        self.client = client
        self.kind = kind
        self.key = key
        self.artifact_location = artifact_location
        self._run_id: str | None = None
        self._gen = 0  # the run generation in use (a new run every ROLL_AFTER revisions)
        self._base = 0  # the last revision before this generation
        self._resolved = False  # whether the newest generation was looked up

    # Revisions per run before the record moves to a new run, so that no run's params grow without end.
    ROLL_AFTER = 200

    @property
    def _anchor(self) -> str:
        base = f"{STATE_EXPERIMENT}/{self.kind}/{self.key}"
        return base if self._gen == 0 else f"{base}/gen-{self._gen}"

    def _find_run(self) -> str | None:
        exp = self.client.get_experiment_by_name(self._anchor)
        return None if exp is None else exp.tags.get("mlops.run_id")

    def run_id(self, create: bool = True) -> str | None:
        """The record's run; created (race-safely) when ``create``."""
        if self._run_id is None:
            self._run_id = self._find_run()
        if self._run_id is None and create:
            self._run_id = self._create_run()
        return self._run_id

    def _create_run(self) -> str:
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(STATE_EXPERIMENT)
        if exp is None:
            try:
                exp_id = self.client.create_experiment(STATE_EXPERIMENT, self.artifact_location)
            except MlflowException:  # created by another writer meanwhile
                exp_id = self._experiment(STATE_EXPERIMENT).experiment_id
        else:
            exp_id = exp.experiment_id
        run = self.client.create_run(
            exp_id,
            tags={RECORD_TAG: f"{self.kind}/{self.key}", "mlops.kind": self.kind, "mlops.key": self.key},
            run_name=f"{self.kind}-{self.key}",
        )
        try:
            # The unique experiment name decides, once, which run holds the record.
            self.client.create_experiment(
                self._anchor, self.artifact_location, tags={"mlops.run_id": run.info.run_id}
            )
            if self._gen > 0:  # readers start here next time instead of walking every full run
                first = self._experiment(f"{STATE_EXPERIMENT}/{self.kind}/{self.key}")
                self.client.set_experiment_tag(
                    first.experiment_id, "mlops.latest_generation", f"{self._gen} {self._base}"
                )
            return run.info.run_id
        except MlflowException:
            winner = self._find_run()
            self.client.delete_run(run.info.run_id)
            if winner is None:
                raise
            return winner

    def _experiment(self, name: str) -> Experiment:
        """An experiment that must exist (this writer or another one created it)."""
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            raise MlopsServiceError(
                f"MLflow lost the experiment {name!r} while the {self.kind} record was written."
            )
        return exp

    def _params(self) -> dict[str, str]:
        run_id = self.run_id(create=False)
        if run_id is None:
            return {}
        return self.client.get_run(run_id).data.params

    def _follow(self, collect: bool = False) -> tuple[int, Any, list[Any]]:
        """Walk the generations to the newest: ``(revision, value, every value if collect)``."""
        self._resolved = True
        if not collect and self._gen == 0:
            self._jump_to_hint()
        rev, value, values = self._base, None, []
        while True:
            params = self._params()
            run_rev, run_value = self._latest(params)
            if collect:
                values += [self._unwrap(v) for v in self._all(params)]
            if run_rev:
                rev, value = run_rev, run_value
            elif value is None and self._gen > 0:
                # The hinted run holds nothing yet (its first writer is still writing, or died): the
                # state is in the marker that moved the record; walk from the first run.
                self._gen, self._base, self._run_id, rev = 0, 0, None, 0
                continue
            if isinstance(value, dict) and set(value) == {_MOVED, "state"} and value[_MOVED] > self._gen:
                # This run is full: its last revision moved the record on (and carries its state).
                self._gen, self._base, self._run_id = int(value[_MOVED]), rev, None
                value = {_MOVED: -1, "state": value["state"]}  # followed: keep walking from the new run
                continue
            return rev, self._unwrap(value), values

    def _jump_to_hint(self) -> None:
        """Start at the generation the first anchor's hint names (a hint only: the walk goes on from it)."""
        exp = self.client.get_experiment_by_name(f"{STATE_EXPERIMENT}/{self.kind}/{self.key}")
        hint = (exp.tags.get("mlops.latest_generation") if exp is not None else None) or ""
        try:
            gen, base = (int(x) for x in hint.split())
        except ValueError:
            return
        self._gen, self._base, self._run_id = gen, base, None

    @staticmethod
    def _unwrap(value: Any) -> Any:
        return value["state"] if isinstance(value, dict) and set(value) == {_MOVED, "state"} else value

    @staticmethod
    def _all(params: dict[str, str]) -> list[Any]:
        out = []
        for rev in sorted(int(k[4:]) for k in params if k.startswith("rev.") and k[4:].isdigit()):
            try:
                _nonce, n = params[f"rev.{rev}"].split()
                out.append(json.loads("".join(params[f"state.{rev}.{i}"] for i in range(int(n)))))
            except (KeyError, ValueError):
                continue
        return out

    @staticmethod
    def _latest(params: dict[str, str]) -> tuple[int, Any]:
        revs = sorted((int(k[4:]) for k in params if k.startswith("rev.") and k[4:].isdigit()), reverse=True)
        for rev in revs:
            try:
                _nonce, n = params[f"rev.{rev}"].split()
                text = "".join(params[f"state.{rev}.{i}"] for i in range(int(n)))
                return rev, json.loads(text)
            except (KeyError, ValueError):
                continue  # an incomplete revision (non-transactional store): take the one before
        return 0, None

    def read(self) -> tuple[int, Any]:
        """``(revision, value)`` of the highest complete revision; ``(0, None)`` when never written."""
        rev, value, _ = self._follow()
        return rev, value

    def read_all(self) -> list[Any]:
        """Every complete revision's value, oldest first (an append-only log), across runs."""
        self._gen, self._base, self._run_id = 0, 0, None
        return self._follow(collect=True)[2]

    def write(self, rev: int, value: Any) -> None:
        """Write revision ``rev`` (the read revision + 1) as one batch.

        :raises StateConflictError: another writer took ``rev`` first.
        :raises MlopsServiceError: MLflow refused the write repeatedly.
        """
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException

        if not self._resolved:
            self._follow()  # write into the newest run generation
        if rev <= self._base:
            raise StateConflictError(
                f"The {self.kind} record {self.key!r} was changed by another operation meanwhile (revision "
                f"{rev} is taken): read it again and retry."
            )
        if rev - self._base >= self.ROLL_AFTER:
            value = {_MOVED: self._gen + 1, "state": value}  # the last revision of this run
        text = json.dumps(value, sort_keys=True, separators=(",", ":"))
        chunks = [text[i : i + _CHUNK] for i in range(0, len(text), _CHUNK)] or [""]
        if len(chunks) > _MAX_CHUNKS:
            raise MlopsServiceError(f"The {self.kind} record {self.key!r} grew over {len(text)} characters.")
        nonce = uuid.uuid4().hex
        params = [Param(f"rev.{rev}", f"{nonce} {len(chunks)}")]
        params += [Param(f"state.{rev}.{i}", c) for i, c in enumerate(chunks)]
        run_id = self.run_id() or self._create_run()
        last_error: Exception | None = None
        for _attempt in range(3):
            try:
                self.client.log_batch(run_id, params=params)
                return
            except MlflowException as e:
                last_error = e
            got = self._params().get(f"rev.{rev}")
            if got is not None:
                if got.split()[0] == nonce:
                    return  # the write landed; only its answer was lost
                raise StateConflictError(
                    f"The {self.kind} record {self.key!r} was changed by another operation meanwhile "
                    f"(revision {rev} is taken): read it again and retry."
                )
        raise MlopsServiceError(
            f"MLflow refused to record revision {rev} of the {self.kind} record {self.key!r}: {last_error}"
        )

    def append(self, value: Any, attempts: int = 20) -> int:
        """Append ``value`` as the next revision, retrying on conflicts (appends commute).

        :return: the revision written.
        """
        for _ in range(attempts):
            rev, _value = self.read()
            try:
                self.write(rev + 1, value)
                return rev + 1
            except StateConflictError:
                time.sleep(secrets.randbelow(50) / 1000)  # spread racing appenders
        raise StateConflictError(f"Could not append to the {self.kind} record {self.key!r}: too busy.")


class DeploymentRecords:
    """Deployment states in MLflow, changed by compare-and-set (what every worker sees).

    :param target: the MLflow store.
    """

    def __init__(self, target: MlflowTarget) -> None:
        self.target = target
        self._client: MlflowClient | None = None
        self._records: dict[str, CasRecord] = {}

    @property
    def client(self) -> MlflowClient:
        """The MLflow client (credentials come with the target's client)."""
        if self._client is None:
            self._client = self.target.client()
        return self._client

    def _record(self, name: str) -> CasRecord:
        # One record object per name: a save writes into the run generation its load found.
        if name not in self._records:
            self._records[name] = CasRecord(
                self.client, "deployment", check_name(name), self.target.artifact_location
            )
        return self._records[name]

    def load(self, name: str) -> tuple[DeploymentState | None, int]:
        """``(state, revision)``; ``(None, revision)`` when never deployed or torn down."""
        rev, raw = self._record(name).read()
        if raw is None:
            return None, rev
        try:
            return DeploymentState.from_json(raw), rev
        except (TypeError, ValueError) as e:
            raise MlopsInputError(
                f"Deployment record {name!r} in MLflow is unreadable ({e}): tear the deployment down "
                "(its gateway may need stopping by hand)."
            ) from e

    def save(self, state: DeploymentState | None, name: str, rev: int) -> int:
        """Write the next revision after ``rev`` (None: the deployment is gone); return it.

        :raises StateConflictError: another operation wrote since ``rev`` was read.
        """
        self._record(name).write(rev + 1, None if state is None else state.to_json())
        return rev + 1


class StateStore:
    """This worker's work folder for deployments: gateway config files, logs, and the admin token of a
    gateway this worker generated one for. Not the state of record (see :class:`DeploymentRecords`).

    :param root: the folder (created with mode 0700).
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root else default_state_dir()

    def workdir(self, name: str) -> Path:
        """A folder for the deployment's files (config, gateway log); created on demand."""
        d = self.root / check_name(name)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        return d

    def _token_path(self, name: str) -> Path:
        return self.root / f"{check_name(name)}.admin-token"

    def local_token(self, name: str) -> str | None:
        """The admin token this worker generated for ``name``, if any."""
        try:
            return self._token_path(name).read_text().strip() or None
        except OSError:
            return None

    def new_local_token(self, name: str) -> str:
        """Generate an admin token for a gateway about to start here; keep it in a 0600 file."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        token = secrets.token_urlsafe(24)
        path = self._token_path(name)
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token)
        os.replace(tmp, path)
        return token

    def forget(self, name: str) -> None:
        """Remove the local token file (after teardown)."""
        self._token_path(name).unlink(missing_ok=True)
