"""ValidationGateSensor: decide whether a candidate model version may be promoted."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import PokeReturnValue, conf
from airflow.sdk.exceptions import AirflowException, AirflowSkipException

from airflow_mlops.core.errors import MlopsInputError
from airflow_mlops.links.gateway import GatewayMetricsLink
from airflow_mlops.links.mlflow import MlflowModelVersionLink
from airflow_mlops.sensors.base import MlopsSensor, raise_event_error

# What an inconclusive analysis does to the task (see ValidationGateSensor).
ON_INCONCLUSIVE = ("skip", "fail", "succeed")

if TYPE_CHECKING:
    import os

    import pandas as pd
    from airflow.sdk import Context

    from airflow_mlops.core.gate import GateSpec, Verdict
    from airflow_mlops.core.gate.spec import SourceSpec


def evaluate_gate(
    spec: dict[str, Any],
    model_name: str,
    version: str,
    *,
    mlflow_conn_id: str = "mlflow_default",
    prometheus_conn_id: str = "prometheus_default",
    dvc_conn_id: str = "dvc_default",
    analysis: dict[str, Any] | None = None,
) -> Verdict:
    """Resolve the connections and evaluate the gate once; records nothing.

    A ``prometheus`` source uses its ``url`` when the spec gives one, else the Prometheus connection;
    a ``holdout`` with ``rev`` and no ``repo`` reads through the DVC connection. A gate with analysis
    settings takes the measurements due now, continuing ``analysis`` (the previous verdict's).

    :param spec: the gate spec as a mapping.
    :param model_name: registered model name.
    :param version: candidate version.
    :param mlflow_conn_id: MLflow connection.
    :param prometheus_conn_id: Prometheus connection (``prometheus`` sources without a ``url``).
    :param dvc_conn_id: DVC connection (``holdout`` sources with a ``rev``).
    :param analysis: the measurement history so far (analysed gates; None: start now).
    """
    from airflow_mlops.core.gate import is_analysed, load_spec, run_analysis, run_gate
    from airflow_mlops.core.gate.evidence import read_holdout
    from airflow_mlops.hooks.mlflow import MlflowHook

    gate = load_spec(spec)
    prometheus = None
    if gate.source.kind == "prometheus" and not gate.source.url:
        from airflow_mlops.hooks.prometheus import PrometheusHook

        prometheus = PrometheusHook(prometheus_conn_id).client

    def load_frame(source: SourceSpec) -> pd.DataFrame:
        if source.dvc and not source.repo:
            from airflow_mlops.hooks.dvc import DvcHook

            frame, _lineage = DvcHook(dvc_conn_id).read_dataframe(source.path, source.rev)  # type: ignore[arg-type]
            return frame
        return read_holdout(source)

    target = MlflowHook(mlflow_conn_id).target
    if is_analysed(gate):
        return run_analysis(
            gate, model_name, version, target, state=analysis, prometheus=prometheus, frame_loader=load_frame
        )
    return run_gate(gate, model_name, version, target, prometheus=prometheus, frame_loader=load_frame)


class ValidationGateSensor(MlopsSensor):
    """Gate a model version on one threshold spec, offline or online.

    Evidence comes from the spec's source: metrics logged on the MLflow runs, a holdout re-scored for
    both models, PromQL over a canary's live metrics, or a gateway's ``/metrics`` page. Each poke
    evaluates every rule against the candidate and the baseline (``champion`` by default):

    * passed: the verdict is tagged on the version (``mlops.gate.<name>`` = ``passed``, details as JSON
      in ``mlops.gate.<name>.details``), ``promote_alias`` is set on it if asked, and the task succeeds
      with the verdict as its XCom;
    * failed: tagged ``failed``, and the task fails at once (a decided verdict is not re-poked), or is
      skipped with ``soft_fail=True`` so that a downstream deploy is skipped;
    * pending (live evidence still too thin): poke again until ``timeout``, then fail (or skip).

    Rules with analysis settings (``interval``, ``count``, ``initial_delay``, ``failure_limit``,
    ``consecutive_error_limit``, ``consecutive_success_limit``, ``inconclusive_limit``, ``fail_below``,
    ``fail_above``; see :mod:`airflow_mlops.core.gate.analysis`) take measurements over time, the sensor
    sleeping in the triggerer between them when deferrable. Two more outcomes then: *inconclusive* (a
    human decides: see ``on_inconclusive``) and *error* (the source failed more than
    ``consecutive_error_limit`` times in a row: the task fails, never skipped). The history goes to the
    XCom and the details tag, and to the log as a table per measurement.

    XCom, pushed in every outcome: ``outcome`` (``passed``, ``failed``, ``inconclusive``, ``error`` or
    ``timeout``) and ``verdict`` (the verdict's dict); the return value is the verdict when the task
    succeeds.

    A skip (``soft_fail=True``) means only "failed" or "timed out": an error (MLflow unreachable, a bad
    spec) fails the task either way.

    Bad input (unknown metric, missing metric, NaN, invalid PromQL, contradictory bounds, an alias on a
    deleted version) raises :class:`~airflow_mlops.core.errors.MlopsInputError`; nothing is tagged.

    :param spec: the gate spec: a mapping, a :class:`~airflow_mlops.core.gate.GateSpec`, or a path to a
        YAML/JSON file.
    :param model_name: registered model name (templated, e.g. from the training task's XCom).
    :param version: candidate version (templated).
    :param promote_alias: alias set on the candidate when it passes; overrides the spec's.
    :param mlflow_conn_id: MLflow connection.
    :param prometheus_conn_id: Prometheus connection (``prometheus`` sources without a ``url``).
    :param dvc_conn_id: DVC connection (``holdout`` sources with a ``rev``).
    :param deferrable: wait in the triggerer instead of a worker slot; default from
        ``[operators] default_deferrable``.
    :param on_inconclusive: what an inconclusive analysis does to the task: ``skip`` (default: the
        downstream deploy is skipped; a branch with ``trigger_rule="all_done"`` routes on the ``outcome``
        XCom), ``fail`` (as a failed gate) or ``succeed``.
    """

    template_fields: Sequence[str] = ("spec", "model_name", "version", "promote_alias")
    template_fields_renderers = {"spec": "json"}
    ui_color = "#fff2cc"
    operator_extra_links = (MlflowModelVersionLink(), GatewayMetricsLink())

    def __init__(
        self,
        *,
        spec: GateSpec | dict[str, Any] | str | os.PathLike[str],
        model_name: str,
        version: str | int,
        promote_alias: str | None = None,
        mlflow_conn_id: str = "mlflow_default",
        prometheus_conn_id: str = "prometheus_default",
        dvc_conn_id: str = "dvc_default",
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        on_inconclusive: str = "skip",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if on_inconclusive not in ON_INCONCLUSIVE:
            raise MlopsInputError(
                f"on_inconclusive = {on_inconclusive!r}: use one of {list(ON_INCONCLUSIVE)} (skip: the "
                "downstream deploy is skipped and a branch routes on the 'outcome' XCom)."
            )
        self.on_inconclusive = on_inconclusive
        # The measurement history of an analysed gate between pokes (poke mode: the same instance pokes).
        self._analysis: dict[str, Any] | None = None
        # A GateSpec is kept as its mapping: templating and serialization only understand plain types.
        self.spec = spec.to_dict() if hasattr(spec, "to_dict") else spec
        self.model_name = model_name
        self.version = version
        self.promote_alias = promote_alias
        self.mlflow_conn_id = mlflow_conn_id
        self.prometheus_conn_id = prometheus_conn_id
        self.dvc_conn_id = dvc_conn_id
        self.deferrable = deferrable

    def _gate(self) -> GateSpec:
        from airflow_mlops.core.gate import load_spec

        spec = self.spec
        if (
            isinstance(spec, str)
            and "\n" not in spec
            and not spec.strip().lower().endswith((".yaml", ".yml", ".json"))
        ):
            raise MlopsInputError(f"spec {spec!r} is neither a mapping nor a .yaml/.json file path.")
        return load_spec(spec)

    def _evaluate(self) -> Verdict:
        from airflow_mlops.core.gate import is_analysed

        if not self.deferrable and self.mode == "reschedule" and is_analysed(self._gate()):
            # Each rescheduled try starts afresh: the measurement history would be lost between them.
            raise MlopsInputError(
                "An analysed gate (rules with interval, count, ...) keeps its measurement history between "
                "evaluations: use deferrable=True (or mode='poke'), not mode='reschedule'."
            )
        verdict = evaluate_gate(
            self._gate().to_dict(),
            str(self.model_name),
            str(self.version),
            mlflow_conn_id=self.mlflow_conn_id,
            prometheus_conn_id=self.prometheus_conn_id,
            dvc_conn_id=self.dvc_conn_id,
            analysis=self._analysis,
        )
        self._analysis = verdict.analysis
        return verdict

    def _finish(self, context: Context, verdict: Verdict) -> dict[str, Any]:
        """Record a decided verdict, push it, and end the task as its outcome says."""
        from airflow_mlops.core.errors import MlopsServiceError
        from airflow_mlops.core.gate import ERROR, INCONCLUSIVE, record_verdict
        from airflow_mlops.hooks.mlflow import MlflowHook
        from airflow_mlops.links.publish import gate_links

        alias = self.promote_alias or self._gate().promote_alias
        record_verdict(MlflowHook(self.mlflow_conn_id).target, verdict, alias)
        gate_links(context, MlflowHook(self.mlflow_conn_id).target, self._gate(), verdict)
        self._push(context, verdict.status, verdict)
        self.log.info("%s", verdict.summary())
        if verdict.status == ERROR:
            raise MlopsServiceError(
                f"{verdict.summary()}. The evidence source kept failing: check it (Prometheus, the metrics page, "
                "MLflow), then clear the task to analyse again."
            )
        if verdict.status == INCONCLUSIVE:
            if self.on_inconclusive == "skip":
                raise AirflowSkipException(
                    f"Inconclusive, a human decides (outcome XCom): {verdict.summary()}"
                )
            if self.on_inconclusive == "fail":
                self.not_met(verdict.summary())
        elif not verdict.passed:
            self.not_met(verdict.summary())
        return verdict.to_dict()

    @staticmethod
    def _push(context: Context, outcome: str, verdict: Verdict) -> None:
        context["ti"].xcom_push(key="verdict", value=verdict.to_dict())
        context["ti"].xcom_push(key="outcome", value=outcome)

    def check(self, context: Context) -> bool | PokeReturnValue:
        """Evaluate once (analysed gates: take the measurements due); record and finish a decided verdict;
        return False while pending."""
        verdict = self._evaluate()
        self.log.info("%s", verdict.table())
        if not verdict.decided:
            return False
        return PokeReturnValue(is_done=True, xcom_value=self._finish(context, verdict))

    def start_deferred(self, context: Context) -> Any:
        """Check once and hand the wait to the trigger."""
        from airflow_mlops.triggers.validation_gate import ValidationGateTrigger

        gate = self._gate()  # bad specs fail here, before any deferral
        verdict = self._evaluate()
        self.log.info("%s", verdict.table())
        if verdict.decided:
            return self._finish(context, verdict)
        self.defer(
            trigger=ValidationGateTrigger(
                spec=gate.to_dict(),
                model_name=str(self.model_name),
                version=str(self.version),
                end_time=time.time() + self.timeout,
                poll_interval=self.poke_interval,
                mlflow_conn_id=self.mlflow_conn_id,
                prometheus_conn_id=self.prometheus_conn_id,
                dvc_conn_id=self.dvc_conn_id,
                analysis=verdict.analysis,
            ),
            method_name="execute_complete",
            # A margin past end_time, so the trigger's own timeout event normally comes first.
            timeout=timedelta(seconds=self.timeout + max(60.0, self.poke_interval * 2)),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger: check the event, then record the verdict or fail."""
        from airflow_mlops.core.gate import Verdict

        if not isinstance(event, dict) or "status" not in event:
            raise AirflowException(f"The gate trigger sent an unexpected event: {event!r}.")
        status = event["status"]
        if status == "error":
            raise_event_error(event)
        if status == "timeout":
            last = Verdict.from_dict(event["verdict"])
            self.log.info("%s", last.table())
            self._push(context, "timeout", last)
            self.not_met(
                f"Gate timed out after {self.timeout}s without enough evidence. {last.summary()}",
                timeout=True,
            )
        if status != "decided" or "verdict" not in event:
            raise AirflowException(f"The gate trigger sent an unknown status {status!r}.")
        verdict = Verdict.from_dict(event["verdict"])
        if (
            not verdict.decided
            or verdict.version != str(self.version)
            or verdict.model_name != str(self.model_name)
        ):
            raise AirflowException(
                f"The gate trigger's verdict ({verdict.model_name} v{verdict.version}, {verdict.status}) does "
                f"not decide {self.model_name} v{self.version}."
            )
        self.log.info("%s", verdict.table())
        return self._finish(context, verdict)
