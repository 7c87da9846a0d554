"""Run a WSGI app on 127.0.0.1 in a daemon thread: the one way every stand-in is served."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server


class _QuietHandler(WSGIRequestHandler):
    """Stand-ins answer many requests; the access log would drown the dev server's own output."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


@dataclass
class BackgroundServer:
    server: BaseWSGIServer
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve_in_background(app: Callable, port: int = 0, quiet: bool = True) -> BackgroundServer:
    """Bind 127.0.0.1 only (port 0 = any free port) and serve with one thread per request."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server(
        "127.0.0.1", port, app, threaded=True, request_handler=_QuietHandler if quiet else None
    )
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name=f"serve:{port}", daemon=True)
    thread.start()
    return BackgroundServer(server, thread)
