"""Rollout: move a deployment to a new model version with a strategy, check health between steps, roll
back by itself when a check fails, and move ``champion`` only at full promotion (compare-and-set).

Strategies:

- ``replace``: the new version takes all traffic at once; full promotion.
- ``canary``: the new version takes growing shares (``canary_steps``), each held ``step_seconds`` with
  health checks, then all traffic; full promotion.
- ``shadow``: the champion answers, the new version gets a copy of each request; no promotion.
- ``ab``: a sticky split between champion and new version; no promotion.
- ``bandit``: Thompson sampling between champion and new version on feedback; no promotion.

Retries are idempotent: an operation id (the Airflow task instance) is recorded before anything
changes; a retry of a finished operation changes nothing, a retry of an interrupted one starts again
from what the first attempt recorded (the champion it expected, the routing to restore).

The state of record is in MLflow (:mod:`airflow_mlops.deploy.state`), changed by compare-and-set, so a
rollback on another worker finds what this one deployed. An operation holds the deployment with a
lease: another operation is refused while it runs, and may take over once a crashed holder's lease ran
out. A rollout runs stage by stage: :meth:`Deployer.start` applies the first stage and returns what to
watch (:class:`StepWatch`); :meth:`Deployer.finish_stage` judges the watched stage and applies the next
one. :meth:`Deployer.deploy` does the watching in this process; the operator defers it to a trigger.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from airflow_mlops.core.errors import MlopsInputError, MlopsServiceError
from airflow_mlops.core.registry import CHAMPION, AliasConflictError, alias_version, compare_and_set_alias
from airflow_mlops.core.tracking import MlflowTarget, check_reachable
from airflow_mlops.deploy import ledger
from airflow_mlops.deploy.backends import GatewayBackend, GatewaySpec
from airflow_mlops.deploy.plan import DeployRequest, Stage, alone, error_rate_problem, plan_stages
from airflow_mlops.deploy.state import (
    DeploymentBusyError,
    DeploymentRecords,
    DeploymentState,
    Operation,
    StateConflictError,
    StateStore,
    check_name,
    this_host,
)
from airflow_mlops.deploy.validation import input_example_records, validate_version
from airflow_mlops.serving.client import ADMIN_TOKEN_ENV, GatewayClient
from airflow_mlops.serving.config import DeploymentConfig

log = logging.getLogger(__name__)
T = TypeVar("T")

# How long past a stage's own work an operation keeps the deployment (a crashed holder frees it then).
LEASE_MARGIN_SECONDS = 900.0


class RolledBackError(MlopsServiceError):
    """A health check failed during the rollout; the previous routing (and champion) was restored."""


@dataclass
class StepWatch:
    """What a held stage is watched for, by :meth:`Deployer.watch` here or by the deploy trigger.

    :param endpoint: the gateway's base URL.
    :param model_name: registered model name (the ``model`` label of the request counter).
    :param version: the new version, whose error rate counts.
    :param hold_seconds: how long the stage is held.
    :param max_error_rate: largest share of failed requests of ``version``.
    :param min_requests: requests of ``version`` needed before the rate counts.
    :param baseline: ``{status: count}`` of ``version`` when the stage began.
    :param poll_seconds: how often health is checked.
    :param previous_config: the routing from before the deploy (None: nothing served), for
        :meth:`Deployer.restore_routing` when the state of record cannot be reached.
    """

    endpoint: str
    model_name: str
    version: str
    hold_seconds: float
    max_error_rate: float
    min_requests: int
    baseline: dict[str, float] = field(default_factory=dict)
    poll_seconds: float = 0.5
    previous_config: DeploymentConfig | None = None


@dataclass
class DeployResult:
    """What a deploy or rollback left behind (the XCom of the operator)."""

    deployment: str
    model_name: str
    backend: str
    endpoint: str | None
    strategy: str
    served_versions: list[str]
    weights: dict[str, float]
    champion: str | None
    action: str
    version: str | None = None
    promoted: bool = False
    reused: bool = False
    validation: dict[str, Any] | None = None
    handle: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (no secrets: the state of record holds none)."""
        return asdict(self)


