"""ReleaseApprovalOperator: a human decides a held canary's fate, with Airflow 3's human-in-the-loop.

"Promote", "Keep the canary longer" or "Roll back", asked in Airflow's UI (Required actions) or answered
through the REST API (``PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails``).
The question shows the gate tables (the verdicts the gates pushed to XCom), the live metrics of the
model's versions (the gateway's ``/metrics`` page) and the latest drift check (MLflow); the answer and
who gave it go to the promotion ledger.

When the online gate decided by itself, nobody is asked (unless ``ask_on`` says so): a failed gate
branches to the rollback, a passed one to the promotion. An inconclusive analysis asks.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import HITLBranchOperator
from airflow.sdk import Param
from airflow.sdk.definitions.param import ParamsDict

from airflow_mlops.core.redact import redact

if TYPE_CHECKING:
    from airflow.sdk import Context

PROMOTE = "Promote"
KEEP = "Keep the canary longer"
ROLL_BACK = "Roll back"
# The ledger's names of the answers.
DECISIONS = {PROMOTE: "promote", KEEP: "keep", ROLL_BACK: "rollback"}
# Gate outcomes release_outcome() reports.
PASSED, FAILED, INCONCLUSIVE, NO_CANARY = "passed", "failed", "inconclusive", "no_canary"
_TABLE_COLUMNS = ("metric", "check", "candidate", "baseline", "observed", "threshold", "status", "reason")


def gate_outcome(outcome: Any, verdict: Any = None) -> str:
    """The online gate's outcome for the approval step: ``passed``, ``failed`` or ``inconclusive``.

    ``outcome`` is the gate's ``outcome`` XCom (``passed``, ``failed``, ``inconclusive``, ``error``,
    ``timeout``; see the ValidationGateSensor); without one (older gates, or bad input that failed the
    gate before any verdict), the ``verdict`` XCom's status decides. A timeout is not enough evidence
    either way, so a human decides it like an inconclusive analysis; an error or no verdict at all
    counts as failed.
    """
    status = str(outcome).lower() if outcome else ""
    if not status and isinstance(verdict, dict):
        status = str(verdict.get("status", "")).lower()
    if status in (PASSED, INCONCLUSIVE):
        return status
    if status in ("timeout", "pending"):
        return INCONCLUSIVE
    return FAILED


def release_outcome(ti: Any, gate_task_id: str, canary_task_id: str | None) -> str:
    """Where the release stands after the online gate: ``no_canary`` (nothing was deployed), else the
    gate's outcome (:func:`gate_outcome`).

    :param ti: the task instance (for XCom).
    :param gate_task_id: the online gate's task.
    :param canary_task_id: the canary deploy's task; None when the DAG has none to check.
    """
    if canary_task_id is not None and not ti.xcom_pull(task_ids=canary_task_id):
        return NO_CANARY
    return gate_outcome(
        ti.xcom_pull(task_ids=gate_task_id, key="outcome"), ti.xcom_pull(task_ids=gate_task_id, key="verdict")
    )


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def verdict_markdown(verdict: dict[str, Any]) -> str:
    """A gate's verdict (``Verdict.to_dict()``) as a Markdown heading and table."""
    base = verdict.get("baseline_version")
    against = f" vs {verdict.get('baseline_alias')} = v{base}" if base else ""
    lines = [
        f"**Gate `{verdict.get('gate')}`**: v{verdict.get('version')}{against}, evidence "
        f"{verdict.get('source')} -> **{str(verdict.get('status', '?')).upper()}**",
        "",
        "| " + " | ".join(_TABLE_COLUMNS) + " |",
        "|" + "---|" * len(_TABLE_COLUMNS),
    ]
    for row in verdict.get("rows", []):
        cells = [_cell(row.get(c)) for c in _TABLE_COLUMNS]
        cells[6] = cells[6].upper()
        lines.append("| " + " | ".join(cells) + " |")
    analysis = verdict.get("analysis")
    if isinstance(analysis, dict) and isinstance(analysis.get("rules"), dict):
        lines += ["", f"Analysis: **{str(analysis.get('phase', '?')).upper()}**", ""]
        lines += ["| metric | at | phase | value | baseline | samples | message |", "|" + "---|" * 7]
        for metric, rule in analysis["rules"].items():
            for m in (rule or {}).get("measurements", []) or []:
                cells = [_cell(m.get(c)) for c in ("at", "phase", "value", "baseline", "samples", "message")]
                lines.append(f"| {_cell(metric)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def live_metrics_lines(page: str, model_name: str) -> list[str]:
    """The gateway's live quality, traffic weights and labelled counts of ``model_name`` from its
    ``/metrics`` page (Prometheus text), one sample a line."""
    wanted = ("mlops_gateway_live_", "mlops_gateway_route_weight", "mlops_gateway_feedback_total")
    label = f'model="{model_name}"'
    return [
        line.strip()
        for line in page.splitlines()
        if line.startswith(wanted) and label in line and not line.startswith("#")
    ]


def render_body(
    model_name: str,
    version: str,
    outcome: str,
    verdicts: list[dict[str, Any]],
    live: list[str] | str,
    drift: dict[str, Any] | str,
) -> str:
    """The question's body (Markdown): why a human is asked, the gate tables, live metrics, drift.

    :param live: sample lines (:func:`live_metrics_lines`), or why there are none.
    :param drift: the latest drift check (``drift_share``, ``n_drifted``, ``drift_detected``, ``run_id``,
        ``at``), or why there is none.
    """
    why = {
        INCONCLUSIVE: "The online analysis is **inconclusive**: neither its success nor its failure "
        "conditions held. Decide the canary's fate.",
        PASSED: "The online gate **passed**; this release asks a human before promoting.",
        FAILED: "The online gate **failed**; this release asks a human before rolling back.",
    }.get(outcome, f"Online gate outcome: {outcome}.")
    parts = [
        f"## {model_name} v{version}: promote, keep the canary longer, or roll back?",
        why,
        f"- **{PROMOTE}**: all traffic to v{version}, which becomes `@champion`.\n"
        f"- **{KEEP}**: the canary keeps its share of the traffic; nothing else changes.\n"
        f"- **{ROLL_BACK}**: the routing and the champion from before the canary come back.",
        "### Gates",
    ]
    parts += [verdict_markdown(v) for v in verdicts] or ["_No gate verdict in XCom._"]
    parts.append("### Live metrics (gateway)")
    if isinstance(live, str):
        parts.append(f"_{live}_")
    else:
        parts.append("```\n" + ("\n".join(live) or "no live sample of this model yet") + "\n```")
    parts.append("### Drift (latest check)")
    if isinstance(drift, str):
        parts.append(f"_{drift}_")
    else:
        detected = "drift detected" if drift.get("drift_detected") else "no drift"
        parts.append(
            f"{detected}: share of drifted columns {_cell(drift.get('drift_share'))}, "
            f"{_cell(drift.get('n_drifted'))} columns, at {drift.get('at')} (MLflow run `{drift.get('run_id')}`)"
        )
    return "\n\n".join(parts)


class ReleaseApprovalOperator(HITLBranchOperator):
    """Ask a human "promote / keep the canary longer / roll back" for a held canary, and branch.

    The question is asked only when the online gate's outcome is in ``ask_on`` (default: inconclusive);
    otherwise the operator branches by itself (failed: rollback; passed: promote) without asking.
    Nothing deployed (no canary XCom): every branch is skipped. Run it with ``trigger_rule="all_done"``
    after the online gate, so a failed gate still reaches it.

    Each answer is recorded in the promotion ledger (action ``approval``, ``actor`` = who answered,
    ``decision``, ``reason`` = the comment) and pushed to XCom (key ``approval``).

    :param model_name: registered model name.
    :param version: the candidate (the canary's version).
    :param gate_task_id: the online gate's task (its ``verdict`` XCom decides whether to ask).
    :param gate_task_ids: the gates whose tables the question shows (default: offline and online).
    :param canary_task_id: the canary deploy's task; None when the DAG has none.
    :param promote_task_id: the branch of "Promote".
    :param keep_task_id: the branch of "Keep the canary longer".
    :param rollback_task_id: the branch of "Roll back".
    :param ask_on: the gate outcomes that ask a human: ``inconclusive``, ``passed``, ``failed``.
    :param live_metrics_url: the gateway's ``/metrics`` page (live metrics in the question); None: none.
    :param drift_experiment: the MLflow experiment of the drift reports.
    :param mlflow_conn_id: MLflow connection (drift summary, ledger).
    :param response_timeout: how long to wait for an answer; after it, ``defaults`` are taken.
    :param defaults: the answer taken on timeout (default: "Roll back", back to the known champion).
    """

    template_fields: Sequence[str] = (*HITLBranchOperator.template_fields, "model_name", "version")
    ui_color = "#e8d4f8"

    def __init__(
        self,
        *,
        model_name: str,
        version: str | int,
        gate_task_id: str = "online_gate",
        gate_task_ids: Sequence[str] = ("offline_gate", "online_gate"),
        canary_task_id: str | None = "deploy_canary",
        promote_task_id: str = "promote",
        keep_task_id: str = "keep_canary",
        rollback_task_id: str = "rollback",
        ask_on: Sequence[str] = (INCONCLUSIVE,),
        live_metrics_url: str | None = None,
        drift_experiment: str = "mlops-drift",
        mlflow_conn_id: str = "mlflow_default",
        response_timeout: timedelta | None = None,
        defaults: str | list[str] | None = ROLL_BACK,
        subject: str | None = None,
        **kwargs: Any,
    ) -> None:
        unknown = set(ask_on) - {PASSED, FAILED, INCONCLUSIVE}
        if unknown:
            raise ValueError(f"ask_on {sorted(unknown)} unknown: use any of passed, failed, inconclusive.")
        kwargs.setdefault("trigger_rule", "all_done")
        # The form asks for an optional comment, beside any params given (Airflow passes the DAG's too:
        # HITLOperator keeps only the task's own).
        form = kwargs.pop("params", None)
        form = form if isinstance(form, ParamsDict) else ParamsDict(form or {})
        form["comment"] = Param(None, type=["null", "string"], description="Why (goes to the ledger)")
        super().__init__(
            # The default subject names the version, known only once the templates are rendered.
            subject=subject or "Release approval",
            options=[PROMOTE, KEEP, ROLL_BACK],
            options_mapping={PROMOTE: promote_task_id, KEEP: keep_task_id, ROLL_BACK: rollback_task_id},
            defaults=defaults,
            multiple=False,
            params=form,
            response_timeout=response_timeout,
            **kwargs,
        )
        self.model_name = model_name
        self.version = version
        self.gate_task_id = gate_task_id
        self.gate_task_ids = list(gate_task_ids)
        self.canary_task_id = canary_task_id
        self.promote_task_id = promote_task_id
        self.keep_task_id = keep_task_id
        self.rollback_task_id = rollback_task_id
        self.ask_on = list(ask_on)
        self.live_metrics_url = live_metrics_url
        self.drift_experiment = drift_experiment
        self.mlflow_conn_id = mlflow_conn_id
        self._default_subject = subject is None

    # -- what the approver sees -------------------------------------------------------------------

    def _live(self) -> list[str] | str:
        if not self.live_metrics_url:
            return "no live metrics source configured"
        import urllib.request

        try:
            with urllib.request.urlopen(self.live_metrics_url, timeout=5) as r:
                page = r.read(2_000_000).decode(errors="replace")
        except OSError as e:
            return f"live metrics unavailable ({redact(e)})"
        return live_metrics_lines(page, str(self.model_name))

    def _drift(self) -> dict[str, Any] | str:
        from airflow_mlops.hooks.mlflow import MlflowHook

        try:
            client = MlflowHook(self.mlflow_conn_id).get_conn()
            exp = client.get_experiment_by_name(self.drift_experiment)
            if exp is None:
                return "no drift check recorded yet"
            runs = client.search_runs(
                [exp.experiment_id],
                filter_string=f"tags.`mlops.model_name` = '{self.model_name}'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
        except Exception as e:  # noqa: BLE001 - the question is still asked, saying why drift is missing
            return f"drift summary unavailable ({redact(e)})"
        if not runs:
            return f"no drift check of {self.model_name} recorded yet"
        run = runs[0]
        return {
            "drift_share": run.data.metrics.get("drift_share"),
            "n_drifted": run.data.metrics.get("n_drifted"),
            "drift_detected": run.data.tags.get("mlops.drift_detected") == "true",
            "run_id": run.info.run_id,
            "at": datetime.fromtimestamp(run.info.start_time / 1000, timezone.utc).isoformat(
                timespec="seconds"
            ),
        }

    def _verdicts(self, ti: Any) -> list[dict[str, Any]]:
        found = []
        for task_id in self.gate_task_ids:
            verdict = ti.xcom_pull(task_ids=task_id, key="verdict")
            if isinstance(verdict, dict):
                found.append(verdict)
        return found

    # -- the flow ---------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        """Branch by itself when the gate decided (and ``ask_on`` does not ask); else ask a human."""
        from airflow.sdk.exceptions import AirflowSkipException

        ti = context["ti"]
        outcome = release_outcome(ti, self.gate_task_id, self.canary_task_id)
        if outcome == NO_CANARY:
            raise AirflowSkipException("No canary was deployed (an earlier step failed or was skipped).")
        if outcome not in self.ask_on:
            target = self.rollback_task_id if outcome == FAILED else self.promote_task_id
            self.log.info("Online gate %s: %s without asking (ask_on=%s)", outcome, target, self.ask_on)
            return self.do_branch(context, [target])
        if self._default_subject:
            self.subject = (
                f"Release {self.model_name} v{self.version}: promote, keep the canary, or roll back?"
            )
        self.body = render_body(
            str(self.model_name), str(self.version), outcome, self._verdicts(ti), self._live(), self._drift()
        )
        self.log.info("Asking for a decision (online gate %s):\n%s", outcome, self.body)
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Record the answer (and who gave it) in the ledger, then branch."""
        if "error" not in event:
            self.validate_chosen_options(event["chosen_options"])
            self._record(context, event)
        return super().execute_complete(context, event)

    def _record(self, context: Context, event: dict[str, Any]) -> None:
        from airflow_mlops.core.registry import CHAMPION, alias_version
        from airflow_mlops.deploy import ledger
        from airflow_mlops.errors_airflow import airflow_errors
        from airflow_mlops.hooks.mlflow import MlflowHook

        choice = event["chosen_options"][0]
        user = event.get("responded_by_user") or {}
        name, uid = user.get("name"), user.get("id")
        # No responder: the response timed out and the default answer was taken.
        actor = (f"{name} (id {uid})" if uid and uid != name else str(name)) if name else "timeout (default)"
        comment = (event.get("params_input") or {}).get("comment") or None
        ti = context["ti"]
        dag_run = f"{ti.dag_id}/{ti.run_id}/{ti.task_id}"
        responded: Any = event.get("responded_at")
        answer = {
            "decision": DECISIONS[choice],
            "option": choice,
            "approver": actor,
            "comment": comment,
            "responded_at": responded.isoformat() if isinstance(responded, datetime) else responded,
        }
        hook = MlflowHook(self.mlflow_conn_id)
        with airflow_errors(), hook.activate():
            client = hook.get_conn()
            ledger.record(
                client,
                str(self.model_name),
                ledger.LedgerEntry(
                    action="approval",
                    version=str(self.version),
                    from_version=alias_version(client, str(self.model_name), CHAMPION),
                    strategy="canary",
                    actor=actor,
                    dag_run=dag_run,
                    reason=comment,
                    decision=DECISIONS[choice],
                ),
            )
        ti.xcom_push(key="approval", value=answer)
        self.log.info("Release decision %s by %s recorded in the ledger", DECISIONS[choice], actor)
