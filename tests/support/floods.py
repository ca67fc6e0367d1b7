"""Floods of raw TCP connections, and whether the server closed them: for tests (and the
soak) of listeners that must shed idle and slow clients."""

from __future__ import annotations

import selectors
import socket
import time


def open_connections(port: int, count: int, timeout_s: float = 10.0) -> list[socket.socket]:
    """``count`` TCP connections to ``port`` that send nothing; those the server accepted
    or queued (a connection it closes at once still counts: it was opened)."""
    pending = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        pending.append(sock)
    connected = []
    with selectors.DefaultSelector() as selector:
        for sock in pending:
            selector.register(sock, selectors.EVENT_WRITE)
        deadline = time.monotonic() + timeout_s
        while len(selector.get_map()) and time.monotonic() < deadline:
            for key, _ in selector.select(0.2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                selector.unregister(sock)
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    connected.append(sock)
                else:
                    sock.close()
    for sock in pending:
        if sock not in connected:
            sock.close()
    return connected


def still_open(sockets: list[socket.socket]) -> int:
    """How many of ``sockets`` the server has not closed (EOF or reset seen: closed)."""
    count = 0
    for sock in sockets:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            count += 1
            continue
        except OSError:
            continue
        if data:  # a gRPC server's SETTINGS, say: read on until EOF
            count += still_open([sock])
    return count
