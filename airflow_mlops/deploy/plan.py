"""Pure rollout planning: what a deploy asks for (:class:`DeployRequest`), the routings it passes
through (:func:`plan_stages`), and how a held stage is judged (:func:`error_rate_problem`). No I/O."""

from __future__ import annotations

from dataclasses import dataclass

from airflow_mlops.core.errors import MlopsInputError
from airflow_mlops.serving.config import STRATEGIES, DeploymentConfig, Route


@dataclass
class DeployRequest:
    """What to deploy, and how.

    :param model_name: registered model name.
    :param version: the model version number to deploy.
    :param strategy: one of :data:`~airflow_mlops.serving.config.STRATEGIES`.
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

    config: DeploymentConfig
    hold_seconds: float
    final: bool = False


def routing(
    model: str, strategy: str, routes: list[tuple[str, float]], champion: str, sticky_key: str | None = None
) -> DeploymentConfig:
    """A gateway config; weights rounded to 6 digits (what JSON carries back unchanged)."""
    return DeploymentConfig(
        model,
        strategy,
        tuple(Route(str(v), round(float(w), 6)) for v, w in routes),
        str(champion),
        sticky_key,
    )


def alone(model: str, version: str) -> DeploymentConfig:
    """All traffic to one version."""
    return routing(model, "replace", [(version, 1.0)], version)


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
        # A held canary of a first model serves alone, but champion waits for the online gate.
        held = req.strategy == "canary" and not req.promote
        return [Stage(alone(model, new), req.settle_seconds, final=True)], not held
    if req.strategy == "replace":
        return [Stage(alone(model, new), req.settle_seconds, final=True)], True
    if req.strategy == "canary":
        stages = [
            Stage(routing(model, "canary", [(champion, 1 - w), (new, w)], champion), req.step_seconds)
            for w in req.canary_steps
        ]
        if not req.promote:
            stages[-1].final = True  # held: the canary keeps its share until a gate decides
            return stages, False
        return [*stages, Stage(alone(model, new), req.settle_seconds, final=True)], True
    if req.strategy == "shadow":
        cfg = routing(model, "shadow", [(champion, 1.0), (new, 0.0)], champion)
    elif req.strategy == "ab":
        split = [(champion, 1 - req.ab_weight), (new, req.ab_weight)]
        cfg = routing(model, "ab", split, champion, sticky_key=req.sticky_key)
    else:
        cfg = routing(model, "bandit", [(champion, 0.5), (new, 0.5)], champion)
    return [Stage(cfg, req.settle_seconds, final=True)], False


def error_rate_problem(
    before: dict[str, float], after: dict[str, float], version: str, max_error_rate: float, min_requests: int
) -> str | None:
    """Why a held step failed on its error rate (5xx answers), or None when it passed.

    :param before: ``{status: count}`` of the new version when the step began.
    :param after: the same at the end of the step.
    :param version: the new version (for the message).
    :param max_error_rate: largest share of failed requests.
    :param min_requests: requests needed before the rate counts.
    """
    total = sum(after.values()) - sum(before.values())
    errors = sum(v for k, v in after.items() if k.startswith("5")) - sum(
        v for k, v in before.items() if k.startswith("5")
    )
    if total >= min_requests and total > 0 and errors / total > max_error_rate:
        return (
            f"version {version} failed {errors:.0f} of {total:.0f} requests in the step "
            f"(over the {max_error_rate:.0%} limit)"
        )
    return None
