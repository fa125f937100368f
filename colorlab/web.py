"""Small shared pieces for colorlab's Starlette servers (the interactive page, the human study).

- ``HTTPError(status, message)``: raise it in an endpoint; ``json_error_handlers`` turns it (and
  Starlette's own HTTPException) into ``{"error": message}`` with that status.
- ``read_body(request, limit, timeout)``: the body, at most ``limit`` bytes whatever Content-Length
  says (counted as it streams in: 413), a malformed Content-Length is 400, a body that does not
  arrive within ``timeout`` seconds is 408.
- ``read_json(request, limit)``: a JSON object from an ``application/json`` body: 415 for another
  content type, 413 over the limit, 400 for invalid UTF-8 or JSON, NaN/Infinity, nesting deeper
  than ``MAX_DEPTH`` or anything but an object.
- ``AllowedHosts(app, hosts)``: ASGI middleware answering 403 unless the Host header names one of
  ``hosts`` (``local_hosts`` adds the names given to 127.0.0.1 and localhost) and any Origin header
  is the same origin (scheme, host and port) as the Host: other sites' pages, other local servers
  and DNS rebinding cannot drive the server.
- ``serve(app, host, port, ...)``: uvicorn bound to 127.0.0.1 by default, hardened against slow and idle
  clients (uvicorn alone applies no timeout before a request head is complete, and counts idle
  connections against the same limit as requests, so a few hundred silent sockets lock everyone out):
  ``GuardedH11Protocol`` closes a connection whose request head is not complete ``head_timeout`` s after
  it opened or after its previous response, idle keep-alive connections go after ``timeout_keep_alive`` s,
  up to ``max_connections`` connections are held (each costs a few KB and at most ``max_head_bytes`` of
  buffered head; the open-files limit is raised to fit), and ``limit_concurrency`` caps the requests in
  progress (503 beyond; they are what buffer bodies). ``start(app, ...)`` runs it in a thread and
  returns (server, base URL) for tests.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterable
from urllib.parse import urlsplit

import uvicorn
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from uvicorn.protocols.http.h11_impl import H11Protocol

DEFAULT_HOSTS = ("127.0.0.1", "localhost")
MAX_DEPTH = 32  # JSON nesting accepted by read_json
DEFAULT_HEAD_TIMEOUT = 10.0  # seconds for a request head (a browser sends it at once)
DEFAULT_MAX_CONNECTIONS = 4096


class HTTPError(Exception):
    """An answer to the client: ``status`` and a message naming the problem and what is valid."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _http_error(request: Request, exc: HTTPError) -> JSONResponse:
    return error_response(exc.status, exc.message)


async def _starlette_error(request: Request, exc: HTTPException) -> JSONResponse:
    return error_response(exc.status_code, str(exc.detail))


json_error_handlers = {HTTPError: _http_error, HTTPException: _starlette_error}


def _mb(n: int) -> str:
    return f"{n / 2**20:.3g} MB"


