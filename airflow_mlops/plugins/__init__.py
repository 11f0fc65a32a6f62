"""The provider's Airflow plugin (entry point ``airflow.plugins``): FastAPI apps mounted on the api-server
and the views they add to the Airflow UI. No Flask or FAB: Airflow 3.1+ ``fastapi_apps`` and
``external_views``.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_mlops.plugins import releases, webhooks


class MlopsPlugin(AirflowPlugin):
    """The releases view (``/mlops-releases/``, "Model releases" in the UI's Browse menu)."""

    name = "airflow_mlops"
    fastapi_apps = [
        {"app": releases.app, "url_prefix": releases.URL_PREFIX, "name": "MLOps releases"},
        # MLflow registry webhooks -> Asset events (POST /mlops/webhooks/mlflow).
        {"app": webhooks.app, "url_prefix": webhooks.URL_PREFIX, "name": "MLOps MLflow webhooks"},
    ]
    external_views = [releases.EXTERNAL_VIEW]
