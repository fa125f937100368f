"""Idle and trickling clients for the servers' slow-client tests: 127.0.0.1 only, bounded in count and time.

``SlowClients(port, idle, trickling)`` opens ``idle`` connections that send nothing and ``trickling`` ones
that send a request head one byte per second (never finishing it); one thread drives them all, and stops
by itself after ``limit_s`` seconds or at ``close()``. ``closed_by_server()`` counts the connections the
server has closed (end of file or reset).
"""

from __future__ import annotations

import selectors
import socket
import threading
import time

HEAD = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow\r\nAccept: */*\r\nX-Padding: " + b"a" * 200


class SlowClients:
    def __init__(self, port: int, idle: int, trickling: int, limit_s: float = 60.0):
        self.sockets: list[socket.socket] = []
        self.sent = {}  # trickling socket -> bytes of HEAD sent
        self.closed: set[socket.socket] = set()
        self.stop = threading.Event()
        for i in range(idle + trickling):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.setblocking(False)
            self.sockets.append(sock)
            if i >= idle:
                self.sent[sock] = 0
        self.deadline = time.monotonic() + limit_s
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        for sock in self.sockets:
            selector.register(sock, selectors.EVENT_READ)
        next_byte = time.monotonic()
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            for key, _ in selector.select(timeout=0.2):
                try:
                    data = key.fileobj.recv(4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:  # the server closed it (a 503 or 408 before the close counts as closed too)
                    selector.unregister(key.fileobj)
                    self.closed.add(key.fileobj)
            if time.monotonic() >= next_byte:  # one more byte of the head on every trickling connection
                next_byte += 1.0
                for sock, sent in self.sent.items():
                    if sock not in self.closed and sent < len(HEAD):
                        try:
                            sock.send(HEAD[sent:sent + 1])
                            self.sent[sock] = sent + 1
                        except OSError:
                            pass
        selector.close()

    def closed_by_server(self) -> int:
        return len(self.closed)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        for sock in self.sockets:
            sock.close()

    def __enter__(self) -> SlowClients:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
