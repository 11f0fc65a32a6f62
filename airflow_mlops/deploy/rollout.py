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
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from airflow_mlops.core.errors import MlopsInputError, MlopsServiceError
from airflow_mlops.core.registry import CHAMPION, AliasConflictError, alias_version, compare_and_set_alias
from airflow_mlops.core.tracking import MlflowTarget
from airflow_mlops.deploy import ledger
from airflow_mlops.deploy.backends import GatewayBackend, GatewaySpec
from airflow_mlops.deploy.gateway_api import GatewayApi, is_error_status
from airflow_mlops.deploy.state import DeploymentState, StateStore, check_name
from airflow_mlops.deploy.validation import input_example_records, validate_version

log = logging.getLogger(__name__)

STRATEGIES = ("replace", "canary", "shadow", "ab", "bandit")
PROMOTING = ("replace", "canary")


class RolledBackError(MlopsServiceError):
    """A health check failed during the rollout; the previous routing (and champion) was restored."""


@dataclass
class DeployRequest:
    """What to deploy, and how.

    :param model_name: registered model name.
    :param version: the model version number to deploy.
    :param strategy: one of :data:`STRATEGIES`.
    :param canary_steps: traffic shares of the new version before full promotion (``canary``).
    :param step_seconds: how long each canary step is held and watched.
    :param settle_seconds: how long the last step (or a non-canary change) is watched.
    :param ab_weight: the new version's share in ``ab``.
    :param sticky_key: input field used as the ``ab`` split key when a request gives no ``key``.
    :param max_error_rate: largest share of 5xx answers of the new version in a step.
    :param min_requests: requests of the new version needed before the error rate counts.
    :param validate: run infra validation first.
    :param latency_budget_ms: p95 latency budget of infra validation.
    :param validation_requests: measured predict calls of infra validation.
    :param promote: ``canary`` only: False holds the last canary step instead of promoting, so an
        online gate can judge the canary; promote it afterwards by deploying the same version with
        ``replace``, or roll it back.
    :param op_id: id of this operation (Airflow: dag_id/run_id/task_id): retries share it.
    :param actor: who deploys (for the ledger).
    :param dag_run: ``dag_id/run_id`` for the ledger.
    """

    model_name: str
    version: str
    strategy: str = "replace"
    canary_steps: tuple[float, ...] = (0.1, 0.5)
    step_seconds: float = 30.0
    settle_seconds: float = 2.0
    ab_weight: float = 0.5
    sticky_key: str | None = None
    max_error_rate: float = 0.05
    min_requests: int = 20
    validate: bool = True
    latency_budget_ms: float = 500.0
    validation_requests: int = 20
    promote: bool = True
    op_id: str | None = None
    actor: str | None = None
    dag_run: str | None = None

    def check(self) -> None:
        """:raises MlopsInputError: a bad argument; the message names it and the fix."""
        if self.strategy not in STRATEGIES:
            raise MlopsInputError(f"Unknown strategy {self.strategy!r}: use one of {list(STRATEGIES)}.")
        if not str(self.version).isdigit():
            raise MlopsInputError(f"Version {self.version!r} is not a version number: resolve aliases first.")
        steps = list(self.canary_steps)
        if any(not 0 < s < 1 for s in steps) or steps != sorted(set(steps)):
            raise MlopsInputError(
                f"canary_steps {steps} must be increasing shares strictly between 0 and 1 (full promotion "
                "follows the last step), e.g. [0.1, 0.5]."
            )
        if not 0 < self.ab_weight < 1:
            raise MlopsInputError(f"ab_weight {self.ab_weight} must lie strictly between 0 and 1.")
        if self.step_seconds < 0 or self.settle_seconds < 0:
            raise MlopsInputError("step_seconds and settle_seconds must be >= 0.")
        if not 0 <= self.max_error_rate <= 1:
            raise MlopsInputError(f"max_error_rate {self.max_error_rate} must lie between 0 and 1.")


@dataclass
class Stage:
    """One routing the deployment passes through."""

    config: dict[str, Any]
    hold_seconds: float
    final: bool = False


def _config(model: str, strategy: str, routes: list[tuple[str, float]], champion: str, **extra: Any) -> dict:
    cfg: dict[str, Any] = {
        "model_name": model,
        "strategy": strategy,
        "routes": [{"version": str(v), "weight": round(float(w), 6)} for v, w in routes],
        "champion": str(champion),
    }
    cfg.update({k: v for k, v in extra.items() if v is not None})
    return cfg


