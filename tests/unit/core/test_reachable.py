"""check_reachable: a fast, redacted verdict on an MLflow server, with or without credentials in its URL."""

from __future__ import annotations

import http.server
import threading
import time

import pytest

from airflow_mlops.core.errors import MlopsServiceError
from airflow_mlops.core.tracking import check_reachable
from tests.servers import free_port


def test_credentials_in_the_url_are_not_read_as_the_host() -> None:
    """A real HTTP server answers /health: ``user:pw@host`` must reach it, not be taken for a host name."""

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server's naming
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        check_reachable(f"http://ci:s3cret@127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()


def test_dead_server_is_reported_fast_and_redacted() -> None:
    port = free_port()
    start = time.monotonic()
    with pytest.raises(MlopsServiceError) as err:
        check_reachable(f"http://ci:s3cret@127.0.0.1:{port}", timeout=3)
    assert time.monotonic() - start < 5
    assert "s3cret" not in str(err.value) and "***@127.0.0.1" in str(err.value)
    assert "start the server" in str(err.value)
