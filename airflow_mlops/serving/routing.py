"""Routing: which model version answers a request, and which versions get a shadow copy."""

from __future__ import annotations

import random
import threading
import zlib
from bisect import bisect_right
from itertools import accumulate

from airflow_mlops.serving.config import DeploymentConfig


class BanditStats:
    """Beta posteriors of each version's reward (a correct prediction is a reward of 1).

    Shared across deployment swaps, so a version keeps what it learned while it stays routed. With
    replicas, the posterior adds this replica's rewards to the latest ones read from every other
    replica (:meth:`set_peers`), so all replicas draw from the same posterior as one gateway would.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._own: dict[str, list[float]] = {}
        self._peers: dict[str, dict[str, list[float]]] = {}
        self._ab: dict[str, tuple[float, float]] = {}

    def _refresh(self) -> None:
        # Under the lock: the posterior of each version = uniform prior + own + peers' rewards.
        totals: dict[str, tuple[float, float]] = {}
        for source in (self._own, *self._peers.values()):
            for v, (s, f) in source.items():
                a, b = totals.get(v, (1.0, 1.0))
                totals[v] = (a + s, b + f)
        self._ab = totals

    def reward(self, version: str, successes: int, failures: int) -> None:
        """Record feedback for ``version``.

        :param version: the model version that served.
        :param successes: correct predictions.
        :param failures: wrong predictions.
        """
        with self._lock:
            sf = self._own.setdefault(version, [0.0, 0.0])
            sf[0] += successes
            sf[1] += failures
            a, b = self._ab.get(version, (1.0, 1.0))
            self._ab[version] = (a + successes, b + failures)

    def local(self) -> dict[str, list[float]]:
        """This replica's own rewards: version -> [successes, failures]."""
        with self._lock:
            return {v: list(sf) for v, sf in self._own.items()}

    def set_peers(self, peers: dict[str, dict[str, list[float]]]) -> None:
        """Replace the other replicas' rewards (peer -> version -> [successes, failures]); a peer
        missing from ``peers`` keeps its last known rewards (it may be restarting)."""
        with self._lock:
            for peer, rewards in peers.items():
                self._peers[peer] = {
                    str(v): [float(sf[0]), float(sf[1])] for v, sf in rewards.items() if len(sf) == 2
                }
            self._refresh()

    def posterior(self, version: str) -> tuple[float, float]:
        """The Beta(alpha, beta) posterior of ``version`` (a uniform prior when it has no feedback)."""
        return self._ab.get(version, (1.0, 1.0))

    def keep_only(self, versions: list[str]) -> None:
        """Forget versions that are no longer routed."""
        with self._lock:
            for source in (self._own, *self._peers.values()):
                for v in list(source):
                    if v not in versions:
                        del source[v]
            self._refresh()


class Router:
    """Picks the serving version for each request, following a deployment config.

    :param config: the deployment config (versions already resolved to numbers).
    :param bandit: posteriors for the ``bandit`` strategy.
    :param rng: random source (seedable for tests).
    """

    def __init__(
        self, config: DeploymentConfig, bandit: BanditStats | None = None, rng: random.Random | None = None
    ) -> None:
        self.config = config
        self.strategy = config.strategy
        self.versions = config.versions
        self.champion = config.champion
        self.bandit = bandit or BanditStats()
        self._rng = rng or random.Random()
        weights = [r.weight for r in config.routes]
        total = sum(weights) or 1.0
        self._cum = list(accumulate(w / total for w in weights))
        self.shadow_versions: tuple[str, ...] = (
            tuple(v for v in self.versions if v != self.champion) if self.strategy == "shadow" else ()
        )

    def choose(self, key: str | None = None) -> str:
        """The version that answers this request.

        :param key: the request's sticky key (used by ``ab``; random split when None).
        """
        s = self.strategy
        if s == "replace" or s == "shadow":
            return self.champion if s == "shadow" else self.versions[0]
        if s == "bandit":
            return self._thompson()
        if s == "ab" and key is not None:
            # A stable hash (not Python's salted hash()) keeps a key on one side across restarts.
            u = (zlib.crc32(key.encode()) & 0xFFFFFFFF) / 2**32
        else:
            u = self._rng.random()
        return self.versions[min(bisect_right(self._cum, u), len(self.versions) - 1)]

    def _thompson(self) -> str:
        best, best_draw = self.versions[0], -1.0
        for v in self.versions:
            a, b = self.bandit.posterior(v)
            draw = self._rng.betavariate(a, b)
            if draw > best_draw:
                best, best_draw = v, draw
        return best

    def weights(self) -> dict[str, float]:
        """Each version's current share of traffic (for the route-weight gauge).

        ``bandit``: the posterior mean reward, normalised; ``shadow``: 1 for the champion, 0 elsewhere.
        """
        if self.strategy == "shadow":
            return {v: 1.0 if v == self.champion else 0.0 for v in self.versions}
        if self.strategy == "bandit":
            means = {v: a / (a + b) for v, (a, b) in ((v, self.bandit.posterior(v)) for v in self.versions)}
            total = sum(means.values()) or 1.0
            return {v: m / total for v, m in means.items()}
        return {r.version: r.weight for r in self.config.routes}
