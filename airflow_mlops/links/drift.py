"""Extra link from a DriftSensor to the HTML drift report it logged to MLflow."""

from __future__ import annotations

from airflow_mlops.links.base import XComLink

XCOM_DRIFT_REPORT_URL = "drift_report_url"


class DriftReportLink(XComLink):
    """Opens the newest drift report of the task (``mlflow_report``) in the MLflow UI."""

    name = "Drift report"
    url_key = XCOM_DRIFT_REPORT_URL


# The HTML report a drift check logs (airflow_mlops.core.drift.evaluate.REPORT_HTML, which imports numpy).
REPORT_HTML = "drift/report.html"


def report_url(run_url: str | None) -> str | None:
    """The HTML report inside a drift report run's page of the MLflow UI (None for None)."""
    return f"{run_url}/artifactPath/{REPORT_HTML}" if run_url else None
