"""Extra link from a task to its MLflow run."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

XCOM_RUN_URL = "mlflow_run_url"


class MlflowRunLink(BaseOperatorLink):
    """Opens the MLflow run that the task logged (its URL is pushed to XCom by the task)."""

    name = "MLflow run"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        """The run's URL in the MLflow UI, or an empty string before the task ran."""
        from airflow.sdk.execution_time.xcom import XCom

        return XCom.get_value(ti_key=ti_key, key=XCOM_RUN_URL) or ""
