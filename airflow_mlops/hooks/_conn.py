"""The URL of an Airflow connection, one way for every hook."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from airflow_mlops.core.errors import MlopsInputError


def conn_url(conn: Any, what: str, default_scheme: str = "http", verbatim: tuple[str, ...] = ()) -> str:
    """The connection's host as a URL: a bare host takes the connection's schema (else
    ``default_scheme``), an HTTP(S) URL without a port takes the connection's port, a path prefix and
    credentials in the host are kept, a trailing ``/`` goes.

    :param conn: an Airflow connection.
    :param what: what the host should be, for the message (e.g. ``the Prometheus base URL``).
    :param default_scheme: scheme of a bare host when the connection has no schema.
    :param verbatim: prefixes of URIs used as they are (e.g. MLflow's ``file:`` stores).
    :raises MlopsInputError: the connection has no host, or its host names a port that is not a number.
    """
    host = (conn.host or "").strip()
    if not host:
        raise MlopsInputError(f"Connection {conn.conn_id!r} has no host: set it to {what}.")
    if verbatim and host.startswith(verbatim):
        return host
    if "://" not in host:
        host = f"{conn.schema or default_scheme}://{host}"
    parts = urlsplit(host)
    if parts.scheme not in ("http", "https"):
        return host
    try:
        has_port = parts.port is not None
    except ValueError:
        raise MlopsInputError(
            f"Connection {conn.conn_id!r}: the host {parts.hostname}'s port is not a number: set it to {what}."
        ) from None
    if conn.port and not has_port:
        parts = parts._replace(netloc=f"{parts.netloc}:{conn.port}")
    return urlunsplit(parts).rstrip("/")
