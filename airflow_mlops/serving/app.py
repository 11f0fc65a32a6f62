"""The model gateway: a Starlette app serving registered models with routing, feedback and metrics.

Endpoints: ``POST /predict``, ``POST /feedback`` (feedback bearer token), ``GET /health``, ``GET /ready``,
``GET /metrics``, ``GET|PUT /admin/deployment`` (admin bearer token); for replicas, ``PUT|DELETE
/admin/deployment/stage`` and ``POST /admin/deployment/commit`` (the two phases of a change, admin token),
``GET /bandit`` (this replica's bandit rewards) and ``GET /metrics/replicas`` (every peer's counters summed,
with the gauges they agree on). Bodies must be JSON
(``Content-Type: application/json``, 415 otherwise), so a web page cannot post a plain form here. The
serving state is one immutable :class:`Deployment`; a change builds a new one (models loaded first, off
the event loop, within a bounded time and without holding the swap lock) and swaps the reference, so
every request sees either the old or the new deployment whole, and none fails during a swap.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as HttpRoute

from airflow_mlops.core.errors import MlopsInputError, MlopsServiceError
from airflow_mlops.core.redact import redact
from airflow_mlops.serving.client import ADMIN_TOKEN_ENV, FEEDBACK_TOKEN_ENV
from airflow_mlops.serving.config import DeploymentConfig
from airflow_mlops.serving.feedback_log import FeedbackLogWriter
from airflow_mlops.serving.live_metrics import LiveMetrics
from airflow_mlops.serving.prediction_writer import PredictionLogWriter
from airflow_mlops.serving.request_ids import FeedbackDedup, RequestSigner
from airflow_mlops.serving.routing import BanditStats, Router
from airflow_mlops.serving.shadow import ShadowWorker

if TYPE_CHECKING:
    import numpy as np

    from airflow_mlops.serving.models import Batch, LoadedModel

try:  # orjson parses and writes JSON several times faster; the stdlib is the fallback
    import orjson

    def _loads(raw: bytes) -> Any:
        return orjson.loads(raw)

    def _numpy_default(obj: Any) -> Any:
        # OPT_SERIALIZE_NUMPY takes C-contiguous arrays only; a sliced or transposed one comes here.
        if hasattr(obj, "tolist"):
            return obj.tolist()
        raise TypeError(f"{type(obj).__name__} is not JSON serializable")

    def _dumps(obj: Any) -> bytes:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY, default=_numpy_default)

    _JSONError: type[Exception] = orjson.JSONDecodeError
except ImportError:  # pragma: no cover - orjson ships with MLflow's dependencies here
    import json

    def _loads(raw: bytes) -> Any:
        return json.loads(raw)

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, default=lambda o: o.tolist()).encode()

    _JSONError = ValueError

log = logging.getLogger("airflow_mlops.serving")
# Bodies bigger than this are parsed off the event loop.
_PARSE_OFF_LOOP_BYTES = 1024 * 1024


@dataclass
class GatewaySettings:
    """How a gateway runs.

    :param admin_token: bearer token of the admin API (None: every admin call is refused).
    :param feedback_token: bearer token of ``/feedback``, separate from the admin token, since labels drive
        the online gate, the bandit and the retraining data (None: feedback is refused with 403).
    :param log_dir: prediction-log root (None: no log).
    :param max_body_bytes: largest request body accepted (413 above).
    :param max_rows: most rows in one predict request (413 above).
    :param feedback_capacity: request ids whose feedback this process remembers, to refuse a repeat.
    :param window: labelled predictions per version in the live-metric window.
    :param shadow_queue: shadow copies waiting at most (more are dropped and counted).
    :param log_flush_seconds: how often the prediction log writes a file.
    :param state_file: where each applied deployment is saved, so that a restarted gateway serves it again.
    :param offload_rows: predicts of more rows than this run in a worker thread, so that ``/health`` and
        small requests keep answering while a big batch is scored.
    :param body_timeout: seconds a client may take to send a request body (408 after).
    :param load_timeout: seconds a deployment change may take to load its models (503 after).
    :param put_wait_seconds: seconds a deployment change waits for one in progress (409 after).
    :param log_max_held_rows: log rows held in memory while writes fail (the oldest are dropped beyond).
    :param tracking_uri: where models come from, for messages (credentials are masked).
    :param request_secret: HMAC secret of the request ids, shared by every replica (None: a random one,
        so feedback joins on this process only).
    :param dedup_url: Redis URL where feedback claims are shared by every replica (None: in process).
    :param peers: base URLs of every replica (this one may be among them): the bandit adds up their
        rewards, read from their ``GET /bandit``.
    :param peer_sync_seconds: how often the peers' rewards are read.
    :param counter_file: where the feedback counters are saved at shutdown and restored at start, so
        that a restarted replica's counters go on rather than reset (None: they reset).
    """

    admin_token: str | None = field(default=None, repr=False)
    log_dir: str | None = None
    max_body_bytes: int = 8 * 1024 * 1024
    max_rows: int = 10_000
    feedback_capacity: int = 200_000
    window: int = 1000
    shadow_queue: int = 10_000
    log_flush_seconds: float = 10.0
    state_file: str | None = None
    feedback_token: str | None = field(default=None, repr=False)
    offload_rows: int = 1000
    body_timeout: float = 30.0
    load_timeout: float = 120.0
    put_wait_seconds: float = 5.0
    log_max_held_rows: int = 1_000_000
    tracking_uri: str | None = None
    request_secret: str | None = field(default=None, repr=False)
    dedup_url: str | None = field(default=None, repr=False)
    peers: tuple[str, ...] = ()
    peer_sync_seconds: float = 2.0
    counter_file: str | None = None


@dataclass(frozen=True)
class Deployment:
    """What serves right now: the config (versions resolved), its router and the loaded models."""

    config: DeploymentConfig
    router: Router
    models: dict[str, LoadedModel]


class HttpError(Exception):
    """An error answer: status code and a message naming the problem and the fix."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class GatewayBusy(MlopsServiceError):
    """Another deployment change is loading its models; the caller should retry when it is done."""


