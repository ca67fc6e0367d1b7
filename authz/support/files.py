"""Noticing that a file changed, by polling its inode, size and mtime.

Following symlinks, so the atomic ``..data`` swap Kubernetes does for mounted secrets and
config maps shows as a new inode.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

log = logging.getLogger(__name__)

Signature = tuple[int, int, int]


def read_regular_file(path: str | Path, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; OSError otherwise (a device
    such as /dev/zero or a FIFO would never end or never answer)."""
    # Checked before opening (opening a FIFO waits for a writer) and after (a swap between).
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise OSError(0, "not a regular file")
    with open(path, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise OSError(0, "not a regular file")
        data = file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise OSError(0, f"larger than {max_bytes} bytes")
    return data


def file_signature(path: str | Path) -> Signature | None:
    """(inode, mtime in ns, size), or None when the file cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


async def watch_file(
    path: str | Path,
    interval_s: float,
    on_change: Callable[[], Awaitable[object]],
    seen: Signature | None,
    *,
    what: str,
    missing_is_change: bool = False,
) -> None:
    """Call ``on_change`` whenever the file's signature differs from the last one seen;
    runs until cancelled. A file that vanished counts as a change only with
    ``missing_is_change``. ``on_change`` may fail: the failure is logged and watching goes
    on (``what`` names the file in the log)."""
    while True:
        await asyncio.sleep(interval_s)
        signature = file_signature(path)
        if signature == seen or (signature is None and not missing_is_change):
            continue
        seen = signature
        try:
            await on_change()
        except Exception:  # a bug must not end watching for good
            log.exception("reloading %s after a change failed", what)
