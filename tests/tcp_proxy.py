"""A TCP proxy on loopback that a test can cut and restore: the provider reaches PostgreSQL
through it, so "the database went away for a moment" is a real broken connection, not a mock.

`cut()` closes every open connection and refuses new ones (accepted, then closed at once, as a
server that went down); `restore()` lets new connections through again. `cut_before(marker)`
arms a cut that happens when the client next sends bytes containing `marker` (e.g. the
`COMMIT` of a transaction), before they are forwarded: the server never sees them.
"""

from __future__ import annotations

import select
import socket
import threading


class TcpProxy:
    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._down = False
        self._marker: bytes | None = None
        self._skip = 0
        self.cuts = 0  # how many cuts happened (armed ones included)
        self._stopping = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    # -- what the test does -----------------------------------------------------------------

    def cut(self) -> None:
        with self._lock:
            self._down = True
            self._marker = None
            self._close_all()
            self.cuts += 1

    def restore(self) -> None:
        with self._lock:
            self._down = False
            self._marker = None

    def cut_before(self, marker: bytes, skip: int = 0) -> None:
        """Cut when the client sends `marker` for the (skip+1)-th time from now, before it reaches the server."""
        with self._lock:
            self._marker, self._skip = marker, skip

    @property
    def armed(self) -> bool:
        return self._marker is not None

    def stop(self) -> None:
        self._stopping = True
        self.listener.close()
        with self._lock:
            self._close_all()

    # -- forwarding ---------------------------------------------------------------------------

    def _close_all(self) -> None:
        for sock in list(self._open):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self._open.clear()

    def _accept(self) -> None:
        while not self._stopping:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                if self._down:
                    client.close()
                    continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._open.update((client, server))
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        pair = {client: server, server: client}
        try:
            while True:
                readable, _, _ = select.select(list(pair), [], [], 1.0)
                if not readable and (client.fileno() < 0 or server.fileno() < 0):
                    return
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    if source is client and self._hits_marker(data):
                        self.cut()
                        return
                    pair[source].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                for sock in (client, server):
                    self._open.discard(sock)
                    sock.close()

    def _hits_marker(self, data: bytes) -> bool:
        with self._lock:
            if self._marker is None or self._marker not in data:
                return False
            if self._skip > 0:
                self._skip -= 1
                return False
            return True
