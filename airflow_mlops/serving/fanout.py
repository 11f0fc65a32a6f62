"""A deployment change applied on every replica in two phases: all load, then all switch.

The replica that receives ``PUT /admin/deployment`` (through the load balancer, from any deployer)
coordinates: it stages the change on the first peer (which resolves aliases once, so every replica
serves the same version numbers), then on every other peer with the resolved config; only when every
replica has loaded the models does it commit on all of them. One replica that fails to load discards
the stage everywhere: no replica switched, the old deployment keeps serving on all of them. A commit
is a reference swap (plus the state-file write) and cannot fail for a slow model; a replica that died
between the phases is reported, and the replicas that switched are put back on the previous config.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any


@dataclass
class PeerError(Exception):
    """A replica refused or failed a phase: its URL, the HTTP status (0: unreachable) and its message."""

    peer: str
    status: int
    detail: str
    phase: str = "stage"

    def __str__(self) -> str:
        return f"replica {self.peer} answered {self.status or 'nothing'}: {self.detail}"


def admin_call(peer: str, method: str, path: str, token: str, body: Any, timeout: float) -> dict[str, Any]:
    """One admin request to a replica.

    :raises PeerError: an error answer, or no answer within ``timeout``.
    """
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"{peer.rstrip('/')}{path}",
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            answer: dict[str, Any] = json.loads(resp.read() or b"{}")
            return answer
    except urllib.error.HTTPError as e:
        try:
            detail = json.loads(e.read()).get("detail", "")
        except ValueError:
            detail = ""
        raise PeerError(peer, e.code, str(detail) or e.reason) from None
    except (OSError, ValueError) as e:
        raise PeerError(peer, 0, f"unreachable ({type(e).__name__}: {getattr(e, 'reason', e)})") from None


def apply_everywhere(
    peers: tuple[str, ...],
    token: str,
    config: dict[str, Any],
    previous: dict[str, Any] | None,
    timeout: float,
) -> dict[str, Any]:
    """Stage ``config`` on every peer, then commit on every peer.

    :param peers: every replica's base URL.
    :param token: the admin token (the same on every replica).
    :param config: the new deployment (JSON form).
    :param previous: the deployment served before (put back on replicas that switched when a commit
        fails); None: nothing to put back.
    :param timeout: seconds a stage may take on one replica (it loads models).
    :returns: the committed config (versions resolved).
    :raises PeerError: a replica could not load (nothing switched anywhere) or could not commit (the
        others were put back where possible).
    """
    first = admin_call(peers[0], "PUT", "/admin/deployment/stage", token, config, timeout)
    resolved = first["config"]
    stages = {peers[0]: first["stage_id"]}
    failure: PeerError | None = None
    with ThreadPoolExecutor(max_workers=max(1, len(peers) - 1)) as pool:
        futures = {
            p: pool.submit(admin_call, p, "PUT", "/admin/deployment/stage", token, resolved, timeout)
            for p in peers[1:]
        }
        for p, f in futures.items():
            try:
                stages[p] = f.result()["stage_id"]
            except PeerError as e:
                failure = failure or e
    if failure is not None:
        _each(peers, lambda p: admin_call(p, "DELETE", "/admin/deployment/stage", token, None, 10.0))
        raise failure
    committed: list[str] = []
    for p in peers:
        try:
            admin_call(p, "POST", "/admin/deployment/commit", token, {"stage_id": stages[p]}, 30.0)
            committed.append(p)
        except PeerError as e:
            _each(peers, lambda q: admin_call(q, "DELETE", "/admin/deployment/stage", token, None, 10.0))
            if previous is not None:
                _each(committed, lambda q: _stage_commit(q, token, previous, timeout))
            e.phase = "commit"
            raise e from None
    resolved_config: dict[str, Any] = resolved
    return resolved_config


def _stage_commit(peer: str, token: str, config: dict[str, Any], timeout: float) -> None:
    staged = admin_call(peer, "PUT", "/admin/deployment/stage", token, config, timeout)
    admin_call(peer, "POST", "/admin/deployment/commit", token, {"stage_id": staged["stage_id"]}, 30.0)


def _each(peers: tuple[str, ...] | list[str], call: Any) -> None:
    """Best effort on every peer (cleanup after a failure: a peer that is down has nothing to clean)."""
    for p in peers:
        try:
            call(p)
        except PeerError:
            continue
