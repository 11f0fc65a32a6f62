"""DriftTrigger, and :func:`evaluate_drift`: the one evaluation that DriftSensor's ``poke`` and the
trigger both run.

The evaluation spec is a JSON-able mapping (so the trigger serializes it as is):

``current``: ``{"path": file-or-folder}`` | ``{"dvc_path": path, "rev": rev}`` |
``{"prediction_log": log_dir, "window_seconds": 3600, "window_end": iso-or-None}``;
``reference``: ``{"path": file-or-folder}`` (raw data, or a ``.json`` profile) |
``{"model_name": name, "version": v}`` | ``{"model_name": name, "alias": "champion"}`` (the profile logged
with the version's run); ``model_name`` (metric label, prediction-log folder); ``config`` (the
:class:`~airflow_mlops.core.drift.DriftConfig` fields); ``chunk_rows``; connection ids
``mlflow_conn_id``, ``dvc_conn_id``, ``pushgateway_conn_id`` (None: no push); ``mlflow_report``
(``on_drift`` | ``always`` | ``never``) and ``report_experiment``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_mlops.core.errors import MlopsInputError, MlopsServiceError
from airflow_mlops.triggers.events import error_event

REPORT_JSON = "drift/report.json"
REPORT_HTML = "drift/report.html"


def _load_reference(spec: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The reference (a DataFrame or a profile) and facts about where it came from."""
    from airflow_mlops.core.drift.profile import PROFILE_ARTIFACT, build_profile, load_profile

    ref = spec.get("reference") or {}
    if ref.get("path"):
        path = str(ref["path"])
        if path.endswith(".json"):
            try:
                with open(path, encoding="utf-8") as f:
                    return load_profile(f.read()), {"reference": path}
            except FileNotFoundError as e:
                raise MlopsInputError(
                    f"Reference profile {path} does not exist: check reference_path."
                ) from e
        from airflow_mlops.core.data import read_table

        return read_table(path), {"reference": path}
    name = ref.get("model_name")
    if not name:
        raise MlopsInputError("No reference: give reference_path, or model_name with a version or alias.")
    import tempfile
    from pathlib import Path

    from airflow_mlops.core import registry
    from airflow_mlops.hooks.mlflow import MlflowHook

    hook = MlflowHook(spec.get("mlflow_conn_id") or "mlflow_default")
    with hook.activate():
        client = hook.get_conn()
        try:
            if ref.get("version"):
                mv = client.get_model_version(name, str(ref["version"]))
            else:
                alias = ref.get("alias") or registry.CHAMPION
                mv = registry.get_version_by_alias(client, name, alias)
                if mv is None:
                    raise MlopsInputError(
                        f"Model {name!r} has no version with alias @{alias}: set the alias, or give model_version."
                    )
        except MlopsInputError:
            raise
        except Exception as e:  # noqa: BLE001 - MLflow's errors, reworded with the fix
            if "RESOURCE_DOES_NOT_EXIST" in str(e) or "not found" in str(e).lower():
                raise MlopsInputError(
                    f"Model version {name} {ref.get('version') or '@' + str(ref.get('alias'))} does not exist "
                    f"in MLflow ({e}): check model_name and model_version."
                ) from e
            raise MlopsServiceError(f"MLflow could not be asked for model {name!r}: {e}") from e
        facts = {
            "reference": f"models:/{name}/{mv.version}",
            "model_version": str(mv.version),
            "run_id": mv.run_id,
        }
        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = client.download_artifacts(mv.run_id, PROFILE_ARTIFACT, tmp)
                return load_profile(Path(local).read_text(encoding="utf-8")), facts
            except MlopsInputError:
                raise
            except Exception:  # noqa: BLE001 - older runs: fall back to the logged training sample
                pass
            try:
                from airflow_mlops.core.model_logging import REFERENCE_SAMPLE_ARTIFACT

                local = client.download_artifacts(mv.run_id, REFERENCE_SAMPLE_ARTIFACT, tmp)
                import pandas as pd

                facts["note"] = "no reference profile in the run: built from its training sample"
                return build_profile(pd.read_parquet(local)), facts
            except Exception as e:  # noqa: BLE001
                raise MlopsInputError(
                    f"The run {mv.run_id} of {name} v{mv.version} has neither {PROFILE_ARTIFACT} nor a training "
                    "sample: retrain with TrainOperator (which logs the profile) or give reference_path."
                ) from e


def _load_current(spec: dict[str, Any], kinds: dict[str, str], facts: dict[str, Any]):  # noqa: ANN202
    from airflow_mlops.core.drift.current import summarize_frame, summarize_path, summarize_prediction_log

    cur = spec.get("current") or {}
    chunk_rows = int(spec.get("chunk_rows") or 250_000)
    if cur.get("path"):
        facts["current"] = str(cur["path"])
        return summarize_path(cur["path"], kinds, chunk_rows=chunk_rows)
    if cur.get("dvc_path"):
        from airflow_mlops.hooks.dvc import DvcHook

        frame, lineage = DvcHook(spec.get("dvc_conn_id") or "dvc_default").read_dataframe(
            cur["dvc_path"], cur.get("rev")
        )
        facts["current"] = f"dvc:{cur['dvc_path']}@{lineage.get('rev', cur.get('rev'))}"
        return summarize_frame(frame, kinds)
    if cur.get("prediction_log"):
        from datetime import datetime, timedelta, timezone

        end = cur.get("window_end")
        end_t = datetime.fromisoformat(end) if end else datetime.now(timezone.utc)
        seconds = float(cur.get("window_seconds") or 3600)
        if seconds <= 0:
            raise MlopsInputError(f"window={seconds}s is not positive: give a window of at least a second.")
        start_t = end_t - timedelta(seconds=seconds)
        model = spec.get("model_name") or (spec.get("reference") or {}).get("model_name")
        if not model:
            raise MlopsInputError("Reading the prediction log needs model_name (its folder in the log).")
        facts["current"] = (
            f"prediction log {cur['prediction_log']}/{model} [{start_t.isoformat()}, {end_t.isoformat()})"
        )
        return summarize_prediction_log(
            cur["prediction_log"], model, kinds, start_t, end_t, chunk_rows=chunk_rows
        )
    raise MlopsInputError("No current data: give current_path, current_dvc_path or prediction_log_dir.")