@dataclass
class Progress:
    """Where a deploy stands: finished (``result``), or holding ``stage`` (watch ``watch``)."""

    result: DeployResult | None = None
    watch: StepWatch | None = None
    stage: int = 0


class Deployer:
    """Deploys and rolls back one named deployment (one gateway) of one registered model.

    :param name: deployment name (state record, container names).
    :param backend: where the gateway runs.
    :param target: the MLflow registry, which also keeps the deployment's state of record.
    :param store: this worker's work folder (gateway config, logs, a generated admin token).
    :param port: the gateway's port on 127.0.0.1 (None: a free one, kept across restarts).
    :param log_dir: prediction-log folder (None: ``<work folder>/<name>/predictions``).
    :param admin_token: the gateway admin token (None: the one this worker generated, or a new one
        for a gateway it starts); shared by workers through ``MLOPS_GATEWAY_ADMIN_TOKEN``.
    :param feedback_token: the token the gateway's ``/feedback`` requires (passed to the gateway).
    :param gateway_tracking_uri: the tracking URI as the gateway sees it (None: the target's).
    :param ready_timeout: seconds for a gateway to start and load its models.
    :param step_check: extra check after each held stage (raise MlopsServiceError to fail it); it gets
        the endpoint, the stage config and the new version.
    :param poll_seconds: how often a held stage checks the gateway.
    """

    def __init__(
        self,
        name: str,
        backend: GatewayBackend,
        target: MlflowTarget,
        store: StateStore | None = None,
        *,
        port: int | None = None,
        log_dir: str | None = None,
        admin_token: str | None = None,
        feedback_token: str | None = None,
        gateway_tracking_uri: str | None = None,
        ready_timeout: float = 180.0,
        step_check: Callable[[str, DeploymentConfig, str], None] | None = None,
        poll_seconds: float = 0.5,
    ) -> None:
        self.name = check_name(name)
        self.backend = backend
        self.target = target
        self.store = store or StateStore()
        self.records = DeploymentRecords(target)
        self.port = port
        self.log_dir = log_dir
        self.admin_token = admin_token
        self.feedback_token = feedback_token
        self.gateway_tracking_uri = gateway_tracking_uri
        self.ready_timeout = ready_timeout
        self.step_check = step_check
        self.poll_seconds = poll_seconds
        self._rev = 0

    # -- state ----------------------------------------------------------------------------------
    def _load(self) -> DeploymentState | None:
        check_reachable(self.target.tracking_uri, timeout=5.0)
        state, self._rev = self.records.load(self.name)
        return state

    def _save(self, state: DeploymentState | None) -> None:
        self._rev = self.records.save(state, self.name, self._rev)

    def _load_for(self, model_name: str, state: DeploymentState | None = None) -> DeploymentState:
        """The deployment's state (``state``: as just loaded), checked to be of ``model_name`` here."""
        state = state or self._load()
        if state is None:
            return DeploymentState(self.name, model_name, self.backend.kind, port=self.port)
        if state.model_name != model_name:
            raise MlopsInputError(
                f"Deployment {self.name!r} serves model {state.model_name!r}, not {model_name!r}: use another "
                "deployment name for another model."
            )
        if state.backend != self.backend.kind:
            raise MlopsInputError(
                f"Deployment {self.name!r} runs on the {state.backend!r} backend, not {self.backend.kind!r}: "
                "use the same backend, or another deployment name."
            )
        return state

    def _check_not_busy(self, state: DeploymentState, op_id: str | None) -> None:
        op = state.op
        if op is not None and op.holds() and op.id != op_id:
            until = time.strftime("%H:%M:%SZ", time.gmtime(op.lease_until))
            raise DeploymentBusyError(
                f"Deployment {self.name!r} is busy: operation {op.id!r} ({op.action} of version {op.version}, "
                f"on {op.host}) is in progress. Wait for it to finish and retry; if its task is gone, its "
                f"lease runs out at {until} and the deployment is free again."
            )

    def _lease(self, seconds: float) -> float:
        return time.time() + seconds + self.ready_timeout + LEASE_MARGIN_SECONDS

    # -- gateway plumbing -----------------------------------------------------------------------
    def _token(self) -> str:
        """The admin token of the running gateway, or a clear error naming how to give it."""
        token = self.admin_token or self.store.local_token(self.name)
        if not token:
            raise MlopsInputError(
                f"Deployment {self.name!r} has a running gateway whose admin token this worker does not "
                f"have (it was started elsewhere): set {ADMIN_TOKEN_ENV} (or the gateway connection's "
                "password) to the same token on every worker."
            )
        return token

    def _spec(self, state: DeploymentState, config: DeploymentConfig, token: str) -> GatewaySpec:
        t = self.target
        creds = {
            "MLFLOW_TRACKING_USERNAME": t.username,
            "MLFLOW_TRACKING_PASSWORD": t.password,
            "MLFLOW_TRACKING_TOKEN": t.token,
        }
        return GatewaySpec(
            name=self.name,
            config=config,
            tracking_uri=self.gateway_tracking_uri or t.tracking_uri,
            registry_uri=t.registry_uri,
            admin_token=token,
            feedback_token=self.feedback_token,
            workdir=self.store.workdir(self.name),
            log_dir=Path(self.log_dir) if self.log_dir else None,
            port=state.port or self.port,
            credentials={k: v for k, v in creds.items() if v},
            labels={"org.airflow-mlops.role": "serving"},
        )

    def _api(self, state: DeploymentState, admin: bool = False) -> GatewayClient:
        if not state.endpoint:
            raise MlopsServiceError(f"Deployment {self.name!r} has no gateway endpoint recorded.")
        return GatewayClient(state.endpoint, self._token() if admin else None)

    def _here(self, state: DeploymentState) -> bool:
        host = state.handle.get("host")
        return host is None or host in (this_host(), getattr(self.backend, "docker_url", None))

    def _process_alive(self, state: DeploymentState) -> bool:
        """The backend's own view where it can see the gateway; on another host, HTTP ``/health``."""
        if not state.handle:
            return False
        if self._here(state) or self.backend.kind == "external":
            return self.backend.alive(state.handle)
        with GatewayClient(state.endpoint or "", timeout=5.0) as api:
            return api.ok("/health")

    def _alive(self, state: DeploymentState) -> bool:
        if not (state.handle and state.endpoint and self._process_alive(state)):
            return False
        with GatewayClient(state.endpoint, timeout=5.0) as api:
            return api.healthy()

    def _stop(self, state: DeploymentState) -> None:
        if not state.handle:
            return
        if not self._here(state) and self.backend.kind != "external":
            raise MlopsServiceError(
                f"The gateway of deployment {self.name!r} runs on host {state.handle.get('host')!r}, not "
                f"here ({this_host()!r}): stop it there (a teardown or rollback on that worker)."
            )
        self.backend.stop(state.handle)

    def _apply(self, state: DeploymentState, config: DeploymentConfig) -> None:
        """Route as ``config``: a PUT to a live gateway, else a (re)start with it on the same port."""
        if self._process_alive(state):
            with self._api(state, admin=True) as api:
                api.put_deployment(config, timeout=self.ready_timeout)
        else:
            if state.handle and self._here(state):
                self.backend.stop(state.handle)  # clean up a dead one (container, zombie)
            token = (
                self.admin_token or self.store.local_token(self.name) or self.store.new_local_token(self.name)
            )
            handle = self.backend.start(self._spec(state, config, token), ready_timeout=self.ready_timeout)
            state.handle, state.port, state.endpoint = handle, handle["port"], handle["endpoint"]
        state.config = config
        self._save(state)

    def _restore(self, state: DeploymentState, config: DeploymentConfig | None) -> None:
        """Put the routing back (restarting a dead gateway); no routing before: stop the gateway."""
        if config is None:
            self._stop(state)
            state.handle, state.endpoint, state.config = {}, None, None
            self._save(state)
            return
        self._apply(state, config)

    def _result(self, state: DeploymentState, action: str, **kw: Any) -> DeployResult:
        cfg = state.config
        return DeployResult(
            deployment=self.name,
            model_name=state.model_name,
            backend=state.backend,
            endpoint=state.endpoint,
            strategy=cfg.strategy if cfg else "",
            served_versions=state.served_versions(),
            weights=state.weights(),
            champion=cfg.champion if cfg else None,
            action=action,
            handle={k: v for k, v in state.handle.items() if k != "config_path"},
            **kw,
        )

    # -- deploy ---------------------------------------------------------------------------------
    def deploy(self, req: DeployRequest) -> DeployResult:
        """Deploy ``req.version`` with ``req.strategy``, watching each held stage in this process.

        :raises MlopsInputError: bad arguments; nothing changed.
        :raises InfraValidationError: the version failed infra validation; nothing changed.
        :raises RolledBackError: a health check failed; previous routing and champion restored.
        :raises AliasConflictError: champion moved meanwhile; routing restored, nothing promoted.
        :raises DeploymentBusyError: another operation holds the deployment; nothing changed.
        """
        progress = self.start(req)
        while progress.watch is not None:
            problem = self.watch(progress.watch)
            progress = self.finish_stage(req, progress.stage, problem)
        if progress.result is None:  # a Progress holds a watch or a result
            raise MlopsServiceError(f"Deploy {req.op_id} of {req.model_name} ended without a result.")
        return progress.result

    def watch(self, watch: StepWatch) -> str | None:
        """Hold a stage in this process: why it failed, or None when it held."""
        state, _ = self.records.load(self.name)
        deadline = time.monotonic() + watch.hold_seconds
        with GatewayClient(watch.endpoint, timeout=5.0) as api:
            while True:
                if state is not None and self._here(state) and not self.backend.alive(state.handle):
                    return (
                        f"the gateway died ({self.backend.kind}); its log:\n{self.backend.logs(state.handle)}"
                    )
                if not api.healthy():
                    return f"the gateway at {watch.endpoint} stopped answering /health or /ready"
                if time.monotonic() >= deadline:
                    break
                time.sleep(min(watch.poll_seconds, max(0.0, deadline - time.monotonic())))
            try:
                after = api.request_counts(watch.model_name).get(watch.version, {})
            except MlopsServiceError as e:
                return str(e)
        return error_rate_problem(
            watch.baseline, after, watch.version, watch.max_error_rate, watch.min_requests
        )

    def start(self, req: DeployRequest) -> Progress:
        """Check, validate, record the operation, apply the first stage; return what to watch.

        See :meth:`deploy` for the errors.
        """
        req.check()
        return _again_on_conflict(lambda: self._start(req))

    def _start(self, req: DeployRequest) -> Progress:
        new = str(req.version)
        state = self._load_for(req.model_name)
        with self.target.activate():
            client = self.target.client()
            op = state.op
            # An earlier try of this same operation (a retry), if any.
            prior = op if op is not None and req.op_id is not None and op.id == req.op_id else None
            prior = prior if prior is not None and prior.action == "deploy" else None
            if prior is not None and prior.status == "done" and self._alive(state):
                with self._api(state, admin=True) as api:
                    if _routing(api) == state.config:
                        log.info("Deploy %s already done by an earlier try: nothing to change.", req.op_id)
                        return Progress(
                            self._result(state, "deploy", version=new, promoted=prior.promoted, reused=True)
                        )
            if prior is not None and prior.status == "rolled_back":
                raise RolledBackError(
                    f"Deploy {req.op_id} of {req.model_name} version {new} was rolled back by an earlier try; "
                    "a retry does not put it back in traffic: fix the model and deploy it in a new run."
                )
            self._check_not_busy(state, req.op_id)
            _check_version_exists(client, req.model_name, new)
            if self.backend.kind == "external" and not self.backend.alive({}):
                raise MlopsServiceError(
                    f"The external gateway at {getattr(self.backend, 'url', '?')} does not answer /health: "
                    "start it, or fix gateway_url / the gateway connection. Nothing was changed."
                )
            if state.handle and self._process_alive(state):
                self._token()  # a gateway this worker cannot drive: fail before anything changes
            if prior is not None and prior.status == "in_progress":
                # An interrupted try: start again from what it saw, not from its half-done changes.
                expected, previous = prior.expected_champion, prior.previous_config
            else:
                expected = alias_version(client, req.model_name, CHAMPION)
                previous = state.config if state.config else None
                if op is not None and op.status == "in_progress":
                    # A crashed operation whose lease ran out: what it replaced is what served before it.
                    log.warning("Taking over %s from the abandoned operation %s.", self.name, op.id)
                    previous = op.previous_config
                elif op is not None and op.is_held_canary_of(new):
                    # Promoting a held canary: what it replaces is the routing from before the canary.
                    previous = state.previous_config
                if previous is None and self.backend.kind == "external":
                    previous = self._external_routing(state)
            serving_champion = (previous.champion if previous else None) or expected
            if (
                req.strategy == "replace"
                and expected == new
                and previous == alone(req.model_name, new)
                and self._alive(state)
            ):
                log.info(
                    "%s version %s already serves alone as champion: nothing to change.", req.model_name, new
                )
                return Progress(self._result(state, "deploy", version=new, promoted=True, reused=True))
            stages, _promotes = plan_stages(req, serving_champion)
            state.op = op = Operation(
                id=req.op_id, action="deploy", version=new, strategy=req.strategy, promote=req.promote,
                expected_champion=expected, previous_config=previous, stage=-1,
                lease_until=self._lease(2 * self.ready_timeout), host=this_host(),
            )  # fmt: skip
            self._save(state)

            report = None
            if req.validate:
                try:
                    records = input_example_records(req.model_name, new)
                    report = validate_version(
                        self.backend.validation_backend(),
                        self._spec(state, alone(req.model_name, new), secrets.token_urlsafe(16)),
                        new,
                        records,
                        latency_budget_ms=req.latency_budget_ms,
                        requests=req.validation_requests,
                        ready_timeout=self.ready_timeout,
                    )
                except (MlopsServiceError, MlopsInputError):
                    op.status = "failed_validation"
                    self._save(state)
                    raise
                for k, v in {
                    "mlops.deploy.infra_validation": "passed",
                    "mlops.deploy.p95_ms": report.p95_ms,
                }.items():
                    client.set_model_version_tag(req.model_name, new, k, str(v))
                op.validation = report.to_dict()

            try:
                # A gateway that died since the last deploy comes back with the last good routing first.
                if previous is not None and not self._process_alive(state):
                    self._apply(state, previous)
            except MlopsServiceError as e:
                self._rollback_after_failure(state, client, op, str(e), req.actor, req.dag_run)
                raise RolledBackError(
                    f"Deploy of {req.model_name} version {new} could not restart the gateway: {e}"
                ) from e
            return self._enter_stage(state, op, client, req, stages, 0)

    def _external_routing(self, state: DeploymentState) -> DeploymentConfig | None:
        """What an external gateway serves before our first deploy (restored if that deploy fails)."""
        url = getattr(self.backend, "url", None)
        if not url:
            return None
        with GatewayClient(url, self._token(), timeout=10.0) as api:
            return _routing(api) if api.ok("/health") else None

    def _enter_stage(
        self, state: DeploymentState, op: Operation, client: Any, req: DeployRequest, stages: list[Stage],
        index: int,
    ) -> Progress:  # fmt: skip
        """Apply stage ``index`` and return what to watch (or finish when it holds for no time)."""
        stage = stages[index]
        new = str(req.version)
        try:
            log.info("Routing %s: %s", self.name, stage.config.to_dict())
            op.stage = index
            op.lease_until = self._lease(stage.hold_seconds)
            self._apply(state, stage.config)
            with self._api(state) as api:
                baseline = api.request_counts(req.model_name).get(new, {})
        except StateConflictError:
            raise
        except MlopsServiceError as e:
            return self._fail(state, op, client, req, str(e))
        watch = StepWatch(
            endpoint=state.endpoint or "", model_name=req.model_name, version=new,
            hold_seconds=stage.hold_seconds, max_error_rate=req.max_error_rate,
            min_requests=req.min_requests, baseline=baseline, poll_seconds=self.poll_seconds,
            previous_config=op.previous_config,
        )  # fmt: skip
        return Progress(watch=watch, stage=index)

    def _replan(self, req: DeployRequest, op: Operation) -> tuple[list[Stage], bool]:
        serving = op.previous_config.champion if op.previous_config else None
        return plan_stages(req, serving or op.expected_champion)

    def finish_stage(self, req: DeployRequest, index: int, problem: str | None) -> Progress:
        """Judge held stage ``index`` (``problem``: why its watch failed, None when it held); roll back
        on failure, else apply the next stage or finish (promotion, ledger).

        :raises RolledBackError: the stage failed; the previous routing was restored.
        :raises StateConflictError: another operation took the deployment over meanwhile.
        """
        new = str(req.version)
        state = self._load_for(req.model_name)
        op = state.op
        if op is None or op.id != req.op_id or op.action != "deploy":
            raise StateConflictError(
                f"Deployment {self.name!r} is no longer held by operation {req.op_id!r} (now "
                f"{op.id if op else None!r}): it was taken over; deploy again if still wanted."
            )
        if op.status == "done":
            return Progress(self._result(state, "deploy", version=new, promoted=op.promoted, reused=True))
        if op.status != "in_progress" or op.stage != index:
            raise StateConflictError(
                f"Operation {req.op_id!r} on {self.name!r} is at stage {op.stage} ({op.status}), not {index}."
            )
        stages, promotes = self._replan(req, op)
        with self.target.activate():
            client = self.target.client()
            if problem is None:
                try:
                    problem = self._check_routing(state, stages[index])
                    if problem is None and self.step_check is not None:
                        self.step_check(state.endpoint or "", stages[index].config, new)
                except MlopsServiceError as e:
                    problem = str(e)
            if problem is not None:
                return self._fail(state, op, client, req, problem)
            if index + 1 < len(stages):
                return self._enter_stage(state, op, client, req, stages, index + 1)
            if promotes:
                try:
                    compare_and_set_alias(client, req.model_name, CHAMPION, new, op.expected_champion)
                except AliasConflictError as e:
                    self._rollback_after_failure(state, client, op, str(e), req.actor, req.dag_run)
                    raise
            ledger.record(
                client,
                req.model_name,
                ledger.LedgerEntry(
                    action="promote" if promotes else "deploy",
                    version=new,
                    from_version=op.expected_champion,
                    strategy=req.strategy,
                    actor=req.actor or ledger._user(),
                    dag_run=req.dag_run,
                    endpoint=state.endpoint,
                ),  # fmt: skip
            )
            state.previous_config = op.previous_config
            state.previous_champion = op.expected_champion
            op.status, op.promoted, op.lease_until = "done", promotes, 0.0
            state.add_history(
                op=req.op_id, action="deploy", version=new, strategy=req.strategy, status="done"
            )
            self._save(state)
            return Progress(
                self._result(state, "deploy", version=new, promoted=promotes, validation=op.validation)
            )

    def _check_routing(self, state: DeploymentState, stage: Stage) -> str | None:
        with self._api(state, admin=True) as api:
            served = _routing(api)
        got, want = set(served.versions if served else []), set(stage.config.versions)
        if got != want:
            return f"the gateway routes {sorted(got)}, not {sorted(want)}: someone changed it"
        return None

    def _fail(
        self, state: DeploymentState, op: Operation, client: Any, req: DeployRequest, reason: str
    ) -> Progress:
        previous = op.previous_config
        self._rollback_after_failure(state, client, op, reason, req.actor, req.dag_run)
        raise RolledBackError(
            f"Deploy of {req.model_name} version {req.version} ({req.strategy}) failed a health check and "
            f"was rolled back to {_describe(previous)}: {reason}. Fix the cause (the gateway log, the version's "
            "errors) and deploy again in a new run."
        )

    def _rollback_after_failure(
        self, state: DeploymentState, client: Any, op: Operation, reason: str, actor: str | None,
        dag_run: str | None,
    ) -> None:  # fmt: skip
        """Restore the routing from before deploy ``op`` and record the automatic rollback."""
        model = state.model_name
        log.error("Deploy of %s version %s failed (%s): rolling back.", model, op.version, reason)
        try:
            self._restore(state, op.previous_config)
        finally:
            ledger.record(
                client,
                model,
                ledger.LedgerEntry(
                    action="rollback_auto",
                    version=str(op.version),
                    from_version=alias_version(client, model, CHAMPION),
                    strategy=op.strategy or "",
                    actor=actor or ledger._user(),
                    dag_run=dag_run,
                    endpoint=state.endpoint,
                    reason=reason[:300],
                ),  # fmt: skip
            )
            op.status, op.lease_until = "rolled_back", 0.0
            state.add_history(op=op.id, action="deploy", version=str(op.version), status="rolled_back")
            self._save(state)

    def abort(self, op_id: str | None, reason: str = "the task was killed") -> bool:
        """Leave routing consistent after an interrupted operation ``op_id``: restore the routing from
        before it and record that. Does nothing when ``op_id`` does not hold the deployment.

        :return: whether anything was restored.
        """
        state = self._load()
        op = state.op if state else None
        if state is None or op is None or op.id != op_id or op.status != "in_progress":
            return False
        with self.target.activate():
            self._rollback_after_failure(state, self.target.client(), op, reason, None, None)
        return True

    def restore_routing(self, endpoint: str, config: DeploymentConfig | None) -> bool:
        """Put ``config`` back on the gateway at ``endpoint`` through its HTTP API only (no MLflow, no
        state of record): what ``on_kill`` does when MLflow cannot be used in the killed process. The
        state keeps the interrupted operation, whose lease runs out.

        :return: whether a routing was put back (None ``config``: nothing served before; not stopped).
        """
        if not config:
            return False
        with GatewayClient(endpoint, self._token()) as api:
            api.put_deployment(config, timeout=30.0)
        return True

    # -- rollback -------------------------------------------------------------------------------
    def rollback(
        self,
        model_name: str,
        *,
        op_id: str | None = None,
        actor: str | None = None,
        dag_run: str | None = None,
        reason: str = "requested",
        held_version: str | None = None,
    ) -> DeployResult:
        """Restore the routing and the champion from before the last deploy.

        :param held_version: roll back only when the deployment holds a canary of this version (a deploy
            with ``promote=False``), e.g. after its online gate timed out or failed; otherwise nothing
            changes (the result says ``reused``).
        :raises MlopsInputError: nothing to roll back to; nothing changed.
        :raises DeploymentBusyError: another operation holds the deployment; nothing changed.
        """
        return _again_on_conflict(
            lambda: self._rollback(model_name, op_id, actor, dag_run, reason, held_version)
        )

    def _rollback(
        self, model_name: str, op_id: str | None, actor: str | None, dag_run: str | None, reason: str,
        held_version: str | None,
    ) -> DeployResult:  # fmt: skip
        state = self._load()
        if state is None:
            raise MlopsInputError(
                f"Deployment {self.name!r} was never deployed: there is nothing to roll back."
            )
        state = self._load_for(model_name, state)
        with self.target.activate():
            client = self.target.client()
            op = state.op
            if op is not None and op_id is not None and op.id == op_id and op.action == "rollback":
                if op.status == "done" and self._alive(state):
                    return self._result(state, "rollback", version=op.version, reused=True)
                previous, expected_now, restore_champion = (
                    op.previous_config, op.expected_champion, op.restore_champion
                )  # fmt: skip
            else:
                self._check_not_busy(state, op_id)
                held = op is not None and op.is_held_canary_of(str(held_version or op.version))
                if held_version is not None and not held:
                    log.info(
                        "%s holds no canary of version %s: nothing to roll back.", self.name, held_version
                    )
                    return self._result(state, "rollback", version=None, reused=True)
                if state.previous_config is None and not held:
                    raise MlopsInputError(
                        f"Deployment {self.name!r} has no earlier routing to roll back to (the last deploy was "
                        "the first, or it was rolled back already): deploy the version you want instead."
                    )
                if state.handle and self._process_alive(state):
                    self._token()
                previous = state.previous_config
                expected_now = alias_version(client, model_name, CHAMPION)
                promoted = op is not None and op.action == "deploy" and op.promoted
                restore_champion = state.previous_champion if promoted else expected_now
                op = state.op = Operation(
                    id=op_id, action="rollback", version=previous.champion if previous else None,
                    expected_champion=expected_now, previous_config=previous, restore_champion=restore_champion,
                    rolled_back=op.version if op is not None and op.action == "deploy" else None,
                    lease_until=self._lease(0), host=this_host(),
                )  # fmt: skip
                self._save(state)
            self._restore(state, previous)
            if restore_champion != expected_now:
                if restore_champion is None:
                    if alias_version(client, model_name, CHAMPION) == expected_now:
                        client.delete_registered_model_alias(model_name, CHAMPION)
                else:
                    compare_and_set_alias(client, model_name, CHAMPION, restore_champion, expected_now)
            restored = previous.champion if previous else None
            rolled_back = op.rolled_back
            # A first model's held canary restores nothing: the entry names the version rolled back.
            ledger.record(
                client,
                model_name,
                ledger.LedgerEntry(
                    action="rollback",
                    version=str(restored if restored is not None else rolled_back),
                    rolled_back=rolled_back,
                    serving="none" if restored is None else str(restored),
                    from_version=expected_now,
                    strategy=str(previous.strategy if previous else None),
                    actor=actor or ledger._user(),
                    dag_run=dag_run,
                    endpoint=state.endpoint,
                    reason=reason,
                ),  # fmt: skip
            )
            state.previous_config, state.previous_champion = None, None
            op.status, op.lease_until = "done", 0.0
            state.add_history(op=op_id, action="rollback", version=restored, status="done")
            self._save(state)
            return self._result(state, "rollback", version=None if restored is None else str(restored))

    # -- teardown -------------------------------------------------------------------------------
    def teardown(self) -> None:
        """Stop the gateway and forget the deployment (the registry keeps its ledger)."""
        state = self._load()
        if state is not None:
            self._stop(state)
            self._save(None)
        self.store.forget(self.name)

    def status(self) -> dict[str, Any] | None:
        """The recorded state and whether the gateway is alive."""
        state = self._load()
        if state is None:
            return None
        out = state.to_json()
        out["alive"] = self._alive(state)
        return out


