"""Event-driven releases from MLflow webhooks: a DAG that runs when the model registry changes.

MLflow (3.3+, SQL backend store) delivers ``model_version.created``, ``model_version_alias.created``
and ``model_version_tag.set`` to the provider's plugin on the api-server
(``POST <airflow>/mlops/webhooks/mlflow``), which checks the HMAC signature and emits an Asset event
of ``mlops://registry/<model>``; this DAG is scheduled on it. Set up the webhook once::

    from mlflow import MlflowClient
    from mlflow.entities.webhook import WebhookEvent

    MlflowClient("http://mlflow:5000").create_webhook(
        name="airflow", url="https://airflow.example.com/mlops/webhooks/mlflow",
        events=[WebhookEvent("model_version", "created"), WebhookEvent("model_version_alias", "created")],
        secret="<the Airflow Variable mlops_mlflow_webhook_secret>",
    )

Settings: ``dags/mlops_common`` (the model name).
"""

from __future__ import annotations

import datetime

from airflow.sdk import DAG, Asset, task
from mlops_common import MODEL

from airflow_mlops.core.registry_events import registry_asset_uri

# [START howto_registry_webhook]
REGISTRY = Asset(registry_asset_uri(MODEL))

with DAG(
    "mlops_registry_webhook",
    schedule=[REGISTRY],  # an Asset event from the webhook plugin queues a run
    start_date=datetime.datetime(2024, 1, 1),
    catchup=False,
    tags=["mlops", "example"],
) as dag:

    @task(inlets=[REGISTRY])
    def on_registry_event(*, triggering_asset_events=None) -> list[dict]:
        """What changed in the registry: ``event``, ``model``, ``version``, ``alias``, ``key``, ``value``."""
        events = [dict(e.extra) for e in triggering_asset_events[REGISTRY]]
        for event in events:
            print(f"registry event: {event}")
        return events

    on_registry_event()
# [END howto_registry_webhook]