def single_config(model: str, version: str) -> dict[str, Any]:
    """All traffic to one version."""
    return _config(model, "single", [(version, 1.0)], version)


def plan_stages(req: DeployRequest, champion: str | None) -> tuple[list[Stage], bool]:
    """The routings a deploy passes through, and whether it ends in full promotion.

    :param req: the request.
    :param champion: the version serving as champion now (None: nothing serves).
    :raises MlopsInputError: a strategy that compares against a champion, without one.
    """
    model, new = req.model_name, str(req.version)
    if champion is None or champion == new:
        if req.strategy in ("shadow", "ab", "bandit"):
            raise MlopsInputError(
                f"Strategy {req.strategy!r} compares version {new} with a champion, but "
                f"{model} has {'no champion' if champion is None else f'{new} as champion already'}: "
                "deploy a champion first with strategy='replace'."
            )
        return [Stage(single_config(model, new), req.settle_seconds, final=True)], True
    if req.strategy == "replace":
        return [Stage(single_config(model, new), req.settle_seconds, final=True)], True
    if req.strategy == "canary":
        stages = [
            Stage(_config(model, "canary", [(champion, 1 - w), (new, w)], champion), req.step_seconds)
            for w in req.canary_steps
        ]
        if not req.promote:
            stages[-1].final = True  # held: the canary keeps its share until a gate decides
            return stages, False
        return [*stages, Stage(single_config(model, new), req.settle_seconds, final=True)], True
    if req.strategy == "shadow":
        cfg = _config(model, "shadow", [(champion, 1.0), (new, 0.0)], champion)
    elif req.strategy == "ab":
        cfg = _config(
            model, "ab", [(champion, 1 - req.ab_weight), (new, req.ab_weight)], champion,
            sticky_key=req.sticky_key,
        )  # fmt: skip
    else:
        cfg = _config(model, "bandit", [(champion, 0.5), (new, 0.5)], champion)
    return [Stage(cfg, req.settle_seconds, final=True)], False


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
        """JSON form (no secrets: the admin token lives only in the private state file)."""
        from dataclasses import asdict

        return asdict(self)


