"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``).

The connection forms (``conn-fields``, ``ui-field-behaviour``) are declared here: Airflow 3.2+ builds the
UI's ``/ui/connections/hook_meta`` from them without importing the hooks.
"""

from __future__ import annotations

from typing import Any

from airflow_mlops import __version__

_INTEGRATIONS = {
    "MLflow": "https://mlflow.org/docs/latest/",
    "DVC": "https://dvc.org/doc",
    "Prometheus": "https://prometheus.io/docs/",
    "Dask": "https://distributed.dask.org/",
    "MLOps": "https://github.com/airflow-provider-mlops/airflow-provider-mlops",
}


def _modules(integration: str, *modules: str) -> dict[str, Any]:
    return {"integration-name": integration, "python-modules": [f"airflow_mlops.{m}" for m in modules]}


def _field(label: str, description: str) -> dict[str, Any]:
    """A string extra of a connection form (stored in the connection's extra under its key)."""
    return {"label": label, "description": description, "schema": {"type": ["string", "null"]}}


def get_provider_info() -> dict[str, Any]:
    """Describe this provider: integrations, hooks, operators, sensors, triggers, connection types."""
    return {
        "package-name": "airflow-provider-mlops",
        "name": "MLOps",
        "description": "Train, gate, deploy and monitor machine-learning models with MLflow, DVC and Prometheus.",
        "versions": [__version__],
        "integrations": [
            {"integration-name": name, "external-doc-url": url, "tags": ["software"]}
            for name, url in _INTEGRATIONS.items()
        ],
        "hooks": [
            _modules("MLflow", "hooks.mlflow"),
            _modules("DVC", "hooks.dvc"),
            _modules("Prometheus", "hooks.pushgateway"),
            _modules("Prometheus", "hooks.prometheus"),
            _modules("Dask", "hooks.dask"),
        ],
        "sensors": [_modules("MLOps", "sensors.drift", "sensors.validation_gate")],
        "triggers": [_modules("MLOps", "triggers.drift", "triggers.validation_gate")],
        "operators": [_modules("MLOps", "operators.train", "operators.deploy")],
        "connection-types": [
            {
                "connection-type": "mlflow",
                "hook-class-name": "airflow_mlops.hooks.mlflow.MlflowHook",
                "hook-name": "MLflow",
                "conn-fields": {
                    "registry_uri": _field("Registry URI", "model registry URI, when not the tracking URI"),
                    "artifact_location": _field(
                        "Artifact location", "artifact root of experiments created on a local store"
                    ),
                    "ui_url": _field("UI URL", "base URL of the MLflow UI, for links from Airflow"),
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema"],
                    "relabeling": {
                        "host": "Tracking URI",
                        "login": "Username",
                        "password": "Password or token",
                    },
                    "placeholders": {
                        "host": "http://mlflow:5000 or sqlite:////opt/airflow/mlflow/mlflow.db",
                        "port": "5000 (when the host has no port)",
                        "login": "basic-auth user (leave empty for a token)",
                        "password": "basic-auth password, or a bearer token when the username is empty",
                    },
                },
            },
            {
                "connection-type": "dvc",
                "hook-class-name": "airflow_mlops.hooks.dvc.DvcHook",
                "hook-name": "DVC",
                "conn-fields": {
                    "rev": _field("Default revision", "git revision read when a task gives none (e.g. main)"),
                    "remote": _field("DVC remote", "name of the DVC remote to read from and push to"),
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "login", "password"],
                    "relabeling": {"host": "Repository (path or git URL)"},
                    "placeholders": {"host": "/opt/airflow/data-repo or https://github.com/org/data.git"},
                },
            },
            {
                "connection-type": "pushgateway",
                "hook-class-name": "airflow_mlops.hooks.pushgateway.PushgatewayHook",
                "hook-name": "Prometheus Pushgateway",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "extra"],
                    "relabeling": {"host": "Pushgateway URL", "login": "Username", "password": "Password"},
                    "placeholders": {"host": "http://pushgateway", "port": "9091"},
                },
            },
            {
                "connection-type": "prometheus",
                "hook-class-name": "airflow_mlops.hooks.prometheus.PrometheusHook",
                "hook-name": "Prometheus",
                "conn-fields": {
                    "timeout": {
                        "label": "Timeout (seconds)",
                        "description": "per-query timeout",
                        "schema": {"type": ["number", "null"], "default": 10},
                    },
                    "verify": {
                        "label": "Verify TLS certificates",
                        "description": "turn off only for self-signed test servers",
                        "schema": {"type": ["boolean", "null"], "default": True},
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema"],
                    "relabeling": {"host": "Base URL", "login": "Username", "password": "Password or token"},
                    "placeholders": {
                        "host": "http://prometheus:9090",
                        "port": "9090 (when the host has no port)",
                        "login": "basic-auth user (leave empty for a bearer token)",
                        "password": "basic-auth password, or a bearer token when the username is empty",
                    },
                },
            },
            {
                "connection-type": "dask",
                "hook-class-name": "airflow_mlops.hooks.dask.DaskHook",
                "hook-name": "Dask",
                "ui-field-behaviour": {
                    "hidden-fields": ["login", "password", "extra"],
                    "relabeling": {"host": "Scheduler address", "schema": "Protocol"},
                    "placeholders": {
                        "host": "tcp://dask-scheduler:8786 (or a bare host)",
                        "port": "8786 (when the host has no port)",
                        "schema": "tcp (default) or tls",
                    },
                },
            },
        ],
        "extra-links": [
            "airflow_mlops.links.mlflow.MlflowRunLink",
            "airflow_mlops.links.mlflow.MlflowModelVersionLink",
            "airflow_mlops.links.drift.DriftReportLink",
            "airflow_mlops.links.gateway.GatewayMetricsLink",
        ],
    }
