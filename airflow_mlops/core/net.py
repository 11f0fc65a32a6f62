"""Local networking helpers."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now.

    The port is released before it is returned, so another process may take it before the caller
    binds it: a caller that starts a server on it must treat "address in use" as a reason to pick
    another port and retry, never as a lasting failure.

    :param host: the interface to probe.
    """
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port
