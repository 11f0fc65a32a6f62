"""uvicorn's HTTP protocol with a deadline on request headers.

uvicorn closes a keep-alive connection that stays idle after a response (``timeout_keep_alive``), but it
has no timeout while it waits for a request's headers: a client that connects and sends nothing, or
half a request line (a slow-loris client), holds its connection open for ever. This subclass closes a
connection whose next request's headers are not complete within ``header_timeout`` seconds of the
connection opening or of its first byte after a response. Slow bodies are the app's
``body_timeout`` (408).
"""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any


def protocol_class(header_timeout: float, prefer_httptools: bool = True) -> type[asyncio.Protocol]:
    """The uvicorn HTTP protocol (httptools when installed, else h11) with a header deadline.

    :param header_timeout: seconds a client has to send a request's headers.
    :param prefer_httptools: use httptools when it is installed (about twice as fast as h11).
    """
    base: type[Any]
    if prefer_httptools and importlib.util.find_spec("httptools"):
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        base = HttpToolsProtocol
    else:
        from uvicorn.protocols.http.h11_impl import H11Protocol

        base = H11Protocol

    class HeaderDeadlineProtocol(base):  # type: ignore[misc]
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            before = self.cycle
            if before is None or before.response_complete:
                self._arm()  # a new request begins: its headers are due within the deadline
            super().data_received(data)
            if self.cycle is not before:
                self._disarm()  # its headers are complete: the app handles it from here

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._deadline is None:
                self._deadline = self.loop.call_later(header_timeout, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                self.transport.close()

    HeaderDeadlineProtocol.__name__ = f"HeaderDeadline{base.__name__}"
    return HeaderDeadlineProtocol
