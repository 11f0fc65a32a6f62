"""How the provider's errors become Airflow outcomes, in one place for every operator, sensor and trigger.

Bad input (:class:`~airflow_mlops.core.errors.MlopsInputError`) fails the task at once: a retry would
read the same input. Service errors keep Airflow's retries. Every message is redacted (no credentials in
URLs) before Airflow logs or stores it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from airflow_mlops.core.errors import MlopsInputError, MlopsServiceError
from airflow_mlops.core.redact import redact, url_secrets


def mask_secrets(*values: object) -> None:
    """Register credentials found in URLs (and the given secret values) with Airflow's secrets masker, so
    that the task log never shows them.

    :param values: URLs or secrets; None and empty values are ignored.
    """
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - older task SDKs
        from airflow.sdk.execution_time.secrets_masker import mask_secret  # type: ignore[no-redef]
    for value in values:
        if not value:
            continue
        for secret in url_secrets(value) or ([str(value)] if "://" not in str(value) else []):
            mask_secret(secret)


@contextmanager
def airflow_errors() -> Iterator[None]:
    """Map the provider's errors to Airflow's: bad input fails without retries; service errors retry.

    Messages are redacted either way.
    """
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    try:
        yield
    except MlopsInputError as e:
        raise AirflowFailException(redact(e)) from None
    except MlopsServiceError as e:
        raise AirflowException(redact(e)) from None
