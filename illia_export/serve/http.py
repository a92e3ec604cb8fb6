"""A small HTTP/1.1 server on asyncio and httptools, with the limits a public endpoint needs.

Why our own and not uvicorn/kserve: the server must bound what one client can hold, and the
stock stacks leave exactly those holes open (issue #22): a connection that never finishes
its headers, a body that arrives at 1 byte/s or never (Content-Length larger than the body),
idle sockets that pile up until valid clients cannot connect, and bodies read whole before
any size check. Here every phase of a connection has its own deadline and every resource a
bound (:class:`HttpLimits`). It is also the fast path (issue #20): one parse, no framework
routing or validation layers between the socket and the handler.

Phases of a connection, each with a deadline that closes it when missed:

* ``idle``: waiting for the first byte of a request (``idle_timeout``; also for a new
  connection);
* ``head``: the request line and headers (``header_timeout`` from the first byte; a
  408 is sent);
* ``body``: the whole body (``body_timeout`` from the end of the headers; a 408 is sent);
* ``busy``: the handler runs (no deadline: the application bounds its own work).

A body larger than ``max_body_bytes`` is refused with 413 as soon as its Content-Length is
read (or, for a chunked body, as soon as it grows past the limit), without reading the rest,
and the connection is closed. At ``max_connections`` open connections, a new one evicts the
connection that has waited longest without a complete request head (idle or trickling
headers); with none such, the new one gets a 503 and is closed. Requests are handled one at
a time per connection, in order (pipelined requests wait for their turn).
"""

from __future__ import annotations

import asyncio
import itertools
import resource
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from http import HTTPStatus

from illia_export.errors import require
from illia_export.serve.wire import Response, error_response

httptools = require("httptools", "serve", "illia-export serve")


@dataclass(frozen=True)
class HttpLimits:
    """Bounds of one server. Defaults suit a public endpoint on a small machine."""

    max_body_bytes: int = 64 * 2**20  #: largest request body (413 beyond)
    max_header_bytes: int = 64 * 2**10  #: request line + headers (431 beyond)
    idle_timeout: float = 5.0  #: seconds a connection may wait before a request starts
    header_timeout: float = 10.0  #: seconds from a request's first byte to the end of its headers
    body_timeout: float = 60.0  #: seconds from the end of the headers to the end of the body
    max_connections: int = 1000  #: open connections (idle ones are evicted beyond)


@dataclass
class Request:
    """One complete request."""

    method: str
    path: str
    headers: dict[str, str]  #: lower-case names
    body: bytes
    keep_alive: bool = True
    http_version: str = "1.1"
    peer: str = ""
    query: str = ""
    extra: dict = field(default_factory=dict)


#: Seconds a refused request's connection keeps dropping incoming bytes before it is closed.
LINGER_SECONDS = 2.0

#: A counter, not a clock: connections accepted in one loop iteration share a time stamp.
_WAIT_ORDER = itertools.count()

Handler = Callable[[Request], Awaitable[Response]]


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft open-file limit towards the hard one (at least `wanted` + headroom if
    allowed); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, wanted + 256)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


