"""DeployOperator: put a model version behind the gateway with a rollout strategy, or roll back."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_mlops.hooks.mlflow import MlflowHook

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_mlops.deploy.backends import GatewayBackend
    from airflow_mlops.deploy.rollout import Deployer

ACTIONS = ("deploy", "rollback")
BACKENDS = ("local", "docker", "external")
GATEWAY_URL_ENV = "MLOPS_GATEWAY_URL"
ADMIN_TOKEN_ENV = "MLOPS_GATEWAY_ADMIN_TOKEN"


class DeployOperator(BaseOperator):
    """Deploy a registered model version behind the model gateway, progressively, with rollback.

    ``action="deploy"``: resolve ``version`` (or ``alias``), run infra validation in a throwaway gateway
    (the version loads, predicts its logged input example, p95 latency under ``latency_budget_ms``) and
    only then route traffic with ``strategy``: ``replace``, ``canary`` (``canary_steps`` held
    ``step_seconds`` each, with health checks), ``shadow``, ``ab`` or ``bandit``. ``replace`` and
    ``canary`` end in full promotion: the ``champion`` alias moves, by compare-and-set, only if it still
    points where it did when the deploy began. A failed health check rolls back by itself (task fails).
    Every change is recorded in the promotion ledger (version tags and a history tag on the model).

    ``action="rollback"``: restore the routing and the champion from before the last deploy.

    Retries of the same task instance are idempotent. The gateway runs as a managed subprocess
    (``backend="local"``) or a hardened Docker container (``backend="docker"``); where it runs, its
    port and previous routing are kept in a state folder (``state_dir``). ``backend="external"`` drives
    a gateway run by someone else (the docker-compose ``gateway`` service): only its routing changes.

    Returns (XCom) ``endpoint``, ``served_versions``, ``weights``, ``champion``, ``strategy``,
    ``promoted``, ``version`` and the validation report. The admin token never leaves the state folder.

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
    :param state_dir: deployment state folder (default ``$MLOPS_DEPLOY_STATE_DIR`` or ``~/.mlops/deployments``).
    :param log_dir: prediction-log folder (default ``<state_dir>/<deployment>/predictions``).
    :param gateway_tracking_uri: tracking URI as the gateway sees it (default: the connection's).
    :param docker_image: gateway image (``docker``).
    :param docker_network_mode: ``bridge`` or ``host`` (``docker``; see docker_backend).
    :param docker_cpus: CPU limit (``docker``).
    :param docker_memory: memory limit (``docker``).
    :param gateway_url: base URL of an ``external`` gateway (default: the ``gateway_conn_id`` host,
        else ``$MLOPS_GATEWAY_URL``).
    :param gateway_conn_id: connection of an ``external`` gateway: host = URL, password = admin token
        (default token: ``$MLOPS_GATEWAY_ADMIN_TOKEN``).
    :param ready_timeout: seconds for a gateway to start and load its models.
    :param mlflow_conn_id: MLflow connection.
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
        "sticky_key",
        "state_dir",
        "log_dir",
        "gateway_tracking_uri",
        "docker_image",
        "gateway_url",
    )
    ui_color = "#c6e5ff"

    def __init__(
        self,
        *,
        model_name: str,
        version: str | int | None = None,
        alias: str | None = None,
        action: str = "deploy",
        strategy: str = "replace",
        backend: str = "local",
        deployment_name: str | None = None,
        canary_steps: Sequence[float] = (0.1, 0.5),
        step_seconds: float = 30.0,
        settle_seconds: float = 2.0,
        ab_weight: float = 0.5,
        sticky_key: str | None = None,
        max_error_rate: float = 0.05,
        min_requests: int = 20,
        validate: bool = True,
        promote: bool = True,
        latency_budget_ms: float = 500.0,
        port: int | None = None,
        state_dir: str | None = None,
        log_dir: str | None = None,
        gateway_tracking_uri: str | None = None,
        docker_image: str = "airflow-mlops-gateway:latest",
        docker_network_mode: str = "bridge",
        docker_cpus: float = 1.0,
        docker_memory: str = "1g",
        gateway_url: str | None = None,
        gateway_conn_id: str | None = None,
        ready_timeout: float = 180.0,
        mlflow_conn_id: str = MlflowHook.default_conn_name,
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
        self.docker_image = docker_image
        self.docker_network_mode = docker_network_mode
        self.docker_cpus = docker_cpus
        self.docker_memory = docker_memory
        self.gateway_url = gateway_url
        self.gateway_conn_id = gateway_conn_id
        self.ready_timeout = ready_timeout
        self.mlflow_conn_id = mlflow_conn_id

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

    def _external_gateway(self) -> tuple[str, str | None]:
        """URL and admin token of an ``external`` gateway (the token is never logged)."""
        import os

        from airflow_mlops.core.errors import MlopsInputError

        url, token = self.gateway_url or None, None
        if self.gateway_conn_id:
            conn = self.get_connection(self.gateway_conn_id)
            token = conn.password or None
            if not url and conn.host:
                host = conn.host if "://" in conn.host else f"{conn.schema or 'http'}://{conn.host}"
                url = f"{host.rstrip('/')}:{conn.port}" if conn.port else host
        url = url or os.environ.get(GATEWAY_URL_ENV)
        token = token or os.environ.get(ADMIN_TOKEN_ENV)
        if not url:
            raise MlopsInputError(
                f"backend='external' needs the gateway's URL: give gateway_url, a gateway_conn_id, or set "
                f"{GATEWAY_URL_ENV}."
            )
        if not token:
            raise MlopsInputError(
                f"backend='external' needs the gateway's admin token: put it in the password of "
                f"gateway_conn_id, or set {ADMIN_TOKEN_ENV}."
            )
        return url, token

    def _backend(self) -> GatewayBackend:
        from airflow_mlops.deploy.backends import make_backend

        if self.backend == "external":
            return make_backend("external", endpoint=self._external_gateway()[0])

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

        return Deployer(
            self.deployment_name or self.model_name,
            self._backend(),
            self.hook.target,
            StateStore(self.state_dir),
            port=int(self.port) if self.port else None,
            admin_token=self._external_gateway()[1] if self.backend == "external" else None,
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

    def execute(self, context: Context) -> dict[str, Any]:
        """Deploy or roll back; return the deployment's endpoint, versions and weights."""
        from airflow_mlops.deploy.rollout import DeployRequest

        self._check_args()
        ti = context["ti"]
        op_id = f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/{getattr(ti, 'map_index', -1)}"
        dag_run = f"{ti.dag_id}/{ti.run_id}"
        actor = f"airflow:{ti.dag_id}"
        deployer = self._deployer()
        if self.action == "rollback":
            result = deployer.rollback(self.model_name, op_id=op_id, actor=actor, dag_run=dag_run)
        else:
            request = DeployRequest(
                model_name=self.model_name,
                version=self._resolve_version(),
                strategy=self.strategy,
                canary_steps=tuple(float(s) for s in self.canary_steps),
                step_seconds=float(self.step_seconds),
                settle_seconds=float(self.settle_seconds),
                ab_weight=float(self.ab_weight),
                sticky_key=self.sticky_key or None,
                max_error_rate=float(self.max_error_rate),
                min_requests=int(self.min_requests),
                validate=bool(self.validate),
                latency_budget_ms=float(self.latency_budget_ms),
                promote=bool(self.promote),
                op_id=op_id,
                actor=actor,
                dag_run=dag_run,
            )
            result = deployer.deploy(request)
        out = result.to_dict()
        self.log.info(
            "%s of %s: %s serves %s with weights %s (champion %s)",
            self.action, self.model_name, out["endpoint"], out["served_versions"], out["weights"],
            out["champion"],
        )  # fmt: skip
        return out