class Deployer:
    """Deploys and rolls back one named deployment (one gateway) of one registered model.

    :param name: deployment name (state file, container names).
    :param backend: where the gateway runs.
    :param target: the MLflow registry.
    :param store: the deployment state folder.
    :param port: the gateway's port on 127.0.0.1 (None: a free one, kept across restarts).
    :param log_dir: prediction-log folder (None: ``<state_dir>/<name>/predictions``).
    :param admin_token: the gateway admin token (None: generated once and kept in the private state).
    :param gateway_tracking_uri: the tracking URI as the gateway sees it (None: the target's).
    :param ready_timeout: seconds for a gateway to start and load its models.
    :param step_check: extra health check run after each held step (raise to fail the step); it gets
        the endpoint, the stage config and the new version.
    :param poll_seconds: how often a held step checks the gateway.
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
        gateway_tracking_uri: str | None = None,
        ready_timeout: float = 180.0,
        step_check: Callable[[str, dict[str, Any], str], None] | None = None,
        poll_seconds: float = 0.5,
    ) -> None:
        self.name = check_name(name)
        self.backend = backend
        self.target = target
        self.store = store or StateStore()
        self.port = port
        self.log_dir = log_dir
        self.admin_token = admin_token
        self.gateway_tracking_uri = gateway_tracking_uri
        self.ready_timeout = ready_timeout
        self.step_check = step_check
        self.poll_seconds = poll_seconds
        self._req = DeployRequest("", "0")  # the request being deployed (its error-rate limits)

    # -- state and gateway plumbing -------------------------------------------------------------
    def _load_state(self, model_name: str) -> DeploymentState:
        state = self.store.load(self.name)
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

    def _spec(self, state: DeploymentState, config: dict[str, Any]) -> GatewaySpec:
        t = self.target
        creds = {
            "MLFLOW_TRACKING_USERNAME": t.username,
            "MLFLOW_TRACKING_PASSWORD": t.password,
            "MLFLOW_TRACKING_TOKEN": t.token,
        }
        from pathlib import Path

        return GatewaySpec(
            name=self.name,
            config=config,
            tracking_uri=self.gateway_tracking_uri or t.tracking_uri,
            registry_uri=t.registry_uri,
            admin_token=self.admin_token or state.admin_token,
            workdir=self.store.workdir(self.name),
            log_dir=Path(self.log_dir) if self.log_dir else None,
            port=state.port or self.port,
            credentials={k: v for k, v in creds.items() if v},
            labels={"org.airflow-mlops.role": "serving"},
        )

    def _api(self, state: DeploymentState) -> GatewayApi | None:
        if not state.endpoint:
            return None
        return GatewayApi(state.endpoint, self.admin_token or state.admin_token)

    def _alive(self, state: DeploymentState) -> bool:
        api = self._api(state)
        return bool(state.handle) and self.backend.alive(state.handle) and api is not None and api.healthy()

    def _apply(self, state: DeploymentState, config: dict[str, Any]) -> None:
        """Route as ``config``: a PUT to a live gateway, else a (re)start with it on the same port."""
        if state.handle and self.backend.alive(state.handle):
            api = self._api(state)
            assert api is not None
            api.put_deployment(config, timeout=self.ready_timeout)
        else:
            if state.handle:
                self.backend.stop(state.handle)  # clean up a dead one (container, zombie)
            handle = self.backend.start(self._spec(state, config), ready_timeout=self.ready_timeout)
            state.handle, state.port, state.endpoint = handle, handle["port"], handle["endpoint"]
        state.config = config
        self.store.save(state)

    def _watch(self, state: DeploymentState, stage: Stage, new: str) -> None:
        """Hold a stage and check its health; raise MlopsServiceError when it fails."""
        api = self._api(state)
        assert api is not None
        before = api.request_counts(stage.config["model_name"]).get(new, {})
        deadline = time.monotonic() + stage.hold_seconds
        while True:
            if not self.backend.alive(state.handle):
                raise MlopsServiceError(
                    f"the gateway died ({self.backend.kind}); its log:\n{self.backend.logs(state.handle)}"
                )
            if not api.healthy():
                raise MlopsServiceError(
                    f"the gateway at {state.endpoint} stopped answering /health or /ready"
                )
            if time.monotonic() >= deadline:
                break
            time.sleep(min(self.poll_seconds, max(0.0, deadline - time.monotonic())))
        served = api.get_deployment()
        got = {str(r["version"]) for r in served.get("routes", [])}
        want = {str(r["version"]) for r in stage.config["routes"]}
        if got != want:
            raise MlopsServiceError(
                f"the gateway routes {sorted(got)}, not {sorted(want)}: someone changed it"
            )
        after = api.request_counts(stage.config["model_name"]).get(new, {})
        total = sum(after.values()) - sum(before.values())
        errors = sum(v for k, v in after.items() if is_error_status(k)) - sum(
            v for k, v in before.items() if is_error_status(k)
        )
        if total >= self._req.min_requests and total > 0 and errors / total > self._req.max_error_rate:
            raise MlopsServiceError(
                f"version {new} failed {errors:.0f} of {total:.0f} requests in the step "
                f"(over the {self._req.max_error_rate:.0%} limit)"
            )
        if self.step_check is not None:
            self.step_check(state.endpoint or "", stage.config, new)

    def _restore(self, state: DeploymentState, config: dict[str, Any] | None) -> None:
        """Put the routing back (restarting a dead gateway); no routing before: stop the gateway."""
        if config is None:
            if state.handle:
                self.backend.stop(state.handle)
            state.handle, state.endpoint, state.config = {}, None, None
            self.store.save(state)
            return
        self._apply(state, config)

    def _result(self, state: DeploymentState, action: str, **kw: Any) -> DeployResult:
        cfg = state.config or {}
        return DeployResult(
            deployment=self.name,
            model_name=state.model_name,
            backend=state.backend,
            endpoint=state.endpoint,
            strategy=str(cfg.get("strategy", "")),
            served_versions=state.served_versions(),
            weights=state.weights(),
            champion=cfg.get("champion"),
            action=action,
            handle={k: v for k, v in state.handle.items() if k != "config_path"},
            **kw,
        )

    # -- deploy ---------------------------------------------------------------------------------
    def deploy(self, req: DeployRequest) -> DeployResult:
        """Deploy ``req.version`` with ``req.strategy``; see the module docstring.

        :raises MlopsInputError: bad arguments; nothing changed.
        :raises InfraValidationError: the version failed infra validation; nothing changed.
        :raises RolledBackError: a health check failed; previous routing and champion restored.
        :raises AliasConflictError: champion moved meanwhile; routing restored, nothing promoted.
        """
        req.check()
        self._req = req
        new = str(req.version)
        with self.store.lock(self.name), self.target.activate():
            client = self.target.client()
            state = self._load_state(req.model_name)
            last = state.last_op
            same_op = req.op_id is not None and last.get("id") == req.op_id and last.get("action") == "deploy"
            if same_op and last.get("status") == "done" and self._alive(state):
                api = self._api(state)
                assert api is not None
                if _same_routes(api.get_deployment(), state.config):
                    log.info("Deploy %s already done by an earlier try: nothing to change.", req.op_id)
                    return self._result(
                        state, "deploy", version=new, promoted=bool(last.get("promoted")), reused=True
                    )
            if same_op and last.get("status") == "in_progress":
                # An interrupted try: start again from what it saw, not from its half-done changes.
                expected = last.get("expected_champion")
                previous = last.get("previous_config")
            else:
                expected = alias_version(client, req.model_name, CHAMPION)
                previous = state.config if state.config else None
                if _holds_canary_of(state, new):
                    # Promoting a held canary: what it replaces is the routing from before the canary.
                    previous = state.previous_config
            serving_champion = (previous or {}).get("champion") or expected
            if (
                req.strategy == "replace"
                and expected == new
                and _same_routes(previous, single_config(req.model_name, new))
                and self._alive(state)
            ):
                log.info(
                    "%s version %s already serves alone as champion: nothing to change.", req.model_name, new
                )
                return self._result(state, "deploy", version=new, promoted=True, reused=True)
            stages, promotes = plan_stages(req, serving_champion)
            state.last_op = {
                "id": req.op_id,
                "action": "deploy",
                "version": new,
                "strategy": req.strategy,
                "status": "in_progress",
                "expected_champion": expected,
                "previous_config": previous,
            }
            self.store.save(state)

            report = None
            if req.validate:
                records = input_example_records(req.model_name, new)
                try:
                    report = validate_version(
                        self.backend.validation_backend(),
                        self._spec(state, single_config(req.model_name, new)),
                        new,
                        records,
                        latency_budget_ms=req.latency_budget_ms,
                        requests=req.validation_requests,
                        ready_timeout=self.ready_timeout,
                    )
                except MlopsServiceError:
                    state.last_op["status"] = "failed_validation"
                    self.store.save(state)
                    raise
                ledger_tags = {
                    "mlops.deploy.infra_validation": "passed",
                    "mlops.deploy.p95_ms": report.p95_ms,
                }
                for k, v in ledger_tags.items():
                    client.set_model_version_tag(req.model_name, new, k, str(v))

            # A gateway that died since the last deploy comes back with the last good routing first.
            if previous is not None and not (state.handle and self.backend.alive(state.handle)):
                self._apply(state, previous)

            try:
                for stage in stages:
                    log.info("Routing %s: %s", self.name, stage.config)
                    self._apply(state, stage.config)
                    self._watch(state, stage, new)
                if promotes:
                    compare_and_set_alias(client, req.model_name, CHAMPION, new, expected)
            except (MlopsServiceError, AliasConflictError) as e:
                self._rollback_after_failure(state, client, req, previous, str(e))
                if isinstance(e, AliasConflictError):
                    raise
                raise RolledBackError(
                    f"Deploy of {req.model_name} version {new} ({req.strategy}) failed a health check and "
                    f"was rolled back to {_describe(previous)}: {e}"
                ) from e

            entry = ledger.LedgerEntry(
                action="promote" if promotes else "deploy",
                version=new,
                from_version=expected,
                strategy=req.strategy,
                actor=req.actor or ledger._user(),
                dag_run=req.dag_run,
                endpoint=state.endpoint,
            )
            ledger.record(client, req.model_name, entry)
            state.previous_config = previous
            state.previous_champion = expected
            state.last_op.update(status="done", promoted=promotes)
            state.add_history(
                op=req.op_id, action="deploy", version=new, strategy=req.strategy, status="done"
            )
            self.store.save(state)
            return self._result(
                state, "deploy", version=new, promoted=promotes, validation=report and report.to_dict()
            )

    def _rollback_after_failure(
        self, state: DeploymentState, client: Any, req: DeployRequest, previous: dict | None, reason: str
    ) -> None:
        log.error("Deploy of %s version %s failed (%s): rolling back.", req.model_name, req.version, reason)
        self._restore(state, previous)
        ledger.record(
            client,
            req.model_name,
            ledger.LedgerEntry(
                action="rollback_auto",
                version=str(req.version),
                from_version=alias_version(client, req.model_name, CHAMPION),
                strategy=req.strategy,
                actor=req.actor or ledger._user(),
                dag_run=req.dag_run,
                endpoint=state.endpoint,
                reason=reason[:300],
            ),
        )
        state.last_op["status"] = "rolled_back"
        state.add_history(op=req.op_id, action="deploy", version=str(req.version), status="rolled_back")
        self.store.save(state)

    # -- rollback -------------------------------------------------------------------------------
    def rollback(
        self,
        model_name: str,
        *,
        op_id: str | None = None,
        actor: str | None = None,
        dag_run: str | None = None,
        reason: str = "requested",
    ) -> DeployResult:
        """Restore the routing and the champion from before the last deploy.

        :raises MlopsInputError: nothing to roll back to; nothing changed.
        """
        with self.store.lock(self.name), self.target.activate():
            client = self.target.client()
            state = self.store.load(self.name)
            if state is None:
                raise MlopsInputError(
                    f"Deployment {self.name!r} was never deployed: there is nothing to roll back."
                )
            state = self._load_state(model_name)
            last = state.last_op
            if op_id is not None and last.get("id") == op_id and last.get("action") == "rollback":
                if last.get("status") == "done" and self._alive(state):
                    return self._result(state, "rollback", version=last.get("version"), reused=True)
                previous, expected_now, restore_champion = (
                    last.get("restore_config"), last.get("champion_was"), last.get("restore_champion")
                )  # fmt: skip
            else:
                if state.previous_config is None:
                    raise MlopsInputError(
                        f"Deployment {self.name!r} has no earlier routing to roll back to (the last deploy was "
                        "the first, or it was rolled back already): deploy the version you want instead."
                    )
                previous = state.previous_config
                expected_now = alias_version(client, model_name, CHAMPION)
                promoted = last.get("action") == "deploy" and last.get("promoted")
                restore_champion = state.previous_champion if promoted else expected_now
                state.last_op = {
                    "id": op_id,
                    "action": "rollback",
                    "status": "in_progress",
                    "restore_config": previous,
                    "champion_was": expected_now,
                    "restore_champion": restore_champion,
                    "version": previous.get("champion"),
                }
                self.store.save(state)
            self._restore(state, previous)
            if restore_champion != expected_now:
                if restore_champion is None:
                    if alias_version(client, model_name, CHAMPION) == expected_now:
                        client.delete_registered_model_alias(model_name, CHAMPION)
                else:
                    compare_and_set_alias(client, model_name, CHAMPION, restore_champion, expected_now)
            ledger.record(
                client,
                model_name,
                ledger.LedgerEntry(
                    action="rollback",
                    version=str(previous.get("champion")),
                    from_version=expected_now,
                    strategy=str(previous.get("strategy")),
                    actor=actor or ledger._user(),
                    dag_run=dag_run,
                    endpoint=state.endpoint,
                    reason=reason,
                ),
            )
            state.previous_config, state.previous_champion = None, None
            state.last_op["status"] = "done"
            state.add_history(op=op_id, action="rollback", version=previous.get("champion"), status="done")
            self.store.save(state)
            return self._result(state, "rollback", version=str(previous.get("champion")))

    # -- teardown -------------------------------------------------------------------------------
    def teardown(self) -> None:
        """Stop the gateway and forget the deployment (the registry keeps its ledger)."""
        with self.store.lock(self.name):
            state = self.store.load(self.name)
            if state is not None and state.handle:
                self.backend.stop(state.handle)
            self.store.delete(self.name)

    def status(self) -> dict[str, Any] | None:
        """The recorded state (without the admin token) and whether the gateway is alive."""
        state = self.store.load(self.name)
        if state is None:
            return None
        out = state.to_json()
        out.pop("admin_token", None)
        out["alive"] = self._alive(state)
        return out


def _holds_canary_of(state: DeploymentState, version: str) -> bool:
    """Whether the deployment now holds a canary of ``version`` (a deploy with ``promote=False``)."""
    last = state.last_op or {}
    return (
        last.get("action") == "deploy"
        and last.get("status") == "done"
        and last.get("version") == version
        and last.get("strategy") == "canary"
        and not last.get("promoted")
    )


def _same_routes(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    def key(c: dict[str, Any] | None) -> Any:
        c = c or {}
        routes = sorted(
            (str(r["version"]), round(float(r.get("weight", 1.0)), 6)) for r in c.get("routes", [])
        )
        return c.get("strategy"), routes, str(c.get("champion"))

    return key(a) == key(b)


def _describe(config: dict[str, Any] | None) -> str:
    if not config:
        return "no gateway (it was the first deploy)"
    return f"{config.get('strategy')} routing of versions {[r['version'] for r in config.get('routes', [])]}"


__all__ = [
    "Deployer",
    "DeployRequest",
    "DeployResult",
    "RolledBackError",
    "STRATEGIES",
    "plan_stages",
]
