"""A small, bounded HTTP server for `GET /metrics`.

Shell, private to metrics.py. prometheus_client's `start_http_server` runs
one thread per connection with no timeout: 4,000 connections that never sent
a request made 4,006 threads and +100 MiB, and SIGTERM then took 21.8 s.
Here one thread serves every connection through a selector:

- at most `max_connections` are open; a new one beyond that closes the one
  idle longest (so a scraper still gets in past a crowd of silent sockets);
- a connection must send its request, and take its response, within
  `idle_timeout` seconds of its last progress, or it is closed;
- a request is at most `MAX_REQUEST` bytes; only GET and HEAD of `/metrics`
  (and `/`) are answered, one request per connection (`Connection: close`);
- with no connection open the thread blocks without a timeout (no idle
  wake-ups), and `close()` wakes it through a socket pair and joins it:
  stopping takes milliseconds whatever the load.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import time
from collections.abc import Callable

from kvgroomd.daemon._threads import worker

MAX_REQUEST = 8192  # bytes of request line and headers
ACCEPT_BURST = 256  # connections accepted per wake-up before serving others


class _Conn:
    __slots__ = ("inbox", "last", "outbox", "sock")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.inbox = b""
        self.outbox = b""
        self.last = now


class HttpServer:
    """Serves `render()` (the exposition text) at /metrics from one thread."""

    def __init__(self, host: str, port: int, render: Callable[[], bytes], content_type: str,
                 *, max_connections: int = 32, idle_timeout: float = 5.0) -> None:  # fmt: skip
        self.render = render
        self.content_type = content_type
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        family, kind, proto, _name, addr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        self.listener = socket.socket(family, kind, proto)
        try:
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind(addr)
            self.listener.listen(128)
            self.listener.setblocking(False)
        except OSError:
            self.listener.close()
            raise
        self.port: int = self.listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.listener, selectors.EVENT_READ)
        self._sel.register(self._wake_r, selectors.EVENT_READ)
        self._conns: dict[int, _Conn] = {}
        self._stop = False
        self._thread = worker(self._run, name="kvgroomd-metrics")

    def start(self) -> None:
        """Start serving in a thread of its own."""
        self._thread.start()

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._conns)

    def _run(self) -> None:
        while not self._stop:
            timeout = None
            if self._conns:
                oldest = min(c.last for c in self._conns.values())
                timeout = max(0.0, oldest + self.idle_timeout - time.monotonic())
            for key, mask in self._sel.select(timeout):
                if key.fileobj is self._wake_r:
                    return
                if key.fileobj is self.listener:
                    self._accept()
                elif (conn := self._conns.get(key.fd)) is not None:
                    if mask & selectors.EVENT_READ:
                        self._receive(conn)
                    elif mask & selectors.EVENT_WRITE:
                        self._send(conn)
            self._expire()

    def _accept(self) -> None:
        for _ in range(ACCEPT_BURST):
            try:
                sock, _addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # EMFILE and the like: shed the idlest, try again later
                self._drop_idlest()
                return
            if len(self._conns) >= self.max_connections:
                self._drop_idlest()
            sock.setblocking(False)
            conn = _Conn(sock, time.monotonic())
            self._conns[sock.fileno()] = conn
            self._sel.register(sock, selectors.EVENT_READ)

    def _receive(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn)
            return
        conn.inbox += data
        conn.last = time.monotonic()
        if b"\r\n\r\n" in conn.inbox or b"\n\n" in conn.inbox:
            conn.outbox = self._respond(conn.inbox)
            conn.inbox = b""
            self._sel.modify(conn.sock, selectors.EVENT_WRITE)
            self._send(conn)
        elif len(conn.inbox) > MAX_REQUEST:
            conn.outbox = _reply(431, "text/plain", b"request header fields too large\n")
            self._sel.modify(conn.sock, selectors.EVENT_WRITE)
            self._send(conn)

    def _respond(self, request: bytes) -> bytes:
        line = request.split(b"\n", 1)[0].decode("latin-1").split()
        if len(line) < 2 or line[0] not in ("GET", "HEAD"):
            return _reply(405, "text/plain", b"only GET /metrics\n")
        path = line[1].split("?", 1)[0]
        if path not in ("/metrics", "/"):
            return _reply(404, "text/plain", b"not found: try /metrics\n")
        body = self.render()
        return _reply(200, self.content_type, body, head=line[0] == "HEAD")

    def _send(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.outbox)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        conn.outbox = conn.outbox[sent:]
        conn.last = time.monotonic()
        if not conn.outbox:
            self._close(conn)

    def _expire(self) -> None:
        limit = time.monotonic() - self.idle_timeout
        for conn in [c for c in self._conns.values() if c.last <= limit]:
            self._close(conn)

    def _drop_idlest(self) -> None:
        if self._conns:
            self._close(min(self._conns.values(), key=lambda c: c.last))

    def _close(self, conn: _Conn) -> None:
        self._conns.pop(conn.sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(conn.sock)
        conn.sock.close()

    def close(self, timeout: float = 2.0) -> None:
        """Stop the thread and close every socket (idempotent)."""
        self._stop = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"!")
        if self._thread.ident is not None:
            self._thread.join(timeout)
        for conn in list(self._conns.values()):
            self._close(conn)
        for s in (self.listener, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                s.close()
        with contextlib.suppress(Exception):
            self._sel.close()


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed",
            431: "Request Header Fields Too Large"}  # fmt: skip


def _reply(status: int, content_type: str, body: bytes, *, head: bool = False) -> bytes:
    header = (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
              f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")  # fmt: skip
    return header.encode("latin-1") + (b"" if head else body)
