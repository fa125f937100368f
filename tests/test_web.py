"""colorlab.web: body limits whatever Content-Length says, JSON validation, the Host/Origin allow-list."""

import json
import socket

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from colorlab.web import AllowedHosts, json_error_handlers, local_hosts, read_body, read_json, start

LIMIT = 1000


async def echo_json(request):
    return JSONResponse({"keys": sorted(await read_json(request, LIMIT))})


async def echo_body(request):
    return JSONResponse({"bytes": len(await read_body(request, LIMIT, timeout=1.0))})


@pytest.fixture(scope="module")
def base():
    app = Starlette(routes=[Route("/json", echo_json, methods=["POST"]), Route("/body", echo_body, methods=["POST"])],
                    exception_handlers=json_error_handlers)
    server, url = start(AllowedHosts(app))
    yield url
    server.should_exit = True


def raw(base, request: bytes, timeout=10) -> tuple[int, dict | None]:
    """Send raw bytes, return (status, JSON body or None)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):  # every request says Connection: close: read to the end
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


def post(base, path, body: bytes, content_type="application/json", extra=b"", length=None, host=b"127.0.0.1"):
    length = str(len(body)).encode() if length is None else length
    return raw(base, b"POST " + path.encode() + b" HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n"
               + b"Content-Type: " + content_type.encode() + b"\r\nContent-Length: " + length + b"\r\n" + extra
               + b"\r\n" + body)


def test_json_bodies_are_validated(base):
    assert post(base, "/json", b'{"a": 1, "b": [2]}') == (200, {"keys": ["a", "b"]})
    for body, words in [(b"[1,2]", "must be a JSON object"), (b'"x"', "must be a JSON object"),
                        (b"null", "must be a JSON object"), (b"\xff\xfe{}", "not UTF-8"),
                        (b"{", "not valid JSON"), (b'{"a": NaN}', "not valid JSON"),
                        (b"[" * 500 + b"]" * 500, "nested 500 deep")]:
        status, reply = post(base, "/json", body)
        assert status == 400 and words in reply["error"], body[:20]
    status, reply = post(base, "/json", b"{}", content_type="text/plain")
    assert status == 415 and "application/json" in reply["error"]
    status, reply = post(base, "/json", b'{"a": "' + b"x" * 2000 + b'"}')
    assert status == 413 and "accepts up to" in reply["error"]


def test_body_limit_holds_whatever_content_length_says(base):
    assert post(base, "/body", b"x" * 10, "application/octet-stream") == (200, {"bytes": 10})
    for length in (b"abc", b"1.5", b"-5", b"100000000000000000000"):
        status, reply = post(base, "/body", b"x" * 10, "application/octet-stream", length=length)
        assert status in (400, 413), length  # h11 itself refuses some with a plain 400
    # chunked (no Content-Length): counted as it streams in
    chunks = b"".join(b"%x\r\n%s\r\n" % (300, b"y" * 300) for _ in range(5)) + b"0\r\n\r\n"
    status, reply = raw(base, b"POST /body HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
                        b"Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks)
    assert status == 413 and "accepts up to" in reply["error"]
    status, reply = post(base, "/body", b"x" * 5, "application/octet-stream", length=b"50")  # never completes
    assert status == 408 and "did not arrive" in reply["error"]


def test_host_and_origin_allow_list(base):
    body = b"{}"
    status, reply = raw(base, b"POST /json HTTP/1.1\r\nHost: evil.example:80\r\nConnection: close\r\n"
                        b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n" + body)
    assert status == 403 and "Host 'evil.example:80' is not served here" in reply["error"]
    for origin in (b"https://evil.example", b"null"):
        status, reply = post(base, "/json", body, extra=b"Origin: " + origin + b"\r\n")
        assert status == 403 and "are not accepted" in reply["error"], origin
    port = base.rsplit(":", 1)[1].encode()
    for host in (b"localhost:" + port, b"127.0.0.1:" + port):  # the page's own origin, either local name
        assert post(base, "/json", body, extra=b"Origin: http://localhost:" + port + b"\r\n", host=host) == \
            (200, {"keys": []})
    # another local server's page (another port) is another origin, as is a page of a different scheme's port
    for origin in (b"http://localhost:9999", b"http://localhost", b"https://localhost", b"ftp://localhost:" + port):
        status, reply = post(base, "/json", body, extra=b"Origin: " + origin + b"\r\n", host=b"localhost:" + port)
        assert status == 403 and "are not accepted" in reply["error"], origin
    # behind a reverse proxy for https that passes Host on without a port: the page is https on 443
    assert post(base, "/json", body, extra=b"Origin: https://localhost\r\n", host=b"localhost") == (200, {"keys": []})


def test_local_names_stay_allowed_when_others_are_added():
    assert local_hosts("study.example.org,192.0.2.7") == ("127.0.0.1", "localhost", "study.example.org",
                                                          "192.0.2.7")
    assert local_hosts([], "10.1.2.3") == ("127.0.0.1", "localhost", "10.1.2.3")
    assert local_hosts("", "0.0.0.0") == ("127.0.0.1", "localhost")