def _check_version_exists(client: Any, model_name: str, version: str) -> None:
    """:raises MlopsInputError: ``model_name`` has no version ``version``."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_model_version(model_name, version)
    except MlflowException as e:
        if "RESOURCE_DOES_NOT_EXIST" not in str(e.error_code):
            raise
        raise MlopsInputError(
            f"{model_name} has no version {version}: give a registered version (see the model's page in "
            "MLflow), or an alias that points to one."
        ) from None


def _again_on_conflict(decide: Callable[[], T]) -> T:
    """``decide``, again (three tries in all) when another writer changed the record first: the
    operation's own record is its first write, so nothing had changed yet."""
    for _ in range(2):
        try:
            return decide()
        except StateConflictError:
            pass
    return decide()


def _routing(api: GatewayClient) -> DeploymentConfig | None:
    """What the gateway routes now (None: nothing)."""
    served = api.get_deployment()
    return DeploymentConfig.parse(served) if served and served.get("routes") else None


def _describe(config: DeploymentConfig | None) -> str:
    if not config:
        return "no gateway (it was the first deploy)"
    return f"{config.strategy} routing of versions {config.versions}"


__all__ = [
    "Deployer",
    "DeploymentBusyError",
    "DeployResult",
    "Progress",
    "RolledBackError",
    "StateConflictError",
    "StepWatch",
]
