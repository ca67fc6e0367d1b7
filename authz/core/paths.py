"""Judge the path the upstream receives, and refuse every path that parsers could read apart.

authz never resolves, decodes or cuts a path into another one: a verdict holds only for the
request the upstream acts on, and upstreams disagree on what ``..;``, ``%2e``, ``;jsessionid``,
``%2F`` or ``//`` mean. So rules match the path as sent (query string cut off, the hex digits
of escapes upper-cased, which every decoder reads the same), and a path is refused with
``invalid_path`` when it holds:

- a dot-segment, raw or percent-encoded, with or without ``;`` parameters (``..``, ``.%2e``,
  ``..;x``): resolving it is the upstream's business, and Tomcat reads ``..;`` as ``..``;
- a ``;`` (unless ``semicolons`` is ``literal``): Tomcat, Jetty and Spring cut ``;x=1`` off a
  segment, so ``/admin;x=1`` would slip past a rule for ``/admin``;
- an encoded ``/`` or ``\\``, a raw ``\\``, an encoded ``?`` or ``#``, a raw ``#``;
- a raw or encoded control character (``%00``-``%1F``, ``%7F``), a raw space or non-ASCII byte;
- a percent-encoded unreserved character (``%61`` for ``a``): RFC 3986 says they are never
  encoded, and a router matching the undecoded path reads ``/%61dmin`` as another route;
- malformed escapes (``%zz``, a lone ``%``), escapes that are not UTF-8 (overlong ``%C0%AE``),
  and ``%25`` escapes that decode to any of the above on a second decoding (``%252e``);
- an empty segment (``//``): some upstreams merge slashes and some do not.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from authz.core.errors import InvalidHost, InvalidPath

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset("0123456789abcdefABCDEF")
# Raw characters no path may hold; "%" and ";" are judged below.
_RAW_REFUSED = re.compile(r"[\x00-\x20\x7f-\U0010ffff\\#]")
_ESCAPE = re.compile(r"%[0-9a-fA-F]{2}")
_PARAMS = re.compile(r";|%3B")
_HIGH_ESCAPE = re.compile(r"%[89a-fA-F][0-9a-fA-F]")


def _escaped_byte_refusal(byte: int, semicolons_literal: bool) -> str | None:
    """Why an escape of ``byte`` is refused, or None when it is plain data."""
    if byte in _UNRESERVED:
        return "a percent-encoded unreserved character"
    if byte < 0x20 or byte == 0x7F:
        return "an encoded control character"
    if byte in b"/\\":
        return "an encoded slash or backslash"
    if byte in b"?#":
        return "an encoded ? or #"
    if byte == ord(";") and not semicolons_literal:
        return "a semicolon"
    return None


def _check_escapes(path: str, semicolons_literal: bool) -> None:
    index = path.find("%")
    while index != -1:
        pair = path[index + 1 : index + 3]
        if len(pair) != 2 or not set(pair) <= _HEX:
            raise InvalidPath("malformed percent-encoding in the path")
        byte = int(pair, 16)
        if byte == 0x25:
            # %25 is a literal "%"; an upstream that decodes twice reads %252e as ".".
            inner = path[index + 3 : index + 5]
            if len(inner) == 2 and set(inner) <= _HEX:
                second = int(inner, 16)
                if second == 0x25:
                    raise InvalidPath("a multiply-encoded percent sign in the path")
                why = _escaped_byte_refusal(second, semicolons_literal)
                if why:
                    raise InvalidPath(f"{why}, encoded twice, in the path")
        else:
            why = _escaped_byte_refusal(byte, semicolons_literal)
            if why:
                raise InvalidPath(f"{why} in the path")
        index = path.find("%", index + 3)
    if _HIGH_ESCAPE.search(path):
        try:
            unquote_to_bytes(path).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidPath("percent-encoded bytes that are not UTF-8 in the path") from None


def _upper_hex(match: re.Match[str]) -> str:
    return match.group(0).upper()


def upper_hex(text: str) -> str:
    """``text`` with the hex digits of its escapes upper-cased (RFC 3986, 6.2.2.1)."""
    return _ESCAPE.sub(_upper_hex, text) if "%" in text else text


def check_path(target: str, *, semicolons_literal: bool = False) -> str:
    """The path rules match for the request target ``target``, or InvalidPath.

    The query string is cut off and escapes get upper-case hex digits; nothing else changes.
    """
    path, _, _ = target.partition("?")
    if not path.startswith("/"):
        raise InvalidPath("the path is not absolute")
    refused = _RAW_REFUSED.search(path)
    if refused is not None:
        char = refused.group(0)
        if char == "\\":
            raise InvalidPath("a backslash in the path")
        if char == "#":
            raise InvalidPath("a fragment in the request target")
        raise InvalidPath("a raw control, space or non-ASCII character in the path")
    if "//" in path:
        raise InvalidPath("an empty path segment (//)")
    if ";" in path and not semicolons_literal:
        raise InvalidPath("a semicolon in the path")
    if "%" in path:
        _check_escapes(path, semicolons_literal)
        path = upper_hex(path)
    if "/." in path:
        for segment in path.split("/"):
            # With semicolons literal, "..;x" and "..%3Bx" are still dot-segments to
            # upstreams that cut parameters (before or after decoding).
            if _PARAMS.split(segment, 1)[0] in (".", ".."):
                raise InvalidPath("a dot-segment in the path")
    return path


def check_rule_path(text: str, *, semicolons_literal: bool = False) -> str:
    """A rule's literal path, in the form requests are matched in; ValueError if no request
    that authz accepts could ever match it."""
    if "?" in text:
        # Requests are matched on their path alone, the query cut off.
        raise ValueError(
            "a '?' starts the query, and rules match the path without it: no request can "
            "match this (for a query parameter: a condition on request: query.NAME)"
        )
    try:
        return check_path(text, semicolons_literal=semicolons_literal)
    except InvalidPath as exc:
        raise ValueError(
            f"{exc.detail}: no accepted request can match it; write the path as clients "
            "send it, percent-encoded (e.g. /caf%C3%A9)"
        ) from None


# A registered name or IPv4 address, or a bracketed IPv6 address, and an optional port.
_HOST = re.compile(r"(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{0,5})?")


def check_host(host: str) -> None:
    """InvalidHost unless ``host`` is ``name[:port]`` or ``[v6][:port]``, the name not
    ending in a dot.

    Express reads ``admin.example.com:1:2`` as ``admin.example.com`` while a host rule
    would see none it knows; two Host values joined (``a,b``) name two hosts. A trailing
    dot names the same site to nginx (its $host drops it) but another to Caddy's and
    Envoy's routers (a catch-all site may serve it), while host rules would read it as
    the name without the dot. An empty host (none sent) is left to the proxy, which
    requires one for HTTP/1.1.
    """
    if host and _HOST.fullmatch(host) is None:
        raise InvalidHost("the host is not name[:port]")
    if host and not host.startswith("[") and host.rsplit(":", 1)[0].endswith("."):
        raise InvalidHost("the host name ends in a dot")
