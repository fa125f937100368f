"""Small shared pieces for colorlab's Starlette servers (the interactive page, the human study).

- ``HTTPError(status, message)``: raise it in an endpoint; ``json_error_handlers`` turns it (and
  Starlette's own HTTPException) into ``{"error": message}`` with that status.
- ``read_body(request, limit, timeout)``: the body, at most ``limit`` bytes whatever Content-Length
  says (counted as it streams in: 413), a malformed Content-Length is 400, a body that does not
  arrive within ``timeout`` seconds is 408.
- ``read_json(request, limit)``: a JSON object from an ``application/json`` body: 415 for another
  content type, 413 over the limit, 400 for invalid UTF-8 or JSON, NaN/Infinity, nesting deeper
  than ``MAX_DEPTH`` or anything but an object.
- ``AllowedHosts(app, hosts)``: ASGI middleware answering 403 unless the Host header and any
  Origin header name one of ``hosts`` (default 127.0.0.1 and localhost): other sites' pages and
  DNS rebinding cannot drive the server.
- ``serve(app, host, port, ...)``: uvicorn bound to 127.0.0.1 by default, with a keep-alive timeout,
  a cap on concurrent connections (503 beyond it) and a cap on the size of a request head.
  ``start(app, ...)`` runs it in a thread and returns (server, base URL) for tests.
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

DEFAULT_HOSTS = ("127.0.0.1", "localhost")
MAX_DEPTH = 32  # JSON nesting accepted by read_json


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


class AllowedHosts:
    """ASGI middleware: 403 unless Host (and Origin, when sent) name an allowed host name."""

    def __init__(self, app, hosts: Iterable[str] = DEFAULT_HOSTS):
        self.app, self.hosts = app, frozenset(h.lower() for h in hosts)

    def _allowed(self, netloc: str) -> bool:
        try:
            return (urlsplit("//" + netloc).hostname or "") in self.hosts
        except ValueError:
            return False

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            host, origin = headers.get("host", ""), headers.get("origin")
            problem = None
            if not self._allowed(host):
                problem = f"Host {host!r} is not served here"
            elif origin is not None and not self._allowed(urlsplit(origin).netloc if "://" in origin else ""):
                problem = f"requests from the page at {origin!r} are not accepted"
            if problem:
                response = error_response(403, f"{problem}; allowed hosts: {', '.join(sorted(self.hosts))}")
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)


def _config(app, host: str, port: int, timeout_keep_alive: float, limit_concurrency: int,
            max_head_bytes: int) -> uvicorn.Config:
    return uvicorn.Config(app, host=host, port=port, timeout_keep_alive=timeout_keep_alive,
                          limit_concurrency=limit_concurrency, h11_max_incomplete_event_size=max_head_bytes,
                          http="h11", ws="none", lifespan="off", log_level="warning", access_log=False)


def serve(app, host: str = "127.0.0.1", port: int = 8765, timeout_keep_alive: float = 5.0,
          limit_concurrency: int = 64, max_head_bytes: int = 64 * 1024) -> None:
    """Run ``app`` under uvicorn until Ctrl-C: bound to ``host`` (127.0.0.1 unless told otherwise),
    idle keep-alive connections closed after ``timeout_keep_alive`` s, at most ``limit_concurrency``
    connections and requests at once (503 beyond), request heads at most ``max_head_bytes``."""
    uvicorn.Server(_config(app, host, port, timeout_keep_alive, limit_concurrency, max_head_bytes)).run()


def serve_workers(factory: str, workers: int, host: str = "127.0.0.1", port: int = 8765,
                  timeout_keep_alive: float = 5.0, limit_concurrency: int = 64,
                  max_head_bytes: int = 64 * 1024) -> None:
    """``serve`` with ``workers`` processes sharing the port: ``factory`` is "module:function" returning the
    app, called in each worker (what each needs must come from the environment or a shared database)."""
    config = _config(factory, host, port, timeout_keep_alive, limit_concurrency, max_head_bytes)
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
    defaults = {"timeout_keep_alive": 5.0, "limit_concurrency": 64, "max_head_bytes": 64 * 1024}
    server = uvicorn.Server(_config(app, host, sock.getsockname()[1], **{**defaults, **options}))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the server on {host}:{sock.getsockname()[1]} did not start")
        time.sleep(0.01)
    return server, f"http://{host}:{sock.getsockname()[1]}"
