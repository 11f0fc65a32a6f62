"""Extra links whose URL the task itself pushed to XCom while it ran (the only place a link can find it:
``get_link`` runs in the api-server, on the serialized operator, without the task's connections)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator, Context
    from airflow.sdk.types import TaskInstanceKey


class XComLink(BaseOperatorLink):
    """A link to the URL the task pushed to its XCom ``url_key``; empty (no button) when it pushed none.

    Airflow calls :meth:`get_link` when the task ends and stores the result under the link's own
    ``xcom_key`` (``_link_<class>``), which the api-server reads.
    """

    name: ClassVar[str] = ""
    url_key: ClassVar[str] = ""

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        """The URL the task pushed, or an empty string."""
        from airflow.sdk.execution_time.xcom import XCom

        return XCom.get_value(ti_key=ti_key, key=self.url_key) or ""


def push_link(key: str, url: str | None, context: Context | Any | None = None) -> None:
    """Push a link's URL (credentials in it masked) for :class:`XComLink` ``key``.

    :param key: the link's ``url_key``.
    :param url: the URL; None or empty pushes nothing.
    :param context: the task's context (default: the running task's).
    """
    if not url:
        return
    from airflow_mlops.core.redact import redact

    if context is None:
        from airflow.sdk import get_current_context

        context = get_current_context()
    context["ti"].xcom_push(key=key, value=redact(url))
