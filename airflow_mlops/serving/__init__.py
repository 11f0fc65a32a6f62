"""The model gateway: serves MLflow-registered scikit-learn models over HTTP with progressive
delivery (replace, canary, shadow, A/B, bandit), live quality metrics, and a prediction log.

Run it with ``python -m airflow_mlops.serving``; talk to it with :class:`GatewayClient`. This package
never imports Airflow.
"""

from __future__ import annotations

from airflow_mlops.serving.client import GatewayClient, GatewayError
from airflow_mlops.serving.config import STRATEGIES, DeploymentConfig, Route, load_config

__all__ = ["STRATEGIES", "DeploymentConfig", "GatewayClient", "GatewayError", "Route", "load_config"]