async def read_body(request: Request, limit: int, timeout: float = 30.0) -> bytes:
    """The request body, refused (413) past ``limit`` bytes however the client declares its length."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isascii() or not declared.isdigit() or len(declared) > 18:
            raise HTTPError(400, f"Content-Length must be a non-negative whole number of bytes. Got {declared!r}")
        if int(declared) > limit:
            raise HTTPError(413, f"the request is {_mb(int(declared))}; this server accepts up to {_mb(limit)}")
    chunks, size = [], 0

    async def receive() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPError(413, f"the request is over {_mb(limit)}; this server accepts up to {_mb(limit)}")
            chunks.append(chunk)

    try:
        await asyncio.wait_for(receive(), timeout)
    except TimeoutError:
        raise HTTPError(408, f"the request body did not arrive within {timeout:g} s") from None
    return b"".join(chunks)


def _depth(text: str) -> int:
    """Deepest nesting of [ and { outside strings (checked before json.loads, which recurses)."""
    depth = deepest = 0
    in_string = escaped = False
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


def _no_constants(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


async def read_json(request: Request, limit: int, timeout: float = 30.0) -> dict:
    """A JSON object from the body (see the module docstring for the refusals)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise HTTPError(415, f"send the request as application/json. Got {content_type or 'no content type'!r}")
    body = await read_body(request, limit, timeout)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise HTTPError(400, f"the request body is not UTF-8 ({e.reason} at byte {e.start})") from None
    if (depth := _depth(text)) > MAX_DEPTH:
        raise HTTPError(400, f"the JSON is nested {depth} deep; at most {MAX_DEPTH} levels are accepted")
    try:
        value = json.loads(text, parse_constant=_no_constants)
    except ValueError as e:  # JSONDecodeError is a ValueError
        raise HTTPError(400, f"the request body is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise HTTPError(400, f"the request body must be a JSON object {{...}}. Got {type(value).__name__}")
    return value


def local_hosts(extra: Iterable[str] = (), listen: str = "127.0.0.1") -> tuple[str, ...]:
    """127.0.0.1 and localhost (the printed local link keeps working), the address listened on when it is a
    specific one, and the ``extra`` names participants will type (a comma-separated string or a list)."""
    names = extra.split(",") if isinstance(extra, str) else list(extra)
    specific = [] if listen in ("0.0.0.0", "::") else [listen]
    return tuple(dict.fromkeys(h.strip().lower() for h in [*DEFAULT_HOSTS, *specific, *names] if h.strip()))


DEFAULT_PORTS = {"http": 80, "https": 443}


class AllowedHosts:
    """ASGI middleware: 403 unless Host names an allowed host and Origin, when sent, is the same origin."""

    def __init__(self, app, hosts: Iterable[str] = DEFAULT_HOSTS):
        self.app, self.hosts = app, frozenset(h.lower() for h in hosts)

    @staticmethod
    def _host_port(netloc: str) -> tuple[str, int | None] | None:
        """(host name, port or None when not given) of ``netloc``; None when malformed."""
        try:
            parts = urlsplit("//" + netloc)
            return parts.hostname or "", parts.port
        except ValueError:
            return None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            host, origin = headers.get("host", ""), headers.get("origin")
            served, problem = self._host_port(host), None
            if served is None or served[0] not in self.hosts:
                problem = f"Host {host!r} is not served here"
            elif origin is not None:
                # a page from another port is another origin (another local server, say): the page must be one of
                # the allowed names on the port the request came to (a port left out being the default of the
                # page's scheme: a reverse proxy for https passes a Host without one)
                scheme, sep, netloc = origin.partition("://")
                page = self._host_port(netloc) if sep and scheme in DEFAULT_PORTS else None
                if page is None or page[0] not in self.hosts or \
                        (page[1] or DEFAULT_PORTS[scheme]) != (served[1] or DEFAULT_PORTS[scheme]):
                    problem = f"requests from the page at {origin!r} are not accepted"
            if problem:
                response = error_response(403, f"{problem}; allowed hosts: {', '.join(sorted(self.hosts))} "
                                          "(requests from their own pages only)")
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)


class RequestLimit:
    """ASGI middleware: at most ``limit`` requests in progress (503 beyond), whatever the connections held."""

    def __init__(self, app, limit: int):
        self.app, self.limit, self.active = app, limit, 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.active >= self.limit:
            response = error_response(503, f"the server is busy ({self.limit} requests in progress); try again")
            return await response(scope, receive, send)
        self.active += 1
        try:
            return await self.app(scope, receive, send)
        finally:
            self.active -= 1


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for every request head and a cap on connections.

    A connection must complete a request head within ``head_timeout`` s of opening, or of its previous
    response (uvicorn's keep-alive timer is cancelled by the first byte of the next head, so a head
    trickled in one byte at a time would otherwise hold the connection for ever). Beyond
    ``max_connections`` a new connection is answered 503 and closed."""

    def __init__(self, config, server_state, app_state, _loop=None):
        super().__init__(config, server_state, app_state, _loop)
        self.head_timeout = getattr(config, "head_timeout", DEFAULT_HEAD_TIMEOUT)
        self.max_connections = getattr(config, "max_connections", DEFAULT_MAX_CONNECTIONS)
        self.head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            transport.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            transport.close()
            return
        self._await_head()

    def connection_lost(self, exc) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and not self.cycle.response_complete:  # a head arrived: the app has it
            self._cancel_head_deadline()

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():
            self._await_head()  # before super(): it may start a pipelined request, which cancels this
        super().on_response_complete()

    def _await_head(self) -> None:
        self._cancel_head_deadline()
        self.head_deadline = self.loop.call_later(self.head_timeout, self._head_overdue)

    def _cancel_head_deadline(self) -> None:
        if self.head_deadline is not None:
            self.head_deadline.cancel()
            self.head_deadline = None

    def _head_overdue(self) -> None:
        self.head_deadline = None
        if not self.transport.is_closing():
            self.transport.close()


DEFAULTS = {"timeout_keep_alive": 5.0, "limit_concurrency": 64, "max_head_bytes": 16 * 1024,
            "head_timeout": DEFAULT_HEAD_TIMEOUT, "max_connections": DEFAULT_MAX_CONNECTIONS}


def raise_open_files_limit(needed: int) -> int:
    """Raise this process's soft limit on open files towards ``needed`` (within the hard limit); returns it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def _config(app, host: str, port: int, timeout_keep_alive: float, limit_concurrency: int, max_head_bytes: int,
            head_timeout: float, max_connections: int) -> uvicorn.Config:
    """uvicorn's config with GuardedH11Protocol; the open-files limit raised for max_connections (the cap is
    lowered to fit when the system does not allow that many)."""
    spare = 256  # files, database connections, the listening socket
    max_connections = max(16, min(max_connections, raise_open_files_limit(max_connections + spare) - spare))
    wrapped = app if isinstance(app, str) else RequestLimit(app, limit_concurrency)  # a factory wraps its own
    config = uvicorn.Config(wrapped, host=host, port=port, timeout_keep_alive=timeout_keep_alive,
                            h11_max_incomplete_event_size=max_head_bytes, http=GuardedH11Protocol, ws="none",
                            lifespan="off", log_level="warning", access_log=False)
    config.head_timeout, config.max_connections = head_timeout, max_connections
    return config


def serve(app, host: str = "127.0.0.1", port: int = 8765, **options) -> None:
    """Run ``app`` under uvicorn until Ctrl-C, bound to ``host`` (127.0.0.1 unless told otherwise); options
    (see DEFAULTS and the module docstring): timeout_keep_alive, limit_concurrency (requests in progress),
    max_head_bytes, head_timeout, max_connections."""
    uvicorn.Server(_config(app, host, port, **{**DEFAULTS, **options})).run()


def serve_workers(factory: str, workers: int, host: str = "127.0.0.1", port: int = 8765, **options) -> None:
    """``serve`` with ``workers`` processes sharing the port: ``factory`` is "module:function" returning the
    app, called in each worker (what each needs must come from the environment or a shared database; the
    app it returns applies its own RequestLimit)."""
    config = _config(factory, host, port, **{**DEFAULTS, **options})
    config.factory, config.workers = True, workers
    server = uvicorn.Server(config)
    if workers == 1:
        return server.run()
    from uvicorn.supervisors import Multiprocess

    sock = config.bind_socket()
    Multiprocess(config, sockets=[sock]).run()


def start(app, host: str = "127.0.0.1", port: int = 0, **options) -> tuple[uvicorn.Server, str]:
    """``serve`` in a daemon thread (port 0: any free port); returns (server, base URL) once it listens.
    Stop it with ``server.should_exit = True``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(_config(app, host, sock.getsockname()[1], **{**DEFAULTS, **options}))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the server on {host}:{sock.getsockname()[1]} did not start")
        time.sleep(0.01)
    return server, f"http://{host}:{sock.getsockname()[1]}"
