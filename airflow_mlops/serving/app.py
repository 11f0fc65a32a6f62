"""The model gateway: a Starlette app serving registered models with routing, feedback and metrics.

Endpoints: ``POST /predict``, ``POST /feedback`` (feedback bearer token), ``GET /health``, ``GET /ready``,
``GET /metrics``, ``GET|PUT /admin/deployment`` (admin bearer token). Bodies must be JSON
(``Content-Type: application/json``, 415 otherwise), so a web page cannot post a plain form here. The
serving state is one immutable :class:`Deployment`; a change builds a new one (models loaded first, off
the event loop, within a bounded time and without holding the swap lock) and swaps the reference, so
every request sees either the old or the new deployment whole, and none fails during a swap.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import threading
import time
import uuid
from collections import deque
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
from airflow_mlops.serving.prediction_log import PredictionLogWriter
from airflow_mlops.serving.routing import BanditStats, Router

if TYPE_CHECKING:
    import numpy as np

    from airflow_mlops.serving.models import Batch, LoadedModel

try:  # orjson parses and writes JSON several times faster; the stdlib is the fallback
    import orjson

    def _loads(raw: bytes) -> Any:
        return orjson.loads(raw)

    def _dumps(obj: Any) -> bytes:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)

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
    :param feedback_capacity: recent requests kept for joining feedback (oldest forgotten first).
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
_UNKNOWN = object()


class ShadowWorker:
    """Scores shadow copies in a thread, in micro-batches: every ``interval`` seconds it takes what
    queued up and scores it with one predict call per version.

    The request path only appends to a deque (no lock, no wake-up), and one predict of many rows
    costs about as much as one of a single row, so shadow mode stays cheap under load.

    :param metrics: where shadow counts go.
    :param maxsize: copies waiting at most; more are dropped and counted.
    :param interval: seconds between micro-batches.
    """

    def __init__(self, metrics: LiveMetrics, maxsize: int, interval: float = 0.1) -> None:
        self.metrics = metrics
        self.maxsize = maxsize
        self.interval = interval
        self.processed = 0
        self._items: deque[tuple[LoadedModel, Any, np.ndarray]] = deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)
        self._thread.start()

    def submit(
        self, model: LoadedModel, records: list[dict[str, Any]], batch: Batch, champion_preds: np.ndarray
    ) -> None:
        """Queue a copy for ``model``; drop it (counted) when the queue is full.

        :param model: the shadow version.
        :param records: the request's records.
        :param batch: the champion's validated input, reused when the shadow takes the same columns.
        :param champion_preds: what the champion answered.
        """
        if len(self._items) >= self.maxsize:
            self.metrics.shadow_dropped.labels(model.name, model.version).inc()
            return
        same_input = (
            batch.matrix is not None and model.uses_matrix_path and batch.names == model.feature_names
        )
        self._items.append((model, batch if same_input else records, champion_preds))

    @property
    def pending(self) -> int:
        """Copies waiting to be scored."""
        return len(self._items)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._drain()
        self._drain()

    def _drain(self) -> None:
        items = []
        pop = self._items.popleft
        while True:
            try:
                items.append(pop())
            except IndexError:
                break
        if items:
            self._score(items)

    def _score(self, items: list[tuple[LoadedModel, Any, np.ndarray]]) -> None:
        by_model: dict[int, list[tuple[LoadedModel, Any, np.ndarray]]] = {}
        for it in items:
            by_model.setdefault(id(it[0]), []).append(it)
        for group in by_model.values():
            model = group[0][0]
            try:
                agree = self._agreement(model, group)
            except MlopsInputError:
                # Some inputs do not fit the shadow's signature: score one by one, misfits disagree.
                agree = 0
                for item in group:
                    try:
                        agree += self._agreement(model, [item])
                    except MlopsInputError:
                        pass
            except Exception:  # noqa: BLE001 - a broken shadow must never hurt the champion's traffic
                log.exception("Shadow version %s/%s failed to predict", model.name, model.version)
                agree = 0
            self.metrics.shadow_requests.labels(model.name, model.version).inc(len(group))
            if agree:
                self.metrics.shadow_agreement.labels(model.name, model.version).inc(agree)
            self.processed += len(group)

    @staticmethod
    def _agreement(model: LoadedModel, group: list[tuple[LoadedModel, Any, np.ndarray]]) -> int:
        """Predict the group's rows in one call per input kind; count requests whose predictions all match."""
        import numpy as np

        from airflow_mlops.serving.models import Batch

        agree = 0
        matrices = [it for it in group if isinstance(it[1], Batch)]
        records = [it for it in group if not isinstance(it[1], Batch)]
        for part in (matrices, records):
            if not part:
                continue
            if part is matrices:
                stacked = np.vstack([b.matrix for _, b, _ in part])
                preds, _ = model.predict(Batch(part[0][1].names, len(stacked), matrix=stacked))
                sizes = [b.n_rows for _, b, _ in part]
            else:
                preds, _ = model.predict(model.batch([r for _, recs, _ in part for r in recs]))
                sizes = [len(recs) for _, recs, _ in part]
            # Row-wise equality, then one AND per request over its rows, all vectorised.
            equal = np.asarray(preds == np.concatenate([champ for _, _, champ in part]), dtype=bool)
            starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
            agree += int(np.logical_and.reduceat(equal, starts).sum())
        return agree

    def close(self) -> None:
        """Score what is queued, then stop."""
        self._stop.set()
        self._thread.join(timeout=30)


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
        self.deployment: Deployment | None = None
        self.status = "empty"
        self.load_error: str | None = None
        # request_id -> (model key, predictions), or None once its feedback arrived. Plain tuples of
        # untracked values: the garbage collector stops scanning them, so full collections stay short.
        self.pending: dict[str, tuple[str, np.ndarray] | None] = {}
        self.served: dict[str, LoadedModel] = {}
        self.writer: PredictionLogWriter | None = None
        self.feedback_writer: FeedbackLogWriter | None = None
        self.shadow: ShadowWorker | None = None
        self._swap_lock = asyncio.Lock()
        self._load_lock = asyncio.Lock()
        self._frozen = False

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
        s = self.settings
        try:
            await asyncio.wait_for(self._load_lock.acquire(), s.put_wait_seconds)
        except TimeoutError:
            raise GatewayBusy(
                f"Another deployment change is still loading models (waited {s.put_wait_seconds:g} s): "
                "retry when it has finished (GET /admin/deployment shows what serves)."
            ) from None
        try:
            try:
                new = await asyncio.wait_for(asyncio.to_thread(self.build, config), s.load_timeout)
            except TimeoutError:
                where = f" from MLflow at {redact(s.tracking_uri)}" if s.tracking_uri else ""
                raise MlopsServiceError(
                    f"Loading the models of {config.model_name}{where} did not finish within "
                    f"{s.load_timeout:g} s: check that the MLflow server and its artifact store answer, "
                    "or start the gateway with a longer --load-timeout."
                ) from None
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
        finally:
            self._load_lock.release()
        return new

    # --- request handling ------------------------------------------------------------------------
    def remember(self, request_id: str, model: LoadedModel, predictions: np.ndarray) -> None:
        """Keep a served request for its feedback, forgetting the oldest beyond the capacity."""
        pending = self.pending
        pending[request_id] = (model.key, predictions)
        if len(pending) > self.settings.feedback_capacity:
            del pending[next(iter(pending))]

    def keep_served(self, models: dict[str, LoadedModel]) -> None:
        """Remember the models of a new deployment for feedback joins (the oldest beyond a bound go)."""
        for m in models.values():
            self.served.pop(m.key, None)
            self.served[m.key] = m
        while len(self.served) > MODELS_KEPT:
            del self.served[next(iter(self.served))]


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
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise HttpError(413, f"The request body is over the limit of {limit} bytes: send less.")
                chunks.append(chunk)
    except TimeoutError:
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

    async def _initial_load() -> None:
        assert config is not None
        gw.status = "loading"
        try:
            await gw.apply(config)
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
                metrics.log_held.labels(name).set_function(lambda w=w: w.held_rows)
        task = asyncio.create_task(_initial_load()) if config is not None else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
            gw.shadow.close()
            if gw.writer is not None:
                gw.writer.close()
            if gw.feedback_writer is not None:
                gw.feedback_writer.close()

    async def predict(request: Request) -> Response:
        start = time.perf_counter()
        dep = gw.deployment
        model_name = dep.config.model_name if dep is not None else "none"
        version = "none"
        try:
            body = await _read_json(request, settings.max_body_bytes, settings.body_timeout)
            if dep is None:
                raise HttpError(503, "No model is deployed yet: wait for /ready or PUT /admin/deployment.")
            if type(body) is not dict or "inputs" not in body:
                raise HttpError(422, 'The body must be {"inputs": {...}} or {"inputs": [{...}, ...]}.')
            inputs = body["inputs"]
            records = [inputs] if type(inputs) is dict else inputs
            if type(records) is not list or not records:
                raise HttpError(
                    422, '"inputs" must be one record (an object) or a non-empty list of records.'
                )
            if len(records) > settings.max_rows:
                raise HttpError(
                    413,
                    f"The request has {len(records)} rows, over the limit of {settings.max_rows}: split it.",
                )
            key = body.get("key")
            sticky = dep.config.sticky_key
            if key is None and sticky is not None and type(records[0]) is dict:
                key = records[0].get(sticky)
            version = dep.router.choose(None if key is None else str(key))
            model = dep.models[version]
            if len(records) > settings.offload_rows:
                # A big batch would hold the event loop for a second or more: /health would miss the
                # container healthcheck's timeout. Scored in a worker thread instead.
                batch, preds, proba = await asyncio.to_thread(_score, model, records)
            else:
                batch, preds, proba = _score(model, records)
        except HttpError as e:
            metrics.requests.labels(model_name, version, str(e.status)).inc()
            return _error(e)
        request_id = uuid.uuid4().hex
        gw.remember(request_id, model, preds)
        if gw.writer is not None:
            gw.writer.add(model_name, version, request_id, batch, preds)
        for shadow_version in dep.router.shadow_versions:
            gw.shadow.submit(dep.models[shadow_version], records, batch, preds)  # type: ignore[union-attr]
        answer: dict[str, Any] = {
            "request_id": request_id,
            "model_name": model_name,
            "model_version": version,
            "predictions": preds,
        }
        if proba is not None:
            answer["probabilities"] = proba
        response = _json(answer)
        metrics.requests.labels(model_name, version, "200").inc()
        metrics.predictions.labels(model_name, version).inc(batch.n_rows)
        metrics.latency.labels(model_name, version).observe(time.perf_counter() - start)
        return response

    async def feedback(request: Request) -> Response:
        try:
            _authorize_feedback(request, settings.feedback_token)
            body = await _read_json(request, settings.max_body_bytes, settings.body_timeout)
            if type(body) is not dict or not isinstance(body.get("request_id"), str):
                raise HttpError(
                    422,
                    'The body must be {"request_id": "...", "label": ...} or {"request_id": ..., "labels": [...]}.',
                )
            rid = body["request_id"]
            entry = gw.pending.get(rid, _UNKNOWN)
            if entry is None:
                raise HttpError(409, f"Feedback for request {rid} was already recorded: send it once.")
            if entry is _UNKNOWN:
                raise HttpError(
                    404,
                    f"Unknown request_id {rid!r}: it was never served here or is older than the last "
                    f"{settings.feedback_capacity} requests kept for feedback; send the request_id of a "
                    "recent /predict answer of this gateway.",
                )
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
            key, predictions = entry  # type: ignore[misc]
            n = len(predictions)
            if len(labels) != n:
                raise HttpError(
                    422,
                    f"Request {rid} predicted {n} rows but {len(labels)} labels were sent: send one per row.",
                )
            model = gw.served.get(key)
            if model is None:
                raise HttpError(
                    410,
                    f"Request {rid} was served by {key}, which left the gateway too long ago to join feedback.",
                )
            try:
                y_true = model.coerce_labels(labels)
            except MlopsInputError as e:
                raise HttpError(422, str(e)) from None
        except HttpError as e:
            return _error(e)
        gw.pending[rid] = None
        y_pred = predictions.tolist()
        metrics.observe_feedback(model.name, model.version, y_true, y_pred, model.class_labels)
        if gw.feedback_writer is not None:
            gw.feedback_writer.add(model.name, rid, list(y_true))
        correct = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t == p)
        if model.class_labels is not None:
            gw.bandit.reward(model.version, correct, n - correct)
        return _json({"request_id": rid, "model_version": model.version, "accepted": n, "correct": correct})

    async def health(request: Request) -> Response:
        return _json({"status": "ok"})

    async def ready(request: Request) -> Response:
        dep = gw.deployment
        if dep is None:
            detail = gw.load_error or {"empty": "no deployment configured", "loading": "loading models"}.get(
                gw.status, gw.status
            )
            return _json({"status": gw.status, "detail": detail}, 503)
        cfg = dep.config
        return _json(
            {
                "status": "ready",
                "model_name": cfg.model_name,
                "strategy": cfg.strategy,
                "versions": cfg.versions,
                "champion": cfg.champion,
            }
        )

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def deployment(request: Request) -> Response:
        try:
            _authorize(request, settings.admin_token)
            if request.method == "GET":
                if gw.deployment is None:
                    raise HttpError(404, "No deployment is loaded: PUT /admin/deployment to set one.")
                return _json(gw.deployment.config.to_dict())
            body = await _read_json(request, settings.max_body_bytes, settings.body_timeout)
            cfg = None
            try:
                cfg = DeploymentConfig.parse(body)
                new = await gw.apply(cfg, save=True)
            except GatewayBusy as e:
                raise HttpError(409, f"{e} The deployment was not changed.") from None
            except MlopsInputError as e:
                raise HttpError(422, f"{redact(e)} The deployment was not changed.") from None
            except MlopsServiceError as e:
                raise HttpError(503, f"{redact(e)} The deployment was not changed.") from None
            except Exception as e:  # noqa: BLE001 - e.g. a model that fails to unpickle
                log.exception("Loading deployment of %s failed", cfg.model_name if cfg else "?")
                raise HttpError(
                    500, f"Loading the models failed: {redact(e)}. The deployment was not changed."
                ) from None
            return _json(new.config.to_dict())
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
    except Exception as e:  # noqa: BLE001 - answered as a server error, counted, and logged
        log.exception("Model %s v%s failed to predict", model.name, model.version)
        raise HttpError(500, f"Model {model.name} v{model.version} failed to predict: {e}") from None
    return batch, preds, proba


def save_state(path: str, config: dict[str, Any]) -> None:
    """Write the applied deployment atomically (a crash mid-write leaves the previous file)."""
    import json
    import os

    tmp = f"{path}.tmp"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(tmp, "w") as f:
        json.dump(config, f)
    os.replace(tmp, path)
