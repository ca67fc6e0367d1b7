"""Normalize a request path before rules see it, so that no spelling slips past a prefix.

Envoy normalizes too when deploy/envoy.yaml's settings are kept; this is the second
line of defence for a proxy that does not. Steps, in order:

1. the query string and fragment are cut off;
2. a path with an encoded slash or backslash (``%2F``, ``%5C``), a raw backslash, an
   encoded or raw NUL, or a control character is refused: upstreams disagree on what
   they mean, so no rule can be trusted to match them;
3. percent-encoded unreserved characters (letters, digits, ``-._~``) are decoded, and
   the hex digits of the remaining escapes are upper-cased (RFC 3986, 6.2.2);
4. path parameters (``;...`` at the end of a segment, as Tomcat, Jetty and Spring read
   them) are removed from every segment, so ``/public/..;/admin`` is ``/admin`` and
   ``/admin;x=1`` is ``/admin``; a ``;`` encoded as ``%3B`` stays as it is;
5. runs of slashes are merged;
6. ``.`` and ``..`` segments are removed (RFC 3986, 5.2.4); ``..`` never climbs above ``/``.

Case is kept (paths are case-sensitive unless a rule says ``ignore_case``), and so is a
trailing slash.
"""

from __future__ import annotations

import re

from authz.errors import InvalidPath

_REFUSED = re.compile(r"%2[fF]|%5[cC]|%00|\\|[\x00-\x1f\x7f]")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_SLASHES = re.compile(r"/{2,}")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _decode_unreserved(match: re.Match[str]) -> str:
    byte = int(match.group(1), 16)
    return chr(byte) if byte in _UNRESERVED else "%" + match.group(1).upper()


def normalize_path(target: str) -> str:
    path = target.split("?", 1)[0].split("#", 1)[0]
    if _REFUSED.search(path):
        raise InvalidPath("encoded slash, backslash, NUL or control character in the path")
    if not path.startswith("/"):
        raise InvalidPath("the path is not absolute")
    if "%" in path:
        path = _ESCAPE.sub(_decode_unreserved, path)
    if ";" in path:
        path = "/".join(segment.split(";", 1)[0] for segment in path.split("/"))
    if "//" in path:
        path = _SLASHES.sub("/", path)
    if "/." not in path:
        return path
    output: list[str] = []
    segments = path.split("/")[1:]
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == ".":
            if last:
                output.append("")
        elif segment == "..":
            if output:
                output.pop()
            if last:
                output.append("")
        else:
            output.append(segment)
    return "/" + "/".join(output)
