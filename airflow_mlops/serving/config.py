"""The gateway's deployment config: which versions of one registered model serve, and how traffic splits.

The same JSON is the ``--config`` file, the body of ``PUT /admin/deployment`` and the answer of
``GET /admin/deployment``::

    {"model_name": "bc", "strategy": "canary",
     "routes": [{"version": "3", "weight": 0.9}, {"version": "4", "weight": 0.1}],
     "champion": "3", "sticky_key": "user_id"}

A route's ``version`` is a version number or an alias (``"champion"`` or ``"@champion"``); the gateway
resolves aliases when it loads the models and reports the resolved numbers.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_mlops.core.errors import MlopsInputError

STRATEGIES = ("replace", "canary", "shadow", "ab", "bandit")
# The name "replace" (one version takes all traffic) had a second name in gateway configs: still read.
_STRATEGY_ALIASES = {"single": "replace"}
_KEYS = {"model_name", "strategy", "routes", "champion", "sticky_key"}
_ROUTE_KEYS = {"version", "weight"}
# Weights are floats typed by people: a sum within this of 1 is taken as 1.
_WEIGHT_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Route:
    """One model version that can serve, and its share of the traffic.

    :param version: a version number (``"3"``) or an alias (``"champion"`` / ``"@champion"``).
    :param weight: share of requests in ``canary`` and ``ab``; a prior hint elsewhere.
    """

    version: str
    weight: float = 1.0

    @property
    def alias(self) -> str:
        """The alias name without the leading ``@``."""
        return self.version.removeprefix("@")


@dataclass(frozen=True)
class DeploymentConfig:
    """Models and routing of one gateway.

    :param model_name: registered model name.
    :param strategy: ``replace`` (one version serves; ``single`` is read as it), ``canary``, ``shadow``,
        ``ab`` or ``bandit``.
    :param routes: the versions that serve, with weights.
    :param champion: the version that answers in ``shadow`` mode and the reference elsewhere
        (default: the first route).
    :param sticky_key: in ``ab``, the input field used as the split key when a request gives no ``key``.
    """

    model_name: str
    strategy: str
    routes: tuple[Route, ...]
    champion: str
    sticky_key: str | None = None

    @property
    def versions(self) -> list[str]:
        """The route versions, in order."""
        return [r.version for r in self.routes]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (what ``GET /admin/deployment`` answers)."""
        out: dict[str, Any] = {
            "model_name": self.model_name,
            "strategy": self.strategy,
            "routes": [{"version": r.version, "weight": r.weight} for r in self.routes],
            "champion": self.champion,
        }
        if self.sticky_key is not None:
            out["sticky_key"] = self.sticky_key
        return out

    def with_versions(self, resolved: dict[str, str]) -> DeploymentConfig:
        """The same config with aliases replaced by the version numbers in ``resolved``.

        :param resolved: ``{route version or alias: version number}``.
        """
        routes = tuple(Route(resolved.get(r.version, r.version), r.weight) for r in self.routes)
        numbers = [r.version for r in routes]
        if len(set(numbers)) != len(numbers):
            raise MlopsInputError(
                f"Routes {self.versions} resolve to versions {numbers}, which repeat a version: "
                "list each model version once."
            )
        return DeploymentConfig(
            self.model_name,
            self.strategy,
            routes,
            resolved.get(self.champion, self.champion),
            self.sticky_key,
        )

    @classmethod
    def parse(cls, raw: Any) -> DeploymentConfig:
        """Validate a config dict (or JSON text) and build the config.

        :param raw: the config as a dict or JSON text.
        :raises MlopsInputError: the config is malformed; the message names the field and the fix.
        """
        if isinstance(raw, (str, bytes)):
            try:
                raw = json.loads(raw)
            except ValueError as e:
                raise MlopsInputError(
                    f"The deployment config is not valid JSON ({e}): fix its syntax."
                ) from e
        if not isinstance(raw, dict):
            raise MlopsInputError(
                f"The deployment config must be a JSON object, not {type(raw).__name__}: "
                'give {"model_name": ..., "strategy": ..., "routes": [...]}.'
            )
        unknown = set(raw) - _KEYS
        if unknown:
            raise MlopsInputError(
                f"The deployment config has unknown keys {sorted(unknown)}: use only {sorted(_KEYS)}."
            )
        name = raw.get("model_name")
        if not isinstance(name, str) or not name.strip():
            raise MlopsInputError("The deployment config needs `model_name`: the registered model's name.")
        strategy = raw.get("strategy", "replace")
        strategy = _STRATEGY_ALIASES.get(strategy, strategy)
        if strategy not in STRATEGIES:
            raise MlopsInputError(f"Unknown strategy {strategy!r}: use one of {list(STRATEGIES)}.")
        routes = _parse_routes(raw.get("routes"), strategy)
        versions = [r.version for r in routes]
        champion = raw.get("champion")
        if champion is None:
            champion = versions[0]
        champion = str(champion)
        if champion not in versions:
            raise MlopsInputError(
                f"`champion` {champion!r} is not one of the routes {versions}: add a route for it or "
                "pick a routed version."
            )
        sticky = raw.get("sticky_key")
        if sticky is not None and (not isinstance(sticky, str) or not sticky):
            raise MlopsInputError("`sticky_key` must be a non-empty input field name (or left out).")
        return cls(name, strategy, tuple(routes), champion, sticky)


