"""The promotion ledger: who promoted (or rolled back) which version, when, from which, in which DAG run.

Three places in MLflow: tags on the model version (its latest ledger facts); an append-only log of record
(a :class:`~airflow_mlops.deploy.state.CasRecord`, one revision per entry, never trimmed); and a JSON tag
on the registered model (``mlops.promotion_history``: the newest entries that fit MLflow's tag size
limit), derived from the log for readers of the registry.
"""

from __future__ import annotations

import getpass
import json
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_mlops.deploy.state import CasRecord

if TYPE_CHECKING:
    from mlflow import MlflowClient

HISTORY_TAG = "mlops.promotion_history"
# MLflow caps a tag value at 5000 characters on some stores; stay under it.
MAX_HISTORY_CHARS = 4900
VERSION_TAG_PREFIX = "mlops.deploy."


@dataclass
class LedgerEntry:
    """One deploy or rollback.

    :param action: ``promote`` (champion moved), ``deploy`` (routing changed, champion kept),
        ``rollback`` or ``rollback_auto`` (after a failed health check), ``approval`` (a human's answer
        to a release approval; ``actor`` is who answered, ``decision`` the answer).
    :param version: the version deployed; for a rollback, the version restored, or the version rolled
        back when nothing served before it (``serving`` is then ``none``).
    :param from_version: the champion before.
    :param strategy: rollout strategy.
    :param actor: who: a user name or ``airflow:<dag_id>``.
    :param dag_run: ``dag_id/run_id/task_id`` when run by Airflow.
    :param endpoint: the gateway URL.
    :param reason: why (for rollbacks).
    :param rolled_back: rollbacks: the version taken out of traffic.
    :param serving: rollbacks: the version that serves after it, ``none`` when nothing serves.
    :param decision: approvals: ``promote``, ``keep`` (the canary keeps its share for longer) or ``rollback``.
    :param at: UTC time, ISO 8601.
    """

    action: str
    version: str
    from_version: str | None
    strategy: str
    actor: str = field(default_factory=lambda: _user())
    dag_run: str | None = None
    endpoint: str | None = None
    reason: str | None = None
    rolled_back: str | None = None
    serving: str | None = None
    decision: str | None = None
    at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, without empty fields."""
        return {k: v for k, v in asdict(self).items() if v is not None}


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _log(client: MlflowClient, model_name: str) -> CasRecord:
    return CasRecord(client, "ledger", model_name)


def read_history(client: MlflowClient, model_name: str) -> list[dict[str, Any]]:
    """The whole ledger of ``model_name`` (oldest first), from its append-only log; empty when none.

    Models recorded before the log existed fall back to the (trimmed) history tag.
    """
    entries = _log(client, model_name).read_all()
    if entries:
        return [e for e in entries if isinstance(e, dict)]
    tags = client.get_registered_model(model_name).tags or {}
    try:
        history = json.loads(tags.get(HISTORY_TAG, "[]"))
    except ValueError:
        return []  # a hand-edited tag: start over rather than fail a deploy
    return history if isinstance(history, list) else []


def _recent(history: list[dict[str, Any]]) -> str:
    """The newest entries that fit MLflow's tag size limit, as JSON (oldest first)."""
    kept: list[dict[str, Any]] = []
    for item in reversed(history):
        if len(json.dumps([item, *kept], sort_keys=True)) > MAX_HISTORY_CHARS:
            break
        kept.insert(0, item)
    return json.dumps(kept, sort_keys=True)


def _set_version_tag(client: MlflowClient, model_name: str, version: str, key: str, value: str) -> None:
    """Set a version tag; two writers creating the same tag at once make the SQL store's insert fail
    once (a unique-key race inside MLflow): the second try updates the row the first writer made."""
    from mlflow.exceptions import MlflowException

    for attempt in range(3):
        try:
            client.set_model_version_tag(model_name, version, key, value)
            return
        except MlflowException as e:
            if ("UNIQUE constraint" not in str(e) and "IntegrityError" not in str(e)) or attempt == 2:
                raise


def record(client: MlflowClient, model_name: str, entry: LedgerEntry) -> list[dict[str, Any]]:
    """Add ``entry`` to the ledger: tags on its version, an append to the model's log of record (never
    trimmed; concurrent writers each get their own revision), and the derived recent-history tag.

    :return: the whole history after the write.
    """
    item = entry.to_dict()
    tags = {f"{VERSION_TAG_PREFIX}{k}": str(v) for k, v in item.items() if k != "version"}
    for key, value in tags.items():
        _set_version_tag(client, model_name, entry.version, key, value)
    log = _log(client, model_name)
    log.append(item)
    # The tag is a view of the log: rewrite it until what it shows is what the log holds, so that a
    # writer that read an older log cannot leave its older view last.
    for _ in range(5):
        history = read_history(client, model_name)
        client.set_registered_model_tag(model_name, HISTORY_TAG, _recent(history))
        if len(read_history(client, model_name)) == len(history):
            break
    return history
