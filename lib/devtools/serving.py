"""Run a WSGI app on 127.0.0.1 in a daemon thread: the one way every local server is served.

waitress keeps HTTP/1.1 connections alive (as Upstash and Vercel do; werkzeug's dev server
closes every connection, which more than doubled the cost of a Redis round trip) and writes
each chunk of a streamed response as it is produced (SSE).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from waitress.server import create_server


@dataclass
class BackgroundServer:
    server: Any  # a waitress server
    thread: threading.Thread
    stopping: threading.Event

    @property
    def port(self) -> int:
        return int(self.server.effective_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.stopping.set()
        self.server.close()


def _serve(server: Any, stopping: threading.Event) -> None:
    """Closing the listening socket from `stop` can break the loop's select() in this thread
    (EBADF): that is how it ends, not an error."""
    try:
        server.run()
    except (OSError, ValueError):
        if not stopping.is_set():
            raise


def serve_in_background(app: Callable, port: int = 0, threads: int = 16) -> BackgroundServer:
    """Bind 127.0.0.1 only (port 0 = any free port); `threads` requests are served at once."""
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "queue depth" under load tests
    server = create_server(app, host="127.0.0.1", port=port, threads=threads,
                           channel_timeout=600, ident="local")
    stopping = threading.Event()
    thread = threading.Thread(target=_serve, args=(server, stopping),
                              name=f"serve:{server.effective_port}", daemon=True)
    thread.start()
    return BackgroundServer(server, thread, stopping)