# Models that answered recently, kept for feedback joins after a swap (beyond it: 410 Gone).
MODELS_KEPT = 32


class Gateway:
    """The gateway's state: the current deployment, feedback joins, metrics, log and shadow worker.

    :param settings: runtime settings.
    :param load_model: ``(name, version) -> LoadedModel``.
    :param resolve: ``(name, version_or_alias) -> version number``.
    :param probe: called before loading, raises :class:`MlopsServiceError` fast when the model store is
        down (e.g. :meth:`ModelLoader.check`).
    """

    def __init__(
        self,
        settings: GatewaySettings,
        load_model: Callable[[str, str], LoadedModel],
        resolve: Callable[[str, str], str],
        probe: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.load_model = load_model
        self.resolve = resolve
        self.probe = probe
        self.metrics = LiveMetrics(settings.window)
        self.bandit = BanditStats()
        self.signer = RequestSigner(settings.request_secret)
        self.dedup = FeedbackDedup(settings.dedup_url, capacity=settings.feedback_capacity)
        # Tells this replica apart in a peer list that includes it.
        self.instance_id = uuid.uuid4().hex
        self.deployment: Deployment | None = None
        self.status = "empty"
        self.load_error: str | None = None
        self.served: dict[str, LoadedModel] = {}
        self.writer: PredictionLogWriter | None = None
        self.feedback_writer: FeedbackLogWriter | None = None
        self.shadow: ShadowWorker | None = None
        self._swap_lock = asyncio.Lock()
        self._load_lock = asyncio.Lock()
        self._frozen = False
        self.staged: tuple[str, Deployment] | None = None

    # --- deployment changes -------------------------------------------------------------------
    def build(self, config: DeploymentConfig) -> Deployment:
        """Resolve aliases and load every routed version (reusing loaded ones); nothing is swapped yet.

        :raises MlopsInputError: a version or alias does not exist or cannot be served.
        :raises MlopsServiceError: the model store is unreachable.
        """
        if self.probe is not None:
            self.probe()
        resolved = {v: self.resolve(config.model_name, v) for v in config.versions}
        config = config.with_versions(resolved)
        current = self.deployment
        models: dict[str, LoadedModel] = {}
        for v in config.versions:
            if current is not None and current.config.model_name == config.model_name and v in current.models:
                models[v] = current.models[v]
            else:
                models[v] = self.load_model(config.model_name, v)
        return Deployment(config, Router(config, self.bandit), models)

    def swap(self, new: Deployment) -> None:
        """Make ``new`` the serving deployment (one reference assignment) and update the gauges."""
        old = self.deployment
        if old is None and not self._frozen:
            # Before the first traffic: park the ~300k objects of the imports and models in the
            # permanent generation, so a full collection under load scans only what came after.
            gc.collect()
            gc.freeze()
            self._frozen = True
        self.keep_served(new.models)
        self.deployment = new
        self.status = "ready"
        self.load_error = None
        cfg = new.config
        previous = old.config.versions if old is not None and old.config.model_name == cfg.model_name else []
        self.metrics.set_routes(cfg.model_name, new.router.weights(), cfg.champion, previous)
        for m in new.models.values():
            self.metrics.start_version(m.name, m.version, m.class_labels)
        self.bandit.keep_only(cfg.versions)
        log.info(
            "Deployment of %s: strategy %s, routes %s, champion %s",
            cfg.model_name,
            cfg.strategy,
            [(r.version, r.weight) for r in cfg.routes],
            cfg.champion,
        )

    async def apply(self, config: DeploymentConfig, save: bool = False) -> Deployment:
        """Load the models of ``config`` off the event loop, within ``load_timeout``, then swap.

        One change loads at a time; another waits ``put_wait_seconds`` at most. The swap lock is held
        only for the swap itself, so the current deployment keeps serving while a load is slow or stuck
        (a load that times out is abandoned: its result is never swapped in).

        :param config: the new deployment.
        :param save: write it to the state file before swapping (a failed write changes nothing).
        :raises GatewayBusy: another change is still loading.
        :raises MlopsServiceError: loading took too long, the model store is down, or the state
            file cannot be written.
        :raises MlopsInputError: the config names versions that cannot be served.
        """
        async with self._loading():
            new = await self._build(config)
            await self._save_and_swap(new, save)
        return new

    @asynccontextmanager
    async def _loading(self) -> AsyncIterator[None]:
        s = self.settings
        try:
            await asyncio.wait_for(self._load_lock.acquire(), s.put_wait_seconds)
        except asyncio.TimeoutError:  # not TimeoutError before Python 3.11
            raise GatewayBusy(
                f"Another deployment change is still loading models (waited {s.put_wait_seconds:g} s): "
                "retry when it has finished (GET /admin/deployment shows what serves)."
            ) from None
        try:
            yield
        finally:
            self._load_lock.release()

    async def _build(self, config: DeploymentConfig) -> Deployment:
        s = self.settings
        try:
            return await asyncio.wait_for(asyncio.to_thread(self.build, config), s.load_timeout)
        except asyncio.TimeoutError:  # not TimeoutError before Python 3.11
            where = f" from MLflow at {redact(s.tracking_uri)}" if s.tracking_uri else ""
            raise MlopsServiceError(
                f"Loading the models of {config.model_name}{where} did not finish within "
                f"{s.load_timeout:g} s: check that the MLflow server and its artifact store answer, "
                "or start the gateway with a longer --load-timeout."
            ) from None

    async def _save_and_swap(self, new: Deployment, save: bool) -> None:
        s = self.settings
        if save and s.state_file:
            try:
                await asyncio.to_thread(save_state, s.state_file, new.config.to_dict())
            except OSError as e:
                raise MlopsServiceError(
                    f"Cannot save the gateway state file {s.state_file} ({e}): free the disk or fix "
                    "--state-file."
                ) from None
        # Still under the load lock: changes apply in the order they loaded. The swap is one
        # reference assignment, the only thing the swap lock guards.
        async with self._swap_lock:
            self.swap(new)

    async def stage(self, config: DeploymentConfig) -> tuple[str, Deployment]:
        """Phase one of a change across replicas: load the models of ``config`` and hold them, unswapped.

        A later stage replaces this one. Errors as :meth:`apply`; nothing serves differently.

        :returns: the stage id that :meth:`commit` takes, and the staged deployment.
        """
        async with self._loading():
            new = await self._build(config)
            self.staged = (uuid.uuid4().hex, new)
        return self.staged

    async def commit(self, stage_id: str) -> Deployment:
        """Phase two: save and swap in the staged deployment (no model loads here, so no slow failure).

        :raises MlopsInputError: ``stage_id`` is not the deployment staged here.
        """
        staged = self.staged
        if staged is None or not hmac.compare_digest(staged[0], stage_id):
            raise MlopsInputError(
                f"Stage {stage_id!r} is not staged on this gateway (it was discarded, replaced by a newer "
                "stage, or this replica restarted): stage the change again on every replica."
            )
        async with self._loading():
            self.staged = None
            await self._save_and_swap(staged[1], True)
        return staged[1]

    def discard(self) -> bool:
        """Drop the staged deployment (the change was rolled back); True when one was staged."""
        was, self.staged = self.staged is not None, None
        return was

    # --- request handling ------------------------------------------------------------------------
    def keep_served(self, models: dict[str, LoadedModel]) -> None:
        """Remember the models of a new deployment for feedback joins (the oldest beyond a bound go)."""
        for m in models.values():
            self.served.pop(m.key, None)
            self.served[m.key] = m
        while len(self.served) > MODELS_KEPT:
            del self.served[next(iter(self.served))]

    def count_request(self, status: int, version: str = "none") -> None:
        """Count a predict request answered with ``status`` (e.g. refused before a version was chosen)."""
        dep = self.deployment
        self.metrics.requests.labels(dep.config.model_name if dep else "none", version, str(status)).inc()

    async def predict(self, body: Any, started: float | None = None) -> dict[str, Any]:
        """Route a parsed ``/predict`` body to a version, score it, remember it for feedback, log it,
        queue its shadow copies and count it.

        :param body: ``{"inputs": record | [records], "key": optional sticky key}``.
        :param started: ``time.perf_counter()`` when the request arrived (default: now), for the latency.
        :returns: the answer: request id, model name and version, predictions (and probabilities).
        :raises HttpError: the body is malformed (422), too big (413), nothing is deployed (503), or the
            model failed (500); counted under its status.
        """
        start = time.perf_counter() if started is None else started
        dep = self.deployment
        version = "none"
        try:
            if dep is None:
                raise HttpError(503, "No model is deployed yet: wait for /ready or PUT /admin/deployment.")
            records, key = self._records(body, dep.config.sticky_key)
            version = dep.router.choose(key)
            model = dep.models[version]
            if len(records) > self.settings.offload_rows:
                # A big batch would hold the event loop for a second or more: /health would miss the
                # container healthcheck's timeout. Scored in a worker thread instead.
                batch, preds, proba = await asyncio.to_thread(_score, model, records)
            else:
                batch, preds, proba = _score(model, records)
        except HttpError as e:
            self.count_request(e.status, version)
            raise
        model_name = dep.config.model_name
        # Signed: any replica joins its feedback; the logs key rows by the id's first part.
        request_id = self.signer.issue(model_name, version, preds, model.class_labels)
        if self.writer is not None:
            self.writer.add(model_name, version, request_id[:32], batch, preds)
        if self.shadow is not None:
            for shadow_version in dep.router.shadow_versions:
                self.shadow.submit(dep.models[shadow_version], records, batch, preds)
        answer: dict[str, Any] = {
            "request_id": request_id,
            "model_name": model_name,
            "model_version": version,
            "predictions": preds,
        }
        if proba is not None:
            answer["probabilities"] = proba
        m = self.metrics
        m.requests.labels(model_name, version, "200").inc()
        m.predictions.labels(model_name, version).inc(batch.n_rows)
        m.latency.labels(model_name, version).observe(time.perf_counter() - start)
        return answer

    def _records(self, body: Any, sticky: str | None) -> tuple[list[Any], str | None]:
        """The records of a predict body and its routing key (422 / 413 as HttpError)."""
        if type(body) is not dict or "inputs" not in body:
            raise HttpError(422, 'The body must be {"inputs": {...}} or {"inputs": [{...}, ...]}.')
        inputs = body["inputs"]
        records = [inputs] if type(inputs) is dict else inputs
        if type(records) is not list or not records:
            raise HttpError(422, '"inputs" must be one record (an object) or a non-empty list of records.')
        limit = self.settings.max_rows
        if len(records) > limit:
            raise HttpError(413, f"The request has {len(records)} rows, over the limit of {limit}: split it.")
        key = body.get("key")
        if key is None and sticky is not None and type(records[0]) is dict:
            key = records[0].get(sticky)
        return records, None if key is None else str(key)

    def feedback(self, body: Any) -> dict[str, Any]:
        """Join true labels to a served request: live metrics, feedback log and the bandit's reward.

        :param body: ``{"request_id": ..., "label": value}`` or ``{"request_id": ..., "labels": [...]}``.
        :returns: request id, the version that served it, labels accepted and how many were correct.
        :raises HttpError: malformed (422), unknown (404), already recorded (409), or served by a model
            that left the gateway too long ago (410).
        """
        if type(body) is not dict or not isinstance(body.get("request_id"), str):
            raise HttpError(
                422,
                'The body must be {"request_id": "...", "label": ...} or {"request_id": ..., "labels": [...]}.',
            )
        rid = body["request_id"]
        try:
            signed = self.signer.verify(rid, self._classes_of)
        except MlopsInputError as e:
            raise HttpError(404, str(e)) from None
        if "labels" in body:
            labels = body["labels"]
            if not isinstance(labels, list):
                raise HttpError(422, '"labels" must be a list with one true label per predicted row.')
        elif "label" in body:
            labels = [body["label"]]
        else:
            raise HttpError(
                422, 'Give the true value as "label" (one row) or "labels" (a list, one per row).'
            )
        y_pred = signed.predictions
        n = len(y_pred)
        uid = signed.uid
        if len(labels) != n:
            raise HttpError(
                422, f"Request {uid} predicted {n} rows but {len(labels)} labels were sent: send one per row."
            )
        model = self._served_model(signed.model, signed.version)
        try:
            y_true = model.coerce_labels(labels)
        except MlopsInputError as e:
            raise HttpError(422, str(e)) from None
        # Claimed last, once the feedback is known to be valid: a refused one can be sent again.
        try:
            first = self.dedup.claim(uid)
        except MlopsServiceError as e:
            raise HttpError(503, f"{e} Nothing was counted.") from None
        if not first:
            raise HttpError(409, f"Feedback for request {uid} was already recorded: send it once.")
        self.metrics.observe_feedback(model.name, model.version, y_true, y_pred, model.class_labels)
        if self.feedback_writer is not None:
            self.feedback_writer.add(model.name, uid, list(y_true))
        correct = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t == p)
        if model.class_labels is not None:
            self.bandit.reward(model.version, correct, n - correct)
            self.metrics.reward(model.name, model.version, correct, n - correct)
        return {"request_id": rid, "model_version": model.version, "accepted": n, "correct": correct}

    def _served_model(self, name: str, version: str) -> LoadedModel:
        model = self.served.get(f"{name}/{version}")
        if model is None and self.deployment is None:
            # A replica that is starting: another one (or this one in a few seconds) joins it.
            raise HttpError(
                503,
                "This gateway is still loading its models: send the feedback again (to another replica, or "
                "here once /ready answers 200). Nothing was counted.",
            )
        if model is None:
            raise HttpError(
                410,
                f"The request was served by {name}/{version}, which this gateway does not serve (it left "
                "too long ago, or this replica never loaded it): feedback for it cannot be joined here.",
            )
        return model

    def _classes_of(self, name: str, version: str) -> list[Any] | None:
        return self._served_model(name, version).class_labels

    def bandit_snapshot(self) -> dict[str, Any]:
        """This replica's own bandit rewards (``GET /bandit``), for the other replicas to add up."""
        dep = self.deployment
        return {
            "instance": self.instance_id,
            "model": dep.config.model_name if dep else None,
            "rewards": self.bandit.local(),
        }

    def merge_peers(self, snapshots: dict[str, dict[str, Any]]) -> None:
        """Take the other replicas' rewards (``peer URL -> GET /bandit answer``) into the posteriors."""
        dep = self.deployment
        model = dep.config.model_name if dep else None
        peers = {
            url: snap["rewards"]
            for url, snap in snapshots.items()
            if snap.get("instance") != self.instance_id and snap.get("model") == model
        }
        self.bandit.set_peers(peers)

    def readiness(self) -> tuple[dict[str, Any], int]:
        """The ``/ready`` answer and its status code (503 until a deployment serves)."""
        dep = self.deployment
        if dep is None:
            waiting = {"empty": "no deployment configured", "loading": "loading models"}
            return {
                "status": self.status,
                "detail": self.load_error or waiting.get(self.status, self.status),
            }, 503
        cfg = dep.config
        ready = {"model_name": cfg.model_name, "strategy": cfg.strategy, "versions": cfg.versions}
        return {"status": "ready", **ready, "champion": cfg.champion}, 200

    async def put_deployment(self, body: Any, stage: bool = False) -> dict[str, Any]:
        """Parse, load and swap in a new deployment; errors leave the current one serving.

        :param stage: load and hold it only (phase one of a change across replicas; see :meth:`stage`).
        :returns: the applied config (versions resolved); with ``stage``, ``{"stage_id", "config"}``.
        :raises HttpError: busy (409), bad config (422), model store down or slow (503), load failed (500).
        """
        cfg = None
        try:
            cfg = DeploymentConfig.parse(body)
            if stage:
                stage_id, staged = await self.stage(cfg)
                return {"stage_id": stage_id, "config": staged.config.to_dict(), "instance": self.instance_id}
            if self.settings.peers:
                return await self._put_everywhere(cfg)
            new = await self.apply(cfg, save=True)
        except HttpError:
            raise  # a change across replicas, answered already
        except GatewayBusy as e:
            raise HttpError(409, f"{e} The deployment was not changed.") from None
        except MlopsInputError as e:
            raise HttpError(422, f"{redact(e)} The deployment was not changed.") from None
        except MlopsServiceError as e:
            raise HttpError(503, f"{redact(e)} The deployment was not changed.") from None
        except Exception as e:  # e.g. a model that fails to unpickle
            log.exception("Loading deployment of %s failed", cfg.model_name if cfg else "?")
            raise HttpError(
                500, f"Loading the models failed: {redact(e)}. The deployment was not changed."
            ) from None
        return new.config.to_dict()

    async def _put_everywhere(self, cfg: DeploymentConfig) -> dict[str, Any]:
        """A change on every peer, two-phase (:func:`airflow_mlops.serving.fanout.apply_everywhere`)."""
        from airflow_mlops.serving.fanout import PeerError, apply_everywhere

        s = self.settings
        dep = self.deployment
        previous = dep.config.to_dict() if dep is not None else None
        try:
            return await asyncio.to_thread(
                apply_everywhere, s.peers, s.admin_token or "", cfg.to_dict(), previous, s.load_timeout + 10
            )
        except PeerError as e:
            status = e.status if e.status in (409, 422) else 503
            if e.phase == "stage":
                raise HttpError(
                    status,
                    f"{redact(str(e))} No replica changed: every replica still serves the old deployment.",
                ) from None
            raise HttpError(
                503,
                f"{redact(str(e))} between loading and switching; the replicas that had switched were put back "
                "on the previous deployment. Check that replica, then apply the change again.",
            ) from None

    async def commit_deployment(self, body: Any) -> dict[str, Any]:
        """``POST /admin/deployment/commit`` with ``{"stage_id": ...}``: swap in the staged deployment.

        :raises HttpError: malformed (422), not staged here (409), state file unwritable (503).
        """
        if type(body) is not dict or not isinstance(body.get("stage_id"), str):
            raise HttpError(
                422, 'The body must be {"stage_id": "..."} (the id PUT /admin/deployment/stage gave).'
            )
        try:
            new = await self.commit(body["stage_id"])
        except GatewayBusy as e:
            raise HttpError(409, f"{e} The deployment was not changed.") from None
        except MlopsInputError as e:
            raise HttpError(409, str(e)) from None
        except MlopsServiceError as e:
            raise HttpError(503, f"{redact(e)} The deployment was not changed.") from None
        return new.config.to_dict()


