"""DeployOperator: put a model version behind the gateway with a rollout strategy, or roll back."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, conf

from airflow_mlops.core.errors import MlopsServiceError
from airflow_mlops.deploy.plan import DeployRequest
from airflow_mlops.hooks.mlflow import MlflowHook
from airflow_mlops.links.gateway import GatewayMetricsLink
from airflow_mlops.links.mlflow import MlflowModelVersionLink
from airflow_mlops.links.publish import deploy_links
from airflow_mlops.serving.client import ADMIN_TOKEN_ENV, FEEDBACK_TOKEN_ENV

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_mlops.deploy.backends import GatewayBackend
    from airflow_mlops.deploy.rollout import Deployer, DeployResult, Progress

ACTIONS = ("deploy", "rollback")
BACKENDS = ("local", "docker", "external")
GATEWAY_URL_ENV = "MLOPS_GATEWAY_URL"
# The rollout options passed on to DeployRequest, each read as its type; left None (or ""): the
# request's own default, so the defaults live in one place.
_REQUEST_OPTIONS: dict[str, Callable[[Any], Any]] = {
    "strategy": str,
    "canary_steps": lambda steps: tuple(float(s) for s in steps),
    "step_seconds": float,
    "settle_seconds": float,
    "ab_weight": float,
    "sticky_key": str,
    "max_error_rate": float,
    "min_requests": int,
    "validate": bool,
    "promote": bool,
    "latency_budget_ms": float,
}
# No trigger event comes sooner than this after a deferral. Airflow's scheduler fails a resumed task when
# the executor's "success" of the deferring process is drained after the task resumed (queued or
# running again): apache/airflow#72716, #71580 (open in 3.3). A short canary step (the examples hold
# 5 s) made the LocalExecutor kill the resumed task ~6 s later ("Server indicated the task shouldn't be
# running anymore").
DEFER_FLOOR_SECONDS = 15.0


class DeployOperator(BaseOperator):
    """Deploy a registered model version behind the model gateway, progressively, with rollback.

    ``action="deploy"``: resolve ``version`` (or ``alias``), run infra validation in a throwaway gateway
    (the version loads, predicts its logged input example, p95 latency under ``latency_budget_ms``) and
    only then route traffic with ``strategy``: ``replace``, ``canary`` (``canary_steps`` held
    ``step_seconds`` each, with health checks), ``shadow``, ``ab`` or ``bandit``. ``replace`` and
    ``canary`` end in full promotion: the ``champion`` alias moves, by compare-and-set, only if it still
    points where it did when the deploy began. A failed health check rolls back by itself (task fails).
    Every change is recorded in the promotion ledger (version tags and a history tag on the model).

    ``action="rollback"``: restore the routing and the champion from before the last deploy. With a
    ``version``, only a held canary of that version is rolled back (nothing to do otherwise): the branch
    to take after an online gate failed, timed out or errored.

    Deferrable (default ``[operators] default_deferrable``): each held stage is watched by a trigger
    (:class:`~airflow_mlops.triggers.deploy.DeployStepTrigger`: ``/health``, ``/ready``, 5xx share), so
    no worker slot sleeps through a canary; the task resumes at the next stage, or rolls back and fails.

    Retries of the same task instance are idempotent. The deployment's state of record (where the
    gateway runs, its routing, what to roll back to, the operation in progress) is kept in MLflow, so a
    task on any worker finds it; an operation in progress elsewhere makes the task fail with a clear
    message (retried). The gateway runs as a managed subprocess (``backend="local"``) or a hardened
    Docker container (``backend="docker"``); ``backend="external"`` drives a gateway run by someone else
    (the docker-compose ``gateway`` service): only its routing changes.

    Returns (XCom) ``endpoint``, ``served_versions``, ``weights``, ``champion``, ``strategy``,
    ``promoted``, ``version`` and the validation report. No token is ever logged or pushed.

    The rollout options (``strategy`` to ``latency_budget_ms``) left None take the defaults of
    :class:`~airflow_mlops.deploy.plan.DeployRequest` (``replace``; canary steps 0.1, 0.5 held 30 s each).

    :param model_name: registered model name.
    :param version: the model version to deploy (or give ``alias``).
    :param alias: an alias to resolve (e.g. ``challenger``) when ``version`` is not given.
    :param action: ``deploy`` or ``rollback``.
    :param strategy: ``replace``, ``canary``, ``shadow``, ``ab`` or ``bandit``.
    :param backend: ``local``, ``docker`` or ``external``.
    :param deployment_name: the deployment (one gateway) to act on (default: the model name).
    :param canary_steps: traffic shares of the new version before full promotion.
    :param step_seconds: seconds each canary step is held and watched.
    :param settle_seconds: seconds the final routing is watched before promotion.
    :param ab_weight: the new version's share in ``ab``.
    :param sticky_key: input field used as the ``ab`` split key.
    :param max_error_rate: largest share of 5xx answers of the new version in a step.
    :param min_requests: requests needed in a step before the error rate counts.
    :param validate: run infra validation (default True).
    :param promote: ``canary`` only: False holds the last canary step (no promotion) so that an online
        gate can judge it; promote afterwards by deploying the same version with ``strategy="replace"``
        (``@champion`` moves then), or roll back with ``action="rollback"``.
    :param latency_budget_ms: p95 latency budget of infra validation.
    :param port: the gateway's port on 127.0.0.1 (default: a free one, kept across restarts).
    :param state_dir: this worker's work folder for gateway files (default ``$MLOPS_DEPLOY_STATE_DIR``
        or ``~/.mlops/deployments``); the state of record is in MLflow.
    :param log_dir: prediction-log folder (default ``<state_dir>/<deployment>/predictions``).
    :param gateway_tracking_uri: tracking URI as the gateway sees it (default: the connection's).
    :param replicas: gateway replicas behind Debian's nginx (``local``: processes, ``docker``: containers
        with ``docker_network_mode="host"``); a routing change is loaded on every replica before any
        switches (see :mod:`airflow_mlops.deploy.replicas`). 1: one gateway, no load balancer.
    :param docker_image: gateway image (``docker``).
    :param docker_network_mode: ``bridge`` or ``host`` (``docker``; see docker_backend).
    :param docker_cpus: CPU limit (``docker``).
    :param docker_memory: memory limit (``docker``).
    :param gateway_url: base URL of an ``external`` gateway (default: the ``gateway_conn_id`` host,
        else ``$MLOPS_GATEWAY_URL``).
    :param gateway_conn_id: the gateway's connection: host = URL (``external``), password = admin
        token, extra ``feedback_token``.
    :param admin_token: the gateway's admin token (default: the connection's password, else
        ``$MLOPS_GATEWAY_ADMIN_TOKEN``, else, for a gateway this worker starts, one generated and kept
        in a private file here). Workers that share a deployment need the same token.
    :param feedback_token: the token the gateway's ``/feedback`` requires (default: the connection's
        extra ``feedback_token``, else ``$MLOPS_GATEWAY_FEEDBACK_TOKEN``); passed to the gateway.
    :param ready_timeout: seconds for a gateway to start and load its models.
    :param poll_interval: seconds between the trigger's health checks of a held stage.
    :param min_defer_seconds: no stage resumes sooner than this after its deferral, so that a short hold
        (or a failure seen at once) cannot race Airflow's scheduler (see ``DEFER_FLOOR_SECONDS``); 0
        where no executor runs the task (``dag.test()`` runs the trigger inline).
    :param mlflow_conn_id: MLflow connection.
    :param deferrable: watch held stages in the triggerer instead of a worker slot; default from
        ``[operators] default_deferrable``.
    """

    template_fields: Sequence[str] = (
        "model_name",
        "version",
        "alias",
        "action",
        "strategy",
        "backend",
        "deployment_name",
        "canary_steps",
        "step_seconds",
        "promote",
        "validate",
        "sticky_key",
        "state_dir",
        "log_dir",
        "gateway_tracking_uri",
        "docker_image",
        "gateway_url",
    )
    ui_color = "#c6e5ff"
    operator_extra_links = (MlflowModelVersionLink(), GatewayMetricsLink())

    def __init__(
        self,
        *,
        model_name: str,
        version: str | int | None = None,
        alias: str | None = None,
        action: str = "deploy",
        strategy: str | None = None,
        backend: str = "local",
        deployment_name: str | None = None,
        canary_steps: Sequence[float] | None = None,
        step_seconds: float | None = None,
        settle_seconds: float | None = None,
        ab_weight: float | None = None,
        sticky_key: str | None = None,
        max_error_rate: float | None = None,
        min_requests: int | None = None,
        validate: bool | None = None,
        promote: bool | None = None,
        latency_budget_ms: float | None = None,
        port: int | None = None,
        state_dir: str | None = None,
        log_dir: str | None = None,
        gateway_tracking_uri: str | None = None,
        replicas: int = 1,
        docker_image: str = "airflow-mlops-gateway:latest",
        docker_network_mode: str = "bridge",
        docker_cpus: float = 1.0,
        docker_memory: str = "1g",
        gateway_url: str | None = None,
        gateway_conn_id: str | None = None,
        admin_token: str | None = None,
        feedback_token: str | None = None,
        ready_timeout: float = 180.0,
        poll_interval: float = 2.0,
        min_defer_seconds: float = DEFER_FLOOR_SECONDS,
        mlflow_conn_id: str = MlflowHook.default_conn_name,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.version = version
        self.alias = alias
        self.action = action
        self.strategy = strategy
        self.backend = backend
        self.deployment_name = deployment_name
        self.canary_steps = canary_steps
        self.step_seconds = step_seconds
        self.settle_seconds = settle_seconds
        self.ab_weight = ab_weight
        self.sticky_key = sticky_key
        self.max_error_rate = max_error_rate
        self.min_requests = min_requests
        self.validate = validate
        self.promote = promote
        self.latency_budget_ms = latency_budget_ms
        self.port = port
        self.state_dir = state_dir
        self.log_dir = log_dir
        self.gateway_tracking_uri = gateway_tracking_uri
        self.replicas = replicas
        self.docker_image = docker_image
        self.docker_network_mode = docker_network_mode
        self.docker_cpus = docker_cpus
        self.docker_memory = docker_memory
        self.gateway_url = gateway_url
        self.gateway_conn_id = gateway_conn_id
        self.admin_token = admin_token
        self.feedback_token = feedback_token
        self.ready_timeout = ready_timeout
        self.poll_interval = poll_interval
        self.min_defer_seconds = min_defer_seconds
        self.mlflow_conn_id = mlflow_conn_id
        self.deferrable = deferrable
        self._op_id: str | None = None
        self._restore: dict[str, Any] | None = None

    @cached_property
    def hook(self) -> MlflowHook:
        """The MLflow hook."""
        return MlflowHook(self.mlflow_conn_id)

    def _check_args(self) -> None:
        from airflow_mlops.core.errors import MlopsInputError

        if self.action not in ACTIONS:
            raise MlopsInputError(f"action={self.action!r} is not known: use one of {list(ACTIONS)}.")
        if self.backend not in BACKENDS:
            raise MlopsInputError(f"backend={self.backend!r} is not known: use one of {list(BACKENDS)}.")
        if self.action == "deploy" and (self.version in (None, "") and not self.alias):
            raise MlopsInputError("Give the model `version` to deploy, or an `alias` to resolve.")
        if self.version not in (None, "") and self.alias:
            raise MlopsInputError("Give either `version` or `alias`, not both.")
        if isinstance(self.replicas, bool) or not isinstance(self.replicas, int) or self.replicas < 1:
            raise MlopsInputError(
                f"replicas={self.replicas!r}: give a whole number of gateway replicas, 1 or more."
            )
        if self.replicas > 1 and self.backend == "external":
            raise MlopsInputError(
                "replicas applies to the 'local' and 'docker' backends: an external gateway's replicas are run "
                "by whoever runs it (point gateway_url at their load balancer)."
            )

    def _gateway_conn(self) -> Any:
        from airflow.sdk import BaseHook

        return BaseHook.get_connection(self.gateway_conn_id) if self.gateway_conn_id else None

    def _tokens(self) -> tuple[str | None, str | None]:
        """Admin and feedback tokens: the argument, else the gateway connection (password / extra
        ``feedback_token``), else ``$MLOPS_GATEWAY_ADMIN_TOKEN`` / ``$MLOPS_GATEWAY_FEEDBACK_TOKEN``.
        Registered with the secrets masker; never logged or pushed."""
        import os

        from airflow_mlops.errors_airflow import mask_secrets

        conn = self._gateway_conn()
        admin = self.admin_token or (conn.password if conn else None) or os.environ.get(ADMIN_TOKEN_ENV)
        extra = (conn.extra_dejson if conn else {}) or {}
        feedback = self.feedback_token or extra.get("feedback_token") or os.environ.get(FEEDBACK_TOKEN_ENV)
        mask_secrets(admin, feedback)
        return admin or None, feedback or None

    def _external_url(self) -> str:
        """URL of an ``external`` gateway."""
        import os

        from airflow_mlops.core.errors import MlopsInputError
        from airflow_mlops.hooks._conn import conn_url

        url = self.gateway_url or None
        conn = self._gateway_conn()
        if not url and conn is not None and conn.host:
            url = conn_url(conn, "the gateway's base URL, such as http://gateway:8080")
        url = url or os.environ.get(GATEWAY_URL_ENV)
        if not url:
            raise MlopsInputError(
                f"backend='external' needs the gateway's URL: give gateway_url, a gateway_conn_id, or set "
                f"{GATEWAY_URL_ENV}."
            )
        if not self._tokens()[0]:
            raise MlopsInputError(
                f"backend='external' needs the gateway's admin token: put it in the password of "
                f"gateway_conn_id, or set {ADMIN_TOKEN_ENV}."
            )
        return url

    def _backend(self) -> GatewayBackend:
        backend = self._single_backend()
        if self.replicas > 1:
            from airflow_mlops.deploy.replicas import ReplicatedBackend

            return ReplicatedBackend(backend, self.replicas)
        return backend

    def _single_backend(self) -> GatewayBackend:
        from airflow_mlops.deploy.factory import make_backend

        if self.backend == "external":
            return make_backend("external", endpoint=self._external_url())
        if self.backend == "docker":
            return make_backend(
                "docker",
                image=self.docker_image,
                network_mode=self.docker_network_mode,
                cpus=self.docker_cpus,
                memory=self.docker_memory,
            )
        return make_backend("local")

    def _deployer(self) -> Deployer:
        from airflow_mlops.deploy.rollout import Deployer
        from airflow_mlops.deploy.state import StateStore

        admin, feedback = self._tokens()
        return Deployer(
            self.deployment_name or self.model_name,
            self._backend(),
            self.hook.target,
            StateStore(self.state_dir),
            port=int(self.port) if self.port else None,
            admin_token=admin,
            feedback_token=feedback,
            log_dir=self.log_dir,
            gateway_tracking_uri=self.gateway_tracking_uri,
            ready_timeout=float(self.ready_timeout),
        )

    def _resolve_version(self) -> str:
        from airflow_mlops.core.errors import MlopsInputError

        if self.version not in (None, ""):
            version = str(self.version).strip()
            if not version.isdigit():
                raise MlopsInputError(
                    f"version={self.version!r} is not a version number: give a number, or use `alias`."
                )
            return version
        alias = str(self.alias).removeprefix("@")
        mv = self.hook.get_version_by_alias(self.model_name, alias)
        if mv is None:
            raise MlopsInputError(f"{self.model_name}@{alias} is not set: set the alias, or give `version`.")
        return str(mv.version)

    def _ids(self, context: Context) -> tuple[str, str, str]:
        ti = context["ti"]
        op_id = f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/{getattr(ti, 'map_index', -1)}"
        return op_id, f"{ti.dag_id}/{ti.run_id}", f"airflow:{ti.dag_id}"

    def _request(self, context: Context, version: str) -> DeployRequest:
        op_id, dag_run, actor = self._ids(context)
        given = {name: getattr(self, name) for name in _REQUEST_OPTIONS}
        options = {k: _REQUEST_OPTIONS[k](v) for k, v in given.items() if v is not None and v != ""}
        return DeployRequest(self.model_name, version, op_id=op_id, actor=actor, dag_run=dag_run, **options)

    def execute(self, context: Context) -> dict[str, Any]:
        """Deploy or roll back; return the deployment's endpoint, versions and weights."""
        _preload()
        with _errors():
            self._check_args()
            op_id, dag_run, actor = self._ids(context)
            self._op_id = op_id
            deployer = self._deployer()
            if self.action == "rollback":
                held = str(self.version) if self.version not in (None, "") else None
                result = deployer.rollback(
                    self.model_name, op_id=op_id, actor=actor, dag_run=dag_run, held_version=held
                )
                return self._done(result)
            request = self._request(context, self._resolve_version())
            if not self.deferrable:
                return self._done(deployer.deploy(request))
            return self._next(deployer, request, deployer.start(request))

    def _next(
        self, deployer: Deployer, request: DeployRequest, progress: Progress, deferred: int = 0
    ) -> dict[str, Any]:
        """Finish, or defer the held stage to the trigger (resuming in :meth:`execute_complete`)."""
        import time
        from datetime import timedelta

        from airflow_mlops.triggers.deploy import DeployStepTrigger

        while progress.watch is not None and progress.watch.hold_seconds <= 0:
            # Nothing to hold: judge the stage at once (no deferral round trip).
            progress = deployer.finish_stage(request, progress.stage, deployer.watch(progress.watch))
        if progress.result is not None:
            return {**self._done(progress.result), "deferred_stages": deferred}
        w = progress.watch
        if w is None:  # a Progress holds a result or a stage to watch
            raise MlopsServiceError(
                f"Deploy {self._op_id} stopped with neither a result nor a stage to watch."
            )
        now = time.time()
        self.defer(
            trigger=DeployStepTrigger(
                endpoint=w.endpoint,
                model_name=w.model_name,
                version=w.version,
                stage=progress.stage,
                end_time=now + w.hold_seconds,
                max_error_rate=w.max_error_rate,
                min_requests=w.min_requests,
                baseline=w.baseline,
                poll_interval=float(self.poll_interval),
                not_before=now + float(self.min_defer_seconds),
            ),  # fmt: skip
            method_name="execute_complete",
            kwargs={
                "version": w.version,
                "stage": progress.stage,
                "deferred": deferred + 1,
                # What on_kill puts back when the resumed task is killed before MLflow could be used.
                "restore": {
                    "endpoint": w.endpoint,
                    "config": w.previous_config.to_dict() if w.previous_config else None,
                },
            },  # fmt: skip
            timeout=timedelta(seconds=max(w.hold_seconds, float(self.min_defer_seconds)) + 600),
        )
        raise AssertionError("defer() returned")  # pragma: no cover

    def execute_complete(
        self,
        context: Context,
        event: dict[str, Any] | None = None,
        version: str = "",
        stage: int = 0,
        deferred: int = 0,
        restore: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Resume after a held stage: judge it (rolling back on failure), then go on or finish."""
        self._op_id, self._restore = self._ids(context)[0], restore
        _preload()
        with _errors():
            if not isinstance(event, dict) or "status" not in event:
                raise MlopsServiceError(f"The deploy trigger sent an unexpected event: {event!r}.")
            if event["status"] == "error":
                problem = f"watching the stage failed: {event.get('message')}"
            elif event["status"] == "failed":
                problem = str(event.get("reason") or "the stage failed")
            elif event["status"] == "ok":
                problem = None
            else:
                raise MlopsServiceError(f"The deploy trigger sent an unknown status {event['status']!r}.")
            deployer = self._deployer()
            request = self._request(context, str(event.get("version") or version))
            stage = int(event.get("stage", stage))
            progress = deployer.finish_stage(request, stage, problem)
            # dag.test() replaces the deferral kwargs by the event: stages before this one deferred too.
            return self._next(deployer, request, progress, max(deferred, stage + 1))

    def on_kill(self) -> None:
        """Leave routing consistent: an interrupted deploy gets the routing from before it back.

        It runs in the signal handler, in the main thread, which may be inside an import: when MLflow is
        not (fully) imported yet it is not imported here (a half-initialized module fails), and the
        routing from before the deploy, carried by the deferral, is put back through the gateway's
        HTTP API only.
        """
        if self._op_id is None or self.action != "deploy":
            return
        from airflow_mlops.core.redact import redact
        from airflow_mlops.serving.config import DeploymentConfig

        try:
            if _imported("mlflow"):
                if self._deployer().abort(self._op_id):
                    self.log.warning(
                        "Deploy %s interrupted: the routing from before it was restored.", self._op_id
                    )
                return
            plan = self._restore or {}
            config = DeploymentConfig.parse(plan["config"]) if plan.get("config") else None
            if plan.get("endpoint") and self._deployer().restore_routing(plan["endpoint"], config):
                self.log.warning(
                    "Deploy %s interrupted before MLflow was loaded: the routing from before it was put "
                    "back on the gateway; the deployment's state keeps the operation until its lease ends.",
                    self._op_id,
                )
            else:
                self.log.warning(
                    "Deploy %s interrupted before MLflow was loaded, with no earlier routing to put back: "
                    "roll back with action='rollback' if the new version must not serve.",
                    self._op_id,
                )
        except Exception as e:  # noqa: BLE001 - on_kill must not raise; the state keeps the lease
            self.log.error("Could not restore the routing after the kill: %s", redact(e))

    def _done(self, result: DeployResult) -> dict[str, Any]:
        out = result.to_dict()
        deploy_links(self.hook.target, out)
        self.log.info(
            "%s of %s: %s serves %s with weights %s (champion %s)",
            self.action, self.model_name, out["endpoint"], out["served_versions"], out["weights"],
            out["champion"],
        )  # fmt: skip
        return out


def _preload() -> None:
    """Import up front what :meth:`DeployOperator.on_kill` needs, so that a kill arriving later finds
    MLflow whole instead of half-imported by the main thread."""
    import mlflow  # noqa: F401

    import airflow_mlops.deploy.rollout  # noqa: F401


def _imported(module: str) -> bool:
    """Whether ``module`` is fully imported (not absent, not in the middle of its import)."""
    import sys

    mod = sys.modules.get(module)
    spec = getattr(mod, "__spec__", None)
    return mod is not None and not getattr(spec, "_initializing", False)


@contextmanager
def _errors() -> Iterator[None]:
    """The provider's error mapping; a rolled-back deploy fails without retries (a retry would put
    the failing version back in traffic)."""
    from airflow.sdk.exceptions import AirflowFailException

    from airflow_mlops.core.redact import redact
    from airflow_mlops.deploy.rollout import RolledBackError
    from airflow_mlops.errors_airflow import airflow_errors

    with airflow_errors():
        try:
            yield
        except RolledBackError as e:
            raise AirflowFailException(redact(e)) from None
