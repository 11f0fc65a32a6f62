"""Event-driven releases without webhooks: an ``AssetWatcher`` polls the MLflow registry from Airflow's
triggerer (new version, alias moved) where MLflow's webhooks cannot reach Airflow (a private network,
an MLflow older than 3.3, a file store).

Each change becomes an Asset event of ``mlops://registry/<model>/watch`` (extra ``payload``: ``event``,
``model``, ``version``, ``alias``); this DAG is scheduled on it. ``MLOPS_WATCH_INTERVAL`` sets the
poll interval (seconds, default 60).

Connections: ``mlflow_default``. Settings: ``dags/mlops_common``.
"""

from __future__ import annotations

import datetime
import os

from airflow.sdk import DAG, Asset, AssetWatcher, task
from mlops_common import MODEL

from airflow_mlops.core.registry_events import registry_asset_uri
from airflow_mlops.triggers.registry import RegistryEventTrigger

# [START howto_registry_watcher]
WATCHED = Asset(
    f"{registry_asset_uri(MODEL)}/watch",
    watchers=[
        AssetWatcher(
            name=f"mlflow_registry_{MODEL}",
            trigger=RegistryEventTrigger(
                model_name=MODEL,
                mlflow_conn_id="mlflow_default",
                poll_interval=float(os.environ.get("MLOPS_WATCH_INTERVAL", "60")),
            ),
        )
    ],
)

with DAG(
    "mlops_registry_watcher",
    schedule=[WATCHED],
    start_date=datetime.datetime(2024, 1, 1),
    catchup=False,
    tags=["mlops", "example"],
) as dag:

    @task(inlets=[WATCHED])
    def on_registry_change(*, triggering_asset_events=None) -> list[dict]:
        """The registry changes the watcher saw (the trigger's payload)."""
        events = [dict(e.extra.get("payload", {})) for e in triggering_asset_events[WATCHED]]
        for event in events:
            print(f"registry change: {event}")
        return events

    on_registry_change()
# [END howto_registry_watcher]
