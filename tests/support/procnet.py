"""Which process holds which end of a loopback TCP connection, read from /proc: for tests
of workers sharing a port, where the kernel picks the worker of each connection."""

from __future__ import annotations

import os
from pathlib import Path

_ESTABLISHED = "01"


def _socket_inodes(pid: int | str) -> set[str]:
    inodes = set()
    folder = Path(f"/proc/{pid}/fd")
    for fd in folder.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _connections() -> list[tuple[int, int, str]]:
    """(local port, remote port, inode) of every established TCP connection."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != _ESTABLISHED:
                continue
            local = int(fields[1].rsplit(":", 1)[1], 16)
            remote = int(fields[2].rsplit(":", 1)[1], 16)
            found.append((local, remote, fields[9]))
    return found


def my_ports_to(server_port: int) -> set[int]:
    """The local ports of this process's connections to ``server_port``."""
    mine = _socket_inodes("self")
    return {
        local for local, remote, inode in _connections() if remote == server_port and inode in mine
    }


def server_of(client_port: int, server_port: int, pids: set[int]) -> int | None:
    """Which of ``pids`` holds the server end of the connection from ``client_port``."""
    for pid in pids:
        try:
            inodes = _socket_inodes(pid)
        except OSError:
            continue  # gone
        for local, remote, inode in _connections():
            if local == server_port and remote == client_port and inode in inodes:
                return pid
    return None


def held_by(pid: int, server_port: int) -> int:
    """How many established connections to ``server_port`` the process ``pid`` holds."""
    inodes = _socket_inodes(pid)
    return sum(1 for local, _, inode in _connections() if local == server_port and inode in inodes)
