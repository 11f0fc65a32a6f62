"""free_port: a port nobody listens on, which the caller can bind."""

from __future__ import annotations

import socket

from airflow_mlops.core.net import free_port


def test_free_port_can_be_bound_and_is_not_listening() -> None:
    port = free_port()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # nothing answers there
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        assert s.getsockname()[1] == port
