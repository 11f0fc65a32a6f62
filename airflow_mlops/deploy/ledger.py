"""The promotion ledger: who promoted (or rolled back) which version, when, from which, in which DAG run.

Two places in the registry: tags on the model version (its latest ledger facts) and a JSON history tag on
the registered model (every entry, newest last, trimmed to fit MLflow's tag size limit).
"""

from __future__ import annotations

import getpass
import json
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

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
        ``rollback`` or ``rollback_auto`` (after a failed health check).
    :param version: the version deployed (or restored, for a rollback).
    :param from_version: the champion before.
    :param strategy: rollout strategy.
    :param actor: who: a user name or ``airflow:<dag_id>``.
    :param dag_run: ``dag_id/run_id/task_id`` when run by Airflow.
    :param endpoint: the gateway URL.
    :param reason: why (for rollbacks).
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
    at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, without empty fields."""
        return {k: v for k, v in asdict(self).items() if v is not None}


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def read_history(client: MlflowClient, model_name: str) -> list[dict[str, Any]]:
    """The ledger history of ``model_name`` (oldest first); empty when none was recorded."""
    tags = client.get_registered_model(model_name).tags or {}
    try:
        history = json.loads(tags.get(HISTORY_TAG, "[]"))
    except ValueError:
        return []  # a hand-edited tag: start over rather than fail a deploy
    return history if isinstance(history, list) else []


def record(client: MlflowClient, model_name: str, entry: LedgerEntry) -> list[dict[str, Any]]:
    """Add ``entry`` to the ledger: tags on its version, and the history on the registered model.

    Callers hold the deployment lock, so the read-modify-write of the history does not race with
    another deploy of the same deployment.

    :return: the history after the write.
    """
    item = entry.to_dict()
    tags = {f"{VERSION_TAG_PREFIX}{k}": str(v) for k, v in item.items() if k != "version"}
    for key, value in tags.items():
        client.set_model_version_tag(model_name, entry.version, key, value)
    history = [*read_history(client, model_name), item]
    text = json.dumps(history, sort_keys=True)
    while len(text) > MAX_HISTORY_CHARS and len(history) > 1:
        history = history[1:]  # the oldest entries go first; each version keeps its own tags
        text = json.dumps(history, sort_keys=True)
    client.set_registered_model_tag(model_name, HISTORY_TAG, text)
    return history
