"""What each operator and sensor pushes for its extra links, in one place (called while the task runs)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from airflow_mlops.links.base import push_link
from airflow_mlops.links.drift import XCOM_DRIFT_REPORT_URL, report_url
from airflow_mlops.links.gateway import XCOM_GATEWAY_METRICS_URL, metrics_url
from airflow_mlops.links.mlflow import XCOM_MODEL_VERSION_URL

if TYPE_CHECKING:
    from airflow_mlops.core.tracking import MlflowTarget


def gate_links(context: Any, target: MlflowTarget, spec: Any, verdict: Any) -> None:
    """ValidationGateSensor: the gated version; the gateway's metrics page when that is the evidence.

    :param context: the task's context.
    :param target: the MLflow store.
    :param spec: the gate's :class:`~airflow_mlops.core.gate.GateSpec`.
    :param verdict: the decided :class:`~airflow_mlops.core.gate.Verdict`.
    """
    push_link(XCOM_MODEL_VERSION_URL, target.model_version_url(verdict.model_name, verdict.version), context)
    source = getattr(spec, "source", None)
    if getattr(source, "kind", None) == "metrics_url":
        push_link(XCOM_GATEWAY_METRICS_URL, source.url, context)  # type: ignore[union-attr]


def deploy_links(target: MlflowTarget, result: dict[str, Any]) -> None:
    """DeployOperator: the deployed (or restored) version and the gateway's metrics page.

    :param target: the MLflow store.
    :param result: the operator's XCom (:class:`~airflow_mlops.deploy.rollout.DeployResult` as a dict).
    """
    version = result.get("version") or result.get("champion")
    if version:
        push_link(XCOM_MODEL_VERSION_URL, target.model_version_url(result["model_name"], version))
    push_link(XCOM_GATEWAY_METRICS_URL, metrics_url(result.get("endpoint")))


def drift_links(
    target: Callable[[], MlflowTarget], summary: dict[str, Any], model_name: str | None, context: Any
) -> None:
    """DriftSensor: the report it logged (``report_run_id``) and the reference version.

    :param target: resolves the MLflow store (called only when there is something to link).
    :param summary: the drift check's summary.
    :param model_name: the registered model, when the reference is a model version.
    :param context: the task's context.
    """
    run_id = summary.get("report_run_id")
    version = summary.get("model_version") if model_name else None
    if not (run_id or version):
        return
    store = target()
    if model_name and version:
        push_link(XCOM_MODEL_VERSION_URL, store.model_version_url(model_name, version), context)
    if run_id:
        experiment = store.client().get_run(run_id).info.experiment_id
        push_link(XCOM_DRIFT_REPORT_URL, report_url(store.run_url(experiment, run_id)), context)
