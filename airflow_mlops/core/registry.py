"""Model-registry helpers shared by every operator and the CLI: aliases, compare-and-set, tags."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.errors import MlopsConflictError, MlopsInputError

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

CHAMPION = "champion"


class AliasConflictError(MlopsConflictError):
    """The alias moved since the caller read it: someone else promoted a model meanwhile."""


def get_version_by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """Return the version behind ``name@alias``, or None when the alias is not set.

    :param client: an MLflow client.
    :param name: registered model name.
    :param alias: alias such as ``champion``.
    :raises MlopsInputError: the alias points to a version that was deleted.
    """
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException as e:
        if "RESOURCE_DOES_NOT_EXIST" in str(e.error_code):
            return None
        raise
    version = (model.aliases or {}).get(alias)
    if version is None:
        return None
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as e:
        raise MlopsInputError(
            f"Alias {name}@{alias} points to version {version}, which no longer exists: "
            f"set the alias to a live version or delete it."
        ) from e


def alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version number behind ``name@alias`` as a string, or None."""
    mv = get_version_by_alias(client, name, alias)
    return None if mv is None else str(mv.version)


def compare_and_set_alias(
    client: MlflowClient, name: str, alias: str, version: str | int, expected: str | int | None
) -> None:
    """Point ``name@alias`` at ``version`` only if it still points at ``expected`` (None: unset).

    The registry has no transaction; the check right before the write narrows the race to the
    width of one request, and the read-back after it detects a writer that slipped in.

    :param client: an MLflow client.
    :param name: registered model name.
    :param alias: alias to move.
    :param version: the version it should point at.
    :param expected: the version it must point at now (None when it must be unset).
    :raises AliasConflictError: the alias moved meanwhile; nothing was changed.
    """
    expected_s = None if expected is None else str(expected)
    current = alias_version(client, name, alias)
    if current == str(version):
        return  # already done: an idempotent retry
    if current != expected_s:
        raise AliasConflictError(
            f"{name}@{alias} points to version {current}, not {expected_s} as expected: another promotion "
            "happened meanwhile. Re-run the gate against the new champion."
        )
    client.set_registered_model_alias(name, alias, str(version))


def tag_version(client: MlflowClient, name: str, version: str | int, tags: dict[str, Any]) -> None:
    """Set tags on a model version; non-string values are stored as JSON.

    :param client: an MLflow client.
    :param name: registered model name.
    :param version: model version.
    :param tags: tag names and values.
    """
    for key, value in tags.items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        client.set_model_version_tag(name, str(version), key, text)


# The registered-model tag holding the promotion ledger (airflow_mlops.deploy.ledger.HISTORY_TAG).
PROMOTION_HISTORY_TAG = "mlops.promotion_history"


def _history_beyond(tags: dict[str, str], version: str) -> bool:
    """Whether the promotion history tag records anything but ``version`` itself deployed from nothing
    (a first model held as a canary for its online gate is still a new model)."""
    import json

    raw = tags.get(PROMOTION_HISTORY_TAG)
    if not raw:
        return False
    try:
        entries = json.loads(raw)
    except ValueError:
        return True
    if not isinstance(entries, list):
        return True
    return any(
        not isinstance(e, dict) or str(e.get("version")) != version or e.get("from_version") not in (None, "")
        for e in entries
    )


def signs_of_history(client: MlflowClient, name: str, version: str | int) -> list[str]:
    """Why ``name`` is not a new model as seen from ``version``: other live versions, version numbers
    below it (MLflow numbers versions from 1, so they existed once), or a promotion ledger.

    Empty when ``version`` is the only version the model ever had, as far as the registry shows.

    :param client: an MLflow client.
    :param name: registered model name.
    :param version: the candidate version.
    """
    model = client.get_registered_model(name)
    signs: list[str] = []
    others = sorted(
        {str(mv.version) for mv in (model.latest_versions or []) if str(mv.version) != str(version)},
        key=lambda v: int(v) if v.isdigit() else 0,
    )
    if others:
        signs.append(f"it has other versions ({', '.join('v' + v for v in others)})")
    if (
        str(version).isdigit()
        and int(version) > 1
        and not any(int(v) < int(version) for v in others if v.isdigit())
    ):
        earlier = "version 1" if int(version) == 2 else f"versions 1 to {int(version) - 1}"
        signs.append(f"{earlier} existed before v{version}")
    if _history_beyond(model.tags or {}, str(version)):
        signs.append(f"it has a promotion history (tag {PROMOTION_HISTORY_TAG})")
    return signs
