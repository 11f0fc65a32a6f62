"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``)."""

from __future__ import annotations

from typing import Any

from airflow_mlops import __version__

_INTEGRATIONS = {
    "MLflow": "https://mlflow.org/docs/latest/",
    "DVC": "https://dvc.org/doc",
    "Prometheus": "https://prometheus.io/docs/",
    "MLOps": "https://github.com/airflow-provider-mlops/airflow-provider-mlops",
}


def _modules(integration: str, *modules: str) -> dict[str, Any]:
    return {"integration-name": integration, "python-modules": [f"airflow_mlops.{m}" for m in modules]}


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
        ],
        "sensors": [_modules("MLOps", "sensors.drift", "sensors.validation_gate")],
        "triggers": [_modules("MLOps", "triggers.drift", "triggers.validation_gate")],
        "operators": [_modules("MLOps", "operators.train", "operators.deploy")],
        "connection-types": [
            {
                "connection-type": "mlflow",
                "hook-class-name": "airflow_mlops.hooks.mlflow.MlflowHook",
                "hook-name": "MLflow",
            },
            {
                "connection-type": "dvc",
                "hook-class-name": "airflow_mlops.hooks.dvc.DvcHook",
                "hook-name": "DVC",
            },
            {
                "connection-type": "pushgateway",
                "hook-class-name": "airflow_mlops.hooks.pushgateway.PushgatewayHook",
                "hook-name": "Prometheus Pushgateway",
            },
            {
                "connection-type": "prometheus",
                "hook-class-name": "airflow_mlops.hooks.prometheus.PrometheusHook",
                "hook-name": "Prometheus",
            },
        ],
        "extra-links": ["airflow_mlops.links.mlflow.MlflowRunLink"],
    }