def _bearer_matches(request: Request, token: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    # Constant time: the comparison must not tell how much of a guess was right.
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def _authorize(request: Request, token: str | None) -> None:
    if not token:
        raise HttpError(401, f"The admin API is disabled: start the gateway with {ADMIN_TOKEN_ENV} set.")
    if not _bearer_matches(request, token):
        raise HttpError(401, "Missing or wrong admin token: send 'Authorization: Bearer <token>'.")


def _authorize_feedback(request: Request, token: str | None) -> None:
    if not token:
        raise HttpError(
            403,
            f"Feedback is disabled on this gateway: start it with {FEEDBACK_TOKEN_ENV} set (or "
            "--feedback-token-file) and send 'Authorization: Bearer <feedback token>'.",
        )
    if not _bearer_matches(request, token):
        raise HttpError(
            401,
            "Missing or wrong feedback token: send 'Authorization: Bearer <token>' with the gateway's "
            f"{FEEDBACK_TOKEN_ENV}.",
        )


def _require_json(request: Request) -> None:
    """415 unless the body is declared JSON: a web page can post text/plain or a form anywhere without
    a CORS preflight, but never application/json."""
    given = request.headers.get("content-type", "")
    media = given.partition(";")[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        shown = repr(given) if given else "missing"
        raise HttpError(
            415,
            f"Content-Type {shown} is not accepted: send the body as JSON with 'Content-Type: application/json'.",
        )


async def _read_json(request: Request, limit: int, timeout: float = 30.0) -> Any:
    _require_json(request)
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise HttpError(413, f"The request body has {length} bytes, over the limit of {limit}: send less.")
    chunks: list[bytes] = []

    async def receive() -> None:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HttpError(413, f"The request body is over the limit of {limit} bytes: send less.")
            chunks.append(chunk)

    try:
        await asyncio.wait_for(receive(), timeout)  # not asyncio.timeout: Python 3.10 is supported
    except asyncio.TimeoutError:  # an alias of TimeoutError from 3.11 on
        raise HttpError(
            408, f"The request body did not arrive within {timeout:g} s: send the whole body at once."
        ) from None
    raw = b"".join(chunks)
    if not raw.strip():
        raise HttpError(400, "The request body is empty: send a JSON object.")
    try:
        if len(raw) > _PARSE_OFF_LOOP_BYTES:
            return await asyncio.to_thread(_loads, raw)
        return _loads(raw)
    except _JSONError as e:
        raise HttpError(400, f"The request body is not valid JSON ({e}): send a JSON object.") from None


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_dumps(obj), status_code=status, media_type="application/json", headers=headers)


def _error(e: HttpError) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
    if e.status in (408, 413):
        headers = {"Connection": "close"}  # the rest of the body is not read: the connection is done
    return _json({"detail": e.detail}, e.status, headers)


def create_app(
    settings: GatewaySettings,
    *,
    config: DeploymentConfig | None = None,
    load_model: Callable[[str, str], LoadedModel],
    resolve: Callable[[str, str], str],
    probe: Callable[[], None] | None = None,
) -> Starlette:
    """Build the gateway app.

    :param settings: runtime settings.
    :param config: the deployment loaded at startup (in the background; ``/ready`` says when).
    :param load_model: ``(name, version) -> LoadedModel`` (e.g. :meth:`ModelLoader.load`).
    :param resolve: ``(name, version_or_alias) -> version number`` (e.g. :meth:`ModelLoader.resolve`).
    :param probe: fast reachability check of the model store before each load (e.g. :meth:`ModelLoader.check`).
    """
    gw = Gateway(settings, load_model, resolve, probe)
    metrics = gw.metrics

    async def _initial_load(startup: DeploymentConfig) -> None:
        gw.status = "loading"
        try:
            await gw.apply(startup)
        except Exception as e:  # noqa: BLE001 - reported on /ready; an admin PUT can fix it
            gw.status, gw.load_error = "error", redact(e)
            log.error("Loading the startup deployment failed: %s", e)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        gw.shadow = ShadowWorker(metrics, settings.shadow_queue)
        if settings.log_dir:
            gw.writer = PredictionLogWriter(
                settings.log_dir,
                flush_seconds=settings.log_flush_seconds,
                max_pending_rows=settings.log_max_held_rows,
                on_drop=metrics.log_dropped.labels("predictions").inc,
                on_error=metrics.log_write_errors.labels("predictions").inc,
            )
            gw.feedback_writer = FeedbackLogWriter(
                settings.log_dir,
                flush_seconds=settings.log_flush_seconds,
                max_held_rows=settings.log_max_held_rows,
                on_drop=metrics.log_dropped.labels("feedback").inc,
                on_error=metrics.log_write_errors.labels("feedback").inc,
            )
            for name, w in (("predictions", gw.writer), ("feedback", gw.feedback_writer)):
                metrics.log_held.labels(name).set_function(functools.partial(getattr, w, "held_rows"))
        restore_counters(gw, settings.counter_file)
        task = asyncio.create_task(_initial_load(config)) if config is not None else None
        sync = asyncio.create_task(_sync_peers(gw)) if settings.peers else None
        try:
            yield
        finally:
            for t in (task, sync):
                if t is not None:
                    t.cancel()
            save_counters(gw, settings.counter_file)
            gw.shadow.close()
            if gw.writer is not None:
                gw.writer.close()
            if gw.feedback_writer is not None:
                gw.feedback_writer.close()

    async def predict(request: Request) -> Response:
        start = time.perf_counter()
        try:
            body = await _read_json(request, settings.max_body_bytes, settings.body_timeout)
        except HttpError as e:
            gw.count_request(e.status)
            return _error(e)
        try:
            return _json(await gw.predict(body, start))
        except HttpError as e:
            return _error(e)

    async def feedback(request: Request) -> Response:
        try:
            _authorize_feedback(request, settings.feedback_token)
            body = await _read_json(request, settings.max_body_bytes, settings.body_timeout)
            # A shared dedup store is a network call: off the event loop.
            answer = await asyncio.to_thread(gw.feedback, body) if gw.dedup.shared else gw.feedback(body)
            return _json(answer)
        except HttpError as e:
            return _error(e)

    async def health(request: Request) -> Response:
        return _json({"status": "ok"})

    async def ready(request: Request) -> Response:
        return _json(*gw.readiness())

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def bandit(request: Request) -> Response:
        return _json(gw.bandit_snapshot())

    peer_pages: dict[str, str] = {}

    async def replicas_metrics(request: Request) -> Response:
        """Every counter summed over all the peers, and the gauges they agree on (what the load balancer
        serves as ``/metrics``: the deployer's error-rate watch, route weights); a peer that does not
        answer counts with its last page."""
        own = generate_latest(metrics.registry).decode()
        if not settings.peers:
            return Response(own, media_type=CONTENT_TYPE_LATEST)
        pages = await asyncio.gather(*(asyncio.to_thread(_fetch_text, u, 2.0) for u in settings.peers))
        for url, page in zip(settings.peers, pages, strict=True):
            if page is not None:
                peer_pages[url] = page
        return Response(merge_replica_pages(list(peer_pages.values())), media_type=CONTENT_TYPE_LATEST)

    async def staging(request: Request) -> Response:
        try:
            _authorize(request, settings.admin_token)
            if request.method == "DELETE":
                return _json({"discarded": gw.discard()})
            body = await _read_json(request, settings.max_body_bytes, settings.body_timeout)
            return _json(await gw.put_deployment(body, stage=True))
        except HttpError as e:
            return _error(e)

    async def commit(request: Request) -> Response:
        try:
            _authorize(request, settings.admin_token)
            body = await _read_json(request, settings.max_body_bytes, settings.body_timeout)
            return _json(await gw.commit_deployment(body))
        except HttpError as e:
            return _error(e)

    async def deployment(request: Request) -> Response:
        try:
            _authorize(request, settings.admin_token)
            if request.method == "PUT":
                body = await _read_json(request, settings.max_body_bytes, settings.body_timeout)
                return _json(await gw.put_deployment(body))
            if gw.deployment is None:
                raise HttpError(404, "No deployment is loaded: PUT /admin/deployment to set one.")
            return _json(gw.deployment.config.to_dict())
        except HttpError as e:
            return _error(e)

    app = Starlette(
        routes=[
            HttpRoute("/predict", predict, methods=["POST"]),
            HttpRoute("/feedback", feedback, methods=["POST"]),
            HttpRoute("/health", health, methods=["GET"]),
            HttpRoute("/ready", ready, methods=["GET"]),
            HttpRoute("/metrics", prometheus, methods=["GET"]),
            HttpRoute("/admin/deployment", deployment, methods=["GET", "PUT"]),
            HttpRoute("/admin/deployment/stage", staging, methods=["PUT", "DELETE"]),
            HttpRoute("/admin/deployment/commit", commit, methods=["POST"]),
            HttpRoute("/bandit", bandit, methods=["GET"]),
            HttpRoute("/metrics/replicas", replicas_metrics, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.gateway = gw
    return app


def _score(model: LoadedModel, records: list[Any]) -> tuple[Batch, np.ndarray, np.ndarray | None]:
    """Validate ``records`` against the model's signature and predict (422 / 500 as HttpError)."""
    try:
        batch = model.batch(records)
    except MlopsInputError as e:
        raise HttpError(422, str(e)) from None
    try:
        preds, proba = model.predict(batch)
    except Exception as e:  # answered as a server error, counted, and logged
        log.exception("Model %s v%s failed to predict", model.name, model.version)
        raise HttpError(500, f"Model {model.name} v{model.version} failed to predict: {e}") from None
    return batch, preds, proba


def _fetch_text(url: str, timeout: float) -> str | None:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/metrics", timeout=timeout) as resp:
            text: str = resp.read().decode()
            return text
    except (OSError, ValueError):
        return None


def sum_counters(pages: list[str]) -> str:
    """The counter samples (``*_total``) of several ``/metrics`` pages, summed by name and labels."""
    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for page in pages:
        for family in text_string_to_metric_families(page):
            if family.type not in ("counter", "unknown"):  # "unknown": a page of sums, as this one makes
                continue
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    totals[key] = totals.get(key, 0.0) + sample.value
    lines = []
    for (name, labels), value in sorted(totals.items()):
        shown = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels)
        lines.append(f"{name}{{{shown}}} {value!r}")
    return "\n".join(lines) + "\n"


def common_gauges(pages: list[str]) -> str:
    """The gauge samples that every page reports with the same value (route weights, the champion),
    once each, never summed; a gauge that differs between replicas (a per-replica window, a queue) or
    that some page lacks is left out: neither a sum nor any one replica's value is the fleet's."""
    from prometheus_client.parser import text_string_to_metric_families

    seen: list[dict[tuple[str, tuple[tuple[str, str], ...]], float]] = []
    for page in pages:
        values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(page):
            if family.type == "gauge":
                for sample in family.samples:
                    values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        seen.append(values)
    if not seen:
        return ""
    agreed = {k: v for k, v in seen[0].items() if all(other.get(k) == v for other in seen[1:])}
    lines: list[str] = []
    for (name, labels), value in sorted(agreed.items()):
        if not lines or not lines[-1].startswith(f"{name}{{"):
            lines.append(f"# TYPE {name} gauge")
        shown = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels)
        lines.append(f"{name}{{{shown}}} {value!r}")
    return "\n".join(lines) + "\n" if lines else ""


def merge_replica_pages(pages: list[str]) -> str:
    """The ``/metrics`` pages of every replica as one: counters summed (:func:`sum_counters`), gauges
    kept where all replicas agree (:func:`common_gauges`)."""
    return sum_counters(pages) + common_gauges(pages)


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fetch_bandit(url: str, timeout: float) -> dict[str, Any]:
    import json
    import urllib.request

    with urllib.request.urlopen(f"{url.rstrip('/')}/bandit", timeout=timeout) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
    return answer


async def _sync_peers(gw: Gateway) -> None:
    """Read every peer's bandit rewards each ``peer_sync_seconds`` (a peer that does not answer keeps its
    last known rewards: it may be restarting)."""
    s = gw.settings
    timeout = max(0.2, min(2.0, s.peer_sync_seconds))
    while True:
        snapshots: dict[str, dict[str, Any]] = {}
        for url in s.peers:
            try:
                snapshots[url] = await asyncio.to_thread(_fetch_bandit, url, timeout)
            except (OSError, ValueError):
                continue
        gw.merge_peers(snapshots)
        await asyncio.sleep(s.peer_sync_seconds)


def restore_counters(gw: Gateway, path: str | None) -> None:
    """Go on from the counters a clean shutdown saved, then remove the file.

    Removed so that a crash later never restores them twice: after a crash the counters start
    from 0, which Prometheus's ``increase()`` takes as a reset, the one thing it knows how to add up.
    """
    import json
    import os

    if not path or not os.path.exists(path):
        return
    try:
        with open(path, encoding="utf-8") as f:
            snapshot = json.load(f)
        os.remove(path)
    except (OSError, ValueError) as e:
        log.error("The counter file %s cannot be read (%s): the feedback counters start from 0", path, e)
        return
    gw.metrics.restore(snapshot)
    rewards: dict[str, list[float]] = {}
    for labels, value in snapshot.get("bandit_rewards", []):
        sf = rewards.setdefault(labels["version"], [0.0, 0.0])
        sf[0 if labels["outcome"] == "success" else 1] += float(value)
    for version, (succ, fail) in rewards.items():
        gw.bandit.reward(version, int(succ), int(fail))


def save_counters(gw: Gateway, path: str | None) -> None:
    """Save the feedback counters at a clean shutdown (see :func:`restore_counters`)."""
    import json
    import os

    if not path:
        return
    tmp = f"{path}.tmp"
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(gw.metrics.snapshot(), f)
        os.replace(tmp, path)
    except OSError as e:
        log.error("Cannot save the feedback counters to %s (%s): they restart from 0", path, e)


def save_state(path: str, config: dict[str, Any]) -> None:
    """Write the applied deployment atomically (a crash mid-write leaves the previous file)."""
    import json
    import os

    tmp = f"{path}.tmp"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(tmp, "w") as f:
        json.dump(config, f)
    os.replace(tmp, path)
