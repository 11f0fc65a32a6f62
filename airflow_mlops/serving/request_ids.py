"""Signed request ids: a ``/predict`` answer's ``request_id`` carries what its feedback join needs.

``<uid>.<payload>.<signature>``: ``uid`` is 32 random hex digits (the key of the prediction and
feedback logs), ``payload`` the model name, version, time and predictions (compact, base64url), and
``signature`` an HMAC-SHA256 over both with the secret every replica shares
(``MLOPS_GATEWAY_REQUEST_SECRET``). So any replica, including one restarted since the prediction,
joins the feedback without having seen the request, and nobody without the secret can make up a
prediction to label. Without a secret the gateway draws one at start: ids then join on that process
only (one replica, as before).

Deduplication ("count a request's feedback once") needs state no signature can carry: see
:class:`FeedbackDedup`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import struct
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.errors import MlopsInputError, MlopsServiceError

if TYPE_CHECKING:
    import numpy as np

SECRET_ENV = "MLOPS_GATEWAY_REQUEST_SECRET"
DEDUP_URL_ENV = "MLOPS_GATEWAY_DEDUP_URL"
# A secret shorter than this is guessable offline from one signed id.
MIN_SECRET_BYTES = 16
_SIG_BYTES = 16  # 128-bit tag: forging one takes ~2^128 guesses
# Prediction kinds: class indices (1 or 2 bytes) or float64 values.
_KINDS = {b"b": "B", b"h": "H", b"d": "d"}


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class SignedRequest:
    """What a verified request id says.

    :param uid: the request's log key.
    :param model: model name.
    :param version: the version that predicted.
    :param issued: Unix time of the prediction.
    :param predictions: the predictions, one per row (class labels as the model's class labels).
    """

    uid: str
    model: str
    version: str
    issued: int
    predictions: list[Any]


class RequestSigner:
    """Makes and checks signed request ids.

    :param secret: the shared secret (None: a random one, valid in this process only).
    :param max_age: seconds a request id stays valid for feedback (and the dedup memory's horizon).
    """

    def __init__(self, secret: str | bytes | None = None, max_age: float = 7 * 86400) -> None:
        if secret is None:
            self.shared = False
            key = secrets.token_bytes(32)
        else:
            self.shared = True
            key = secret.encode() if isinstance(secret, str) else secret
            if len(key) < MIN_SECRET_BYTES:
                raise MlopsInputError(
                    f"{SECRET_ENV} has {len(key)} bytes, under {MIN_SECRET_BYTES}: give every replica the same "
                    "random secret, e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`."
                )
        self._key = key
        self.max_age = max_age

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> RequestSigner:
        """The signer of ``MLOPS_GATEWAY_REQUEST_SECRET`` (a per-process one when unset)."""
        env = os.environ if environ is None else environ
        return cls(env.get(SECRET_ENV) or None)

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode("ascii"), hashlib.sha256).digest()[:_SIG_BYTES])

    def issue(self, model: str, version: str, predictions: np.ndarray, classes: list[Any] | None) -> str:
        """A new signed request id for ``predictions`` of ``model`` ``version``.

        :param classes: the model's class labels (predictions are stored as indices into them).
        """
        import numpy as np

        uid = secrets.token_hex(16)
        if classes is not None:
            index = {c: i for i, c in enumerate(classes)}
            kind = b"b" if len(classes) < 256 else b"h"
            values = np.fromiter(
                (index[p] for p in predictions.tolist()), dtype="u1" if kind == b"b" else "<u2"
            )
        else:
            kind = b"d"
            values = np.asarray(predictions, dtype="<f8")
        name = model.encode()
        ver = version.encode()
        head = struct.pack("<BBI", len(name), len(ver), int(time.time())) + name + ver + kind
        body = f"{uid}.{_b64(head + values.tobytes())}"
        return f"{body}.{self._sign(body)}"

    def verify(self, request_id: str, classes_of: Any) -> SignedRequest:
        """Check a request id's signature and age and decode it.

        :param request_id: the id from a ``/predict`` answer.
        :param classes_of: ``(model, version) -> class labels or None`` (for class predictions).
        :raises MlopsInputError: forged, garbled or expired (the message says which).
        """
        uid, _, rest = request_id.partition(".")
        payload, _, sig = rest.partition(".")
        body = f"{uid}.{payload}"
        if not (uid and payload and sig) or not hmac.compare_digest(sig, self._sign(body)):
            where = "any replica's shared secret" if self.shared else "this gateway"
            raise MlopsInputError(
                f"Unknown request_id {request_id[:40]!r}: it was not issued by {where}; send the request_id "
                "of a /predict answer exactly as it came."
            )
        try:
            raw = _unb64(payload)
            n_name, n_ver, issued = struct.unpack_from("<BBI", raw)
            at = 6
            model = raw[at : at + n_name].decode()
            version = raw[at + n_name : at + n_name + n_ver].decode()
            at += n_name + n_ver
            kind = raw[at : at + 1]
            data = raw[at + 1 :]
            fmt = _KINDS[kind]
        except (binascii.Error, struct.error, UnicodeDecodeError, KeyError, ValueError):
            raise MlopsInputError(
                f"Request id {uid} is malformed: send it exactly as /predict gave it."
            ) from None
        if time.time() - issued > self.max_age:
            raise MlopsInputError(
                f"Request {uid} was answered more than {self.max_age / 86400:g} days ago: feedback is "
                "accepted within that age only."
            )
        values = list(struct.unpack(f"<{len(data) // struct.calcsize(fmt)}{fmt}", data))
        if fmt != "d":
            classes = classes_of(model, version)
            if classes is None:
                raise MlopsInputError(
                    f"Request {uid} holds class predictions but {model} v{version} has no classes."
                )
            values = [classes[i] for i in values]
        return SignedRequest(uid, model, version, issued, values)


class FeedbackDedup:
    """Counts each request's feedback once: claims its uid, in this process or in a shared Redis.

    With ``url`` (``redis://host:6379/0``), a claim is ``SET mlops:feedback:<uid> 1 NX EX <max_age>``:
    atomic across every replica and restart, so a feedback sent twice, or to two replicas, is
    counted once. Without it, the claims live in this process (bounded): a repeat to the same replica
    is refused, a repeat to another replica or after a restart is counted again.

    :param url: Redis URL (None: in-process only).
    :param capacity: uids remembered in process.
    :param max_age: seconds a claim is kept (the request ids' max age).
    :param timeout: seconds a Redis call may take.
    """

    def __init__(
        self,
        url: str | None = None,
        capacity: int = 200_000,
        max_age: float = 7 * 86400,
        timeout: float = 2.0,
    ) -> None:
        self.url = url
        self.capacity = capacity
        self.max_age = max_age
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._redis: Any = None
        if url:
            import redis

            self._redis = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)

    @property
    def shared(self) -> bool:
        """Whether claims hold across replicas."""
        return self._redis is not None

    def claim(self, uid: str) -> bool:
        """Take ``uid`` for counting: True the first time, False when it was claimed before.

        :raises MlopsServiceError: the shared store cannot be reached (nothing is counted).
        """
        with self._lock:
            if uid in self._seen:
                return False
        if self._redis is not None:
            import redis

            try:
                first = bool(self._redis.set(f"mlops:feedback:{uid}", 1, nx=True, ex=int(self.max_age)))
            except redis.RedisError as e:
                from airflow_mlops.core.redact import redact

                raise MlopsServiceError(
                    f"The feedback dedup store {redact(self.url)} cannot be reached ({type(e).__name__}): "
                    "start Redis or fix MLOPS_GATEWAY_DEDUP_URL; send the feedback again later."
                ) from None
            if not first:
                return False
        with self._lock:
            if uid in self._seen:
                return False
            self._seen[uid] = None
            if len(self._seen) > self.capacity:
                self._seen.popitem(last=False)
        return True