def evaluate_drift(spec: dict[str, Any], log: Any = None) -> dict[str, Any]:
    """Compare the current data with the reference once; push gauges and log the report as asked.

    :param spec: the evaluation spec (see the module docstring).
    :param log: a logger for the readable table (optional).
    :return: the report summary plus ``status`` (``drift`` | ``no_drift`` | ``empty``), the model
        facts, and ``report_run_id`` when a report was logged to MLflow.
    """
    from airflow_mlops.core.drift import DriftConfig, EmptyCurrentDataError, detect_drift
    from airflow_mlops.core.drift.columns import CATEGORICAL, column_kind
    from airflow_mlops.core.drift.report import summary_table

    config = DriftConfig(**(spec.get("config") or {}))
    reference, facts = _load_reference(spec)
    if isinstance(reference, dict):
        kinds = {n: c["kind"] for n, c in reference["columns"].items()}
    else:
        kinds = {c: column_kind(reference[c]) for c in (config.columns or reference.columns)}
    if config.columns is not None:
        kinds = {c: kinds.get(c, CATEGORICAL) for c in config.columns}
    current = _load_current(spec, kinds, facts)
    try:
        report = detect_drift(reference, current, config)
    except EmptyCurrentDataError as e:
        if log:
            log.info("No drift check: %s", e)
        return {"status": "empty", "drift_detected": False, "message": str(e), **facts}
    summary = {**report.summary(), **facts, "status": "drift" if report.drift_detected else "no_drift"}
    if log:
        log.info(
            "Drift check of %s against %s:\n%s",
            facts.get("current"),
            facts.get("reference"),
            summary_table(summary),
        )
    model_label = spec.get("model_name") or (spec.get("reference") or {}).get("model_name") or "unknown"
    if spec.get("pushgateway_conn_id"):
        from airflow_mlops.hooks.pushgateway import PushgatewayHook

        try:
            PushgatewayHook(spec["pushgateway_conn_id"]).push_drift(summary, model_label)
        except MlopsServiceError as e:
            # Monitoring must not block retraining: the verdict stands, the failure is loud.
            summary["push_error"] = str(e)
            if log:
                log.error("%s", e)
    when = spec.get("mlflow_report", "on_drift")
    if when == "always" or (when == "on_drift" and report.drift_detected):
        summary["report_run_id"] = _log_report(spec, report, summary, model_label)
    return summary


def _log_report(spec: dict[str, Any], report: Any, summary: dict[str, Any], model: str) -> str:
    import mlflow

    from airflow_mlops.core.drift.report import report_html, report_json
    from airflow_mlops.core.model_logging import ensure_experiment
    from airflow_mlops.hooks.mlflow import MlflowHook

    hook = MlflowHook(spec.get("mlflow_conn_id") or "mlflow_default")
    context = {k: summary.get(k) for k in ("reference", "current", "model_version", "run_id")}
    with hook.activate():
        eid = ensure_experiment(spec.get("report_experiment") or "mlops-drift", hook.target.artifact_location)
        tags = {"mlops.model_name": model, "mlops.drift_detected": str(report.drift_detected).lower()}
        if summary.get("model_version"):
            tags["mlops.model_version"] = str(summary["model_version"])
        with mlflow.start_run(experiment_id=eid, run_name=f"drift-{model}", tags=tags) as run:
            mlflow.log_metrics({"drift_share": report.share_drifted, "n_drifted": report.n_drifted})
            mlflow.log_text(report_json(report, context), REPORT_JSON)
            mlflow.log_text(report_html(report, f"Data drift: {model}"), REPORT_HTML)
        return run.info.run_id


class DriftTrigger(BaseTrigger):
    """Re-run :func:`evaluate_drift` every ``poll_interval`` seconds until drift or ``end_time``.

    Events: ``{"status": "drift", "summary": {...}}``, ``{"status": "timeout", "summary": {...}}`` (the
    last check) or ``{"status": "error", "error_type": "input"|"service"|"other", "message": ...}``.

    :param spec: the evaluation spec (JSON-able).
    :param end_time: epoch seconds after which the wait ends with a timeout event.
    :param poll_interval: seconds between checks.
    """

    def __init__(self, spec: dict[str, Any], end_time: float, poll_interval: float = 300.0) -> None:
        super().__init__()
        self.spec = spec
        self.end_time = float(end_time)
        self.poll_interval = float(poll_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Classpath and every constructor argument."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"spec": self.spec, "end_time": self.end_time, "poll_interval": self.poll_interval},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Check in a worker thread (reading data and MLflow block) until drift or timeout."""
        while True:
            try:
                summary = await asyncio.to_thread(evaluate_drift, self.spec, self.log)
            except Exception as e:  # noqa: BLE001 - reported to the task, which fails with it
                yield error_event(e)
                return
            if summary.get("drift_detected"):
                yield TriggerEvent({"status": "drift", "summary": summary})
                return
            if time.time() >= self.end_time:
                yield TriggerEvent({"status": "timeout", "summary": summary})
                return
            await asyncio.sleep(min(self.poll_interval, max(0.0, self.end_time - time.time())))
