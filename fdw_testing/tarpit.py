"""A "tarpit" remote for tests: a TCP socket on 127.0.0.1 that accepts connections and never answers.

It behaves like a dead backend behind a live load balancer: the TCP handshake succeeds, then
nothing ever comes back, so only the client's own time-outs can end the wait.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType


class Tarpit:
    """``with Tarpit() as pit:`` listens on ``pit.host``:``pit.port`` until the block ends."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind((host, 0))
        self._server.listen(64)
        self._server.settimeout(0.2)
        self.port: int = self._server.getsockname()[1]
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="tarpit", daemon=True)

    def __enter__(self) -> Tarpit:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self._held:
            conn.close()
        self._server.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            self._held.append(conn)  # read nothing, answer nothing, close nothing