class _Connection(asyncio.Protocol):
    """One client connection (see the module docstring for its phases)."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.phase = "idle"
        self.waiting_since = 0  #: order in which connections last started waiting for a request head
        self.timer: asyncio.TimerHandle | None = None
        self.queue: deque[Request] = deque()
        self.task: asyncio.Task | None = None
        self.closed = False
        self._reset_request()

    # ------------------------------------------------------------- lifecycle
    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else ""
        if not self.server.admit(self):
            return
        self._wait_idle()

    def connection_lost(self, exc) -> None:
        self.closed = True
        self._cancel_timer()
        self.server.connections.discard(self)
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def data_received(self, data: bytes) -> None:
        if self.closed or self.phase == "draining":
            return  # draining: the answer is sent; what the client still sends is dropped
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(HTTPStatus.BAD_REQUEST, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            if not self.closed:
                self._fail(HTTPStatus.BAD_REQUEST, f"malformed HTTP request ({' '.join(str(exc).split())})")

    def eof_received(self):
        return False  # close our side too

    # ------------------------------------------------------------- deadlines
    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _deadline(self, seconds: float, what: str) -> None:
        self._cancel_timer()
        self.timer = self.loop.call_later(seconds, self._timed_out, what)

    def _wait_idle(self) -> None:
        self.phase = "idle"
        self.waiting_since = next(_WAIT_ORDER)
        self._deadline(self.server.limits.idle_timeout, "")

    def _timed_out(self, what: str) -> None:
        self.timer = None
        if self.closed:
            return
        if not what or self.phase == "draining":  # idle: nothing was asked, nothing to answer
            self.close()
        else:
            self._fail(HTTPStatus.REQUEST_TIMEOUT, f"{what}; the connection is closed")

    # ------------------------------------------------------ parser callbacks
    def _reset_request(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}
        self.header_bytes = 0
        self.body: list[bytes] = []
        self.body_size = 0
        self.last_name = b""
        self.refused = False

    def on_message_begin(self) -> None:
        self._reset_request()
        self.phase = "head"
        self._deadline(self.server.limits.header_timeout,
                       f"request headers not complete within {self.server.limits.header_timeout:g} s")

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._count_header(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header(len(name) + len(value))
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def _count_header(self, n: int) -> None:
        self.header_bytes += n
        if self.header_bytes > self.server.limits.max_header_bytes and not self.refused:
            self._fail(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                       f"request line and headers exceed {self.server.limits.max_header_bytes} bytes")

    def on_headers_complete(self) -> None:
        if self.closed:
            return
        limit = self.server.limits.max_body_bytes
        length = self.headers.get("content-length")
        if length is not None:
            declared = int(length) if length.strip().isdigit() and len(length) < 20 else None
            if declared is None:
                return self._fail(HTTPStatus.BAD_REQUEST, f"invalid Content-Length {length[:40]!r}")
            if declared > limit:
                return self._fail(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                  f"request body of {declared} bytes exceeds the limit of {limit} bytes (--max-body-mb)")
        self.phase = "body"
        self._deadline(self.server.limits.body_timeout,
                       f"request body not complete within {self.server.limits.body_timeout:g} s")
        if self.headers.get("expect", "").lower() == "100-continue" and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, chunk: bytes) -> None:
        if self.closed:
            return
        self.body_size += len(chunk)
        if self.body_size > self.server.limits.max_body_bytes:
            self._fail(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                       f"request body exceeds the limit of {self.server.limits.max_body_bytes} bytes (--max-body-mb)")
            return
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        if self.closed:
            return
        self._cancel_timer()
        path, _, query = self.url.decode("latin-1").partition("?")
        request = Request(
            method=self.parser.get_method().decode("latin-1"),
            path=path,
            headers=self.headers,
            body=b"".join(self.body),
            keep_alive=bool(self.parser.should_keep_alive()),
            http_version=self.parser.get_http_version(),
            peer=self.peer,
            query=query,
        )
        self.phase = "busy"
        self.queue.append(request)
        self._reset_request()
        if self.transport is not None:
            self.transport.pause_reading()  # one request at a time
        if self.task is None or self.task.done():
            self.task = self.loop.create_task(self._drain())

    # ---------------------------------------------------------------- handling
    async def _drain(self) -> None:
        while self.queue and not self.closed:
            request = self.queue.popleft()
            self.server.in_flight += 1
            try:
                try:
                    response = await self.server.handler(request)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - a handler bug answers 500, never a hang
                    response = error_response(HTTPStatus.INTERNAL_SERVER_ERROR,
                                              f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())}")
                keep = request.keep_alive and not self.server.stopping
                # Log before sending: a client that has its answer can already find the line.
                if self.server.log is not None:
                    self.server.log(request, response)
                self._send(response, keep, request.method == "HEAD")
            finally:
                self.server.in_flight -= 1
                self.server.request_done()
            if not keep:
                self.close()
                return
        if not self.closed and self.transport is not None:
            self._wait_idle()
            self.transport.resume_reading()

    def _send(self, response: Response, keep_alive: bool, head_only: bool = False) -> None:
        if self.transport is None or self.closed or self.phase == "draining":
            return
        status = HTTPStatus(response.status)
        lines = [
            f"HTTP/1.1 {status.value} {status.phrase}",
            f"content-type: {response.content_type}",
            f"content-length: {len(response.body)}",
            "connection: keep-alive" if keep_alive else "connection: close",
        ]
        lines.extend(f"{k}: {v}" for k, v in response.headers.items())
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.transport.write(head if head_only else head + response.body)

    def _fail(self, status: HTTPStatus, message: str) -> None:
        """Answer a request that cannot be read (timeout, too large, malformed) and close."""
        if self.closed:
            return
        self.refused = True
        response = error_response(status, message)
        if self.server.log is not None:
            self.server.log(Request("-", self.url.decode("latin-1") or "-", self.headers, b"", peer=self.peer), response)
        self._send(response, keep_alive=False)
        # Lingering close: closing with unread bytes in the socket would reset the connection
        # and the client could lose the answer; so stop writing, drop what still arrives
        # (never buffered) for a short while, then close.
        self.phase = "draining"
        self.server.connections.discard(self)
        transport = self.transport
        if transport is None or not transport.can_write_eof():
            return self.close()
        try:
            transport.write_eof()
            transport.resume_reading()
        except (OSError, RuntimeError):
            return self.close()
        self._deadline(LINGER_SECONDS, "")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._cancel_timer()
        self.server.connections.discard(self)
        if self.transport is not None:
            self.transport.close()


class HttpServer:
    """Serves `handler` on (host, port) within `limits`.

    Args:
        handler: ``async handler(Request) -> Response``; an exception becomes a 500.
        log: called with (request, response) after each answer, or None.
    """

    def __init__(self, handler: Handler, limits: HttpLimits | None = None,
                 log: Callable[[Request, Response], None] | None = None) -> None:
        self.handler = handler
        self.limits = limits or HttpLimits()
        self.log = log
        self.connections: set[_Connection] = set()
        self.in_flight = 0
        self.stopping = False
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._server: asyncio.base_events.Server | None = None
        self._idle = asyncio.Event()

    async def start(self, host: str, port: int) -> None:
        self.loop = asyncio.get_running_loop()
        soft = raise_fd_limit(self.limits.max_connections + 64)
        if soft != resource.RLIM_INFINITY and self.limits.max_connections > soft - 64:
            # Past the open-file limit accept() fails and valid clients wait: keep the cap (and
            # its eviction of idle connections) below it, with room for the process's own files.
            self.limits = replace(self.limits, max_connections=max(1, int(soft) - 64))
        self._server = await self.loop.create_server(
            lambda: _Connection(self), host, port, backlog=min(4096, self.limits.max_connections + 128),
            reuse_address=True,
        )

    def admit(self, conn: _Connection) -> bool:
        """Keep `conn` within max_connections: evict the longest-waiting connection without a
        complete request head, else refuse `conn` with a 503."""
        if len(self.connections) >= self.limits.max_connections:
            waiting = [c for c in self.connections if c.phase in ("idle", "head") and not c.queue]
            if waiting:
                min(waiting, key=lambda c: c.waiting_since).close()
            else:
                conn._send(error_response(HTTPStatus.SERVICE_UNAVAILABLE,
                                          f"the server holds its limit of {self.limits.max_connections} connections, "
                                          "all busy; retry later"), keep_alive=False)
                conn.close()
                return False
        self.connections.add(conn)
        return True

    def request_done(self) -> None:
        if self.stopping and self.in_flight == 0:
            self._idle.set()

    async def shutdown(self, grace: float) -> None:
        """Stop accepting, close connections waiting for a request, let the requests that
        have started (head or body arriving, or being handled) finish within `grace` seconds,
        then close everything."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
        deadline = self.loop.time() + grace
        while self.loop.time() < deadline:
            for conn in list(self.connections):
                if conn.phase == "idle" and not conn.queue:
                    conn.close()
            if not self.connections:
                break
            self._idle.clear()
            try:
                await asyncio.wait_for(self._idle.wait(), 0.05)
            except asyncio.TimeoutError:
                pass
        for conn in list(self.connections):
            conn.close()
        if self._server is not None:
            await self._server.wait_closed()
