"""DaskHook: a Dask (``dask.distributed``) scheduler from an Airflow connection of type ``dask``."""

from __future__ import annotations

from airflow.sdk import BaseHook

from airflow_mlops.core.errors import MlopsInputError

DEFAULT_PORT = 8786


class DaskHook(BaseHook):
    """The address of a Dask scheduler, for drift checks with ``engine="dask"``.

    The connection's host is the scheduler's address (``tcp://scheduler:8786``, or a bare host whose
    port is the connection's, 8786 by default); ``schema`` may name the protocol (``tcp``, ``tls``).

    :param dask_conn_id: the connection id.
    """

    conn_name_attr = "dask_conn_id"
    default_conn_name = "dask_default"
    conn_type = "dask"
    hook_name = "Dask"

    def __init__(self, dask_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.dask_conn_id = dask_conn_id

    def address(self) -> str:
        """The scheduler's address, e.g. ``tcp://scheduler:8786``."""
        conn = self.get_connection(self.dask_conn_id)
        host = (conn.host or "").strip().rstrip("/")
        if not host:
            raise MlopsInputError(
                f"Connection {conn.conn_id!r} has no host: set it to the Dask scheduler (tcp://scheduler:8786)."
            )
        if "://" not in host:
            host = f"{conn.schema or 'tcp'}://{host}"
        if host.count(":") < 2:  # no port after the scheme's
            host = f"{host}:{conn.port or DEFAULT_PORT}"
        return host

    def test_connection(self) -> tuple[bool, str]:
        """Check that the scheduler answers (within 10 seconds)."""
        try:
            from airflow_mlops.core.drift.distributed import connect

            client = connect(self.address())
            try:
                workers = len(client.scheduler_info().get("workers", {}))
            finally:
                client.close()
            return True, f"Dask scheduler answered with {workers} workers"
        except Exception as e:  # noqa: BLE001 - reported to the UI, not raised
            return False, str(e)
