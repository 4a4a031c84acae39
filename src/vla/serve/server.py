"""Running the app under uvicorn: the connection limits ``vla-serve`` uses, and a background server for tests.

uvicorn's HTTP/1.1 protocols (h11 and httptools) arm no timer until a first response is complete and
cancel the keep-alive timer on any byte received, so a client that connects and sends nothing, or
part of its headers, holds the socket forever. :class:`HeaderDeadlineH11` adds that deadline, and
:func:`uvicorn_options` always selects it (also where httptools is installed); the ``/act`` body has its
own (``ServeSettings.body_timeout_s``, in the app). uvicorn's ``limit_concurrency`` is not used: it
neither closes nor refuses connections, it answers 503 once that many are open, stalled ones included.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from vla.serve.app import ServeSettings


class HeaderDeadlineH11(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose next request's headers take over ``header_timeout_s``.

    The clock starts when the connection opens or a response completes and is not reset by incoming
    bytes, so trickling a header byte at a time does not extend it. It stops once a request's headers are
    in; from then the app's own limits apply. Not covered: a client that never reads its response.
    """

    header_timeout_s: float = ServeSettings.header_timeout_s
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch_headers()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_headers()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def _watch_headers(self) -> None:
        """Arm the deadline while no request is in progress; drop it once one is."""
        waiting = self.cycle is None or self.cycle.response_complete
        if not waiting or self.transport.is_closing():
            self._cancel_deadline()
        elif self._deadline is None:
            self._deadline = self.loop.call_later(self.header_timeout_s, self._on_deadline)

    def _on_deadline(self) -> None:
        self._deadline = None
        peer = "%s:%d - " % self.client if self.client else ""
        self.logger.info("%sClosing the connection: no complete request headers within %s s", peer, self.header_timeout_s)
        self.transport.close()

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None


def uvicorn_options(app: FastAPI) -> dict[str, Any]:
    """``uvicorn.run`` / ``uvicorn.Config`` keywords for an app from :func:`vla.serve.app.create_app`: its timeouts."""
    settings: ServeSettings = app.state.settings
    protocol = type("HeaderDeadlineH11", (HeaderDeadlineH11,), {"header_timeout_s": settings.header_timeout_s})
    return {"http": protocol, "timeout_keep_alive": settings.keep_alive_s}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the OS reports free right now (for loopback test servers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class BackgroundServer:
    """``with BackgroundServer(app) as server: requests.post(server.url + "/act", ...)``."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int | None = None, startup_timeout_s: float = 30.0):
        self.host = host
        self.port = port or free_port(host)
        self.startup_timeout_s = startup_timeout_s
        config = uvicorn.Config(app, host=host, port=self.port, log_level="warning", **uvicorn_options(app))
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="vla-uvicorn", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> "BackgroundServer":
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=self.startup_timeout_s)