def _parse_routes(raw: Any, strategy: str) -> list[Route]:
    if not isinstance(raw, list) or not raw:
        raise MlopsInputError(
            'The deployment config needs `routes`: a non-empty list like [{"version": "3", "weight": 1.0}].'
        )
    if strategy == "replace" and len(raw) != 1:
        raise MlopsInputError(
            f"Strategy 'replace' takes exactly one route, got {len(raw)}: use 'canary' to split traffic."
        )
    routes: list[Route] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or "version" not in item:
            raise MlopsInputError(f'Route {i} must be an object with a "version": got {item!r}.')
        unknown = set(item) - _ROUTE_KEYS
        if unknown:
            raise MlopsInputError(
                f"Route {i} has unknown keys {sorted(unknown)}: use 'version' and 'weight'."
            )
        version = item["version"]
        if isinstance(version, bool) or not isinstance(version, (str, int)) or not str(version).strip():
            raise MlopsInputError(
                f'Route {i} has version {version!r}: give a version number such as "3" or an alias.'
            )
        weight = item.get("weight", 1.0 if len(raw) == 1 else None)
        if weight is None:
            weight = 1.0 / len(raw) if strategy in ("shadow", "bandit") else None
        if weight is None:
            raise MlopsInputError(
                f"Route {i} (version {version}) has no weight: strategy {strategy!r} needs a weight per route."
            )
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise MlopsInputError(f"Route {i} has weight {weight!r}: give a number between 0 and 1.")
        if not 0.0 <= weight <= 1.0:
            raise MlopsInputError(f"Route {i} has weight {weight}: weights lie between 0 and 1.")
        routes.append(Route(str(version).strip(), float(weight)))
    versions = [r.version for r in routes]
    if len(set(versions)) != len(versions):
        raise MlopsInputError(f"Routes {versions} repeat a version: list each version once.")
    if strategy in ("shadow", "bandit") and len(routes) < 2:
        raise MlopsInputError(f"Strategy {strategy!r} needs at least two routes: add a challenger version.")
    if strategy in ("canary", "ab"):
        total = sum(r.weight for r in routes)
        if abs(total - 1.0) > _WEIGHT_TOLERANCE:
            raise MlopsInputError(
                f"Strategy {strategy!r} needs route weights that sum to 1, got {total:g} "
                f"({[r.weight for r in routes]}): fix the weights."
            )
    return routes


def load_config(path: str | os.PathLike[str]) -> DeploymentConfig:
    """Read and validate a deployment config file.

    :param path: a JSON file.
    """
    p = Path(path)
    if not p.is_file():
        raise MlopsInputError(f"Deployment config {p} does not exist: give the path of a JSON file.")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise MlopsInputError(
            f"Deployment config {p} cannot be read as UTF-8 text ({type(e).__name__}): give a JSON file."
        ) from None
    try:
        return DeploymentConfig.parse(text)
    except MlopsInputError as e:
        # Name the file: a gateway reads two (--config and --state-file).
        raise MlopsInputError(f"Deployment config {p}: {e}") from None
