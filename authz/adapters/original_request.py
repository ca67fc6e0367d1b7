"""What the client asked for, read from an HTTP check request the way the configured proxy
tells it (``http_authz.original_request``):

- ``envoy``: the check request is the client's (Envoy's http_service), its path behind
  ``path_prefix``;
- ``nginx``: ``X-Original-Method`` and ``X-Original-URI`` (nginx's raw ``$request_uri``),
  the host from ``Host`` (nginx's ``$host``);
- ``ingress-nginx``: ``X-Original-Method`` and ``X-Original-URL``, the whole URL
  (``$scheme://$http_host$request_uri``) the Kubernetes ingress-nginx controller's
  template always sets; the host is the URL's, since ``Host`` names authz itself there.
  The URL's host is the client's Host header, while nginx routes by ``$host`` (the
  request line's host for an absolute-form target) and sends the upstream
  ``$best_http_host`` (the client's X-Forwarded-Host with ``use-forwarded-headers``):
  ``X-Authz-Host`` and ``X-Authz-Upstream-Host``, which the recipe's
  ``auth-proxy-set-headers`` ConfigMap sets to those two, must name the same host;
- ``traefik`` and ``caddy``: ``X-Forwarded-Method``, ``X-Forwarded-Uri`` and
  ``X-Forwarded-Host``, as Traefik's forwardAuth and Caddy's forward_auth send them (the
  two differ in what they do with the answer, http_authz.py).

Only the configured style's headers are trusted: a client cannot pick another style by
sending other headers. A missing, empty, repeated or malformed one is
MissingOriginalRequest, the host included: an HTTP/1.0 client may send none, and then no
host rule can judge the request; the check request's own Host names authz, never the
client's. The path and host themselves are judged by the core like any other request's.
"""

from __future__ import annotations

import re
from typing import Literal

from aiohttp import web

from authz.adapters.certificates import Source, forwarded_certificate_sha256
from authz.core.errors import InvalidHost, MissingOriginalRequest
from authz.core.model import RequestAttributes, hostname
from authz.core.paths import check_host

Style = Literal["envoy", "nginx", "ingress-nginx", "traefik", "caddy"]
# ingress-nginx: $host (the host nginx routes by) and $best_http_host (the Host the
# upstream gets), set by the recipe's auth-proxy-set-headers ConfigMap.
INGRESS_NGINX_HOSTS = ("X-Authz-Host", "X-Authz-Upstream-Host")
_FORWARDED_NEEDS = ("X-Forwarded-Method", "X-Forwarded-Uri", "X-Forwarded-Host")
_FORWARDED_CARRY = (
    "x-forwarded-method",
    "x-forwarded-uri",
    "x-forwarded-host",
    "x-forwarded-proto",
)
# The headers naming the original request: (method, target, then any other), as the
# description says them. Each must come exactly once, not empty.
NEEDS: dict[Style, tuple[str, ...]] = {
    "nginx": ("X-Original-Method", "X-Original-URI", "Host"),
    "ingress-nginx": ("X-Original-Method", "X-Original-URL", *INGRESS_NGINX_HOSTS),
    # Traefik and Caddy send the same headers; what differs is what they do with the answer.
    "traefik": _FORWARDED_NEEDS,
    "caddy": _FORWARDED_NEEDS,
}
# The headers carrying the client's own Host: empty only when the client sent none.
_CLIENT_HOSTS = frozenset({"Host", "X-Forwarded-Host"})
# Headers that only carry the original request for a proxy; never treated as the client's.
FORWARDING: dict[Style, tuple[str, ...]] = {
    "envoy": (),
    "nginx": ("x-original-uri", "x-original-method"),
    # X-Sent-From and X-Auth-Request-Redirect ($request_uri) come with every ingress-nginx
    # check; X-Original-URI only with its auth-method annotation, a client's otherwise.
    "ingress-nginx": (
        "x-original-url",
        "x-original-method",
        "x-authz-host",
        "x-authz-upstream-host",
        "x-sent-from",
        "x-auth-request-redirect",
    ),
    "traefik": _FORWARDED_CARRY,
    "caddy": _FORWARDED_CARRY,
}
# scheme "://" authority, then the request target as the client sent it (path and query).
_ABSOLUTE_URL = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#]*)(?P<target>.*)", re.S
)


def needs(style: Style) -> str:
    """The headers ``style`` reads, for a description: "X-Original-URI, ... and Host"."""
    method, target, *more = NEEDS[style]
    names = [target, method, *more]
    return f"{', '.join(names[:-1])} and {names[-1]}"


def _missing(style: Style, why: str, headers: dict[str, str]) -> MissingOriginalRequest:
    """The refusal; its detail, for operators, says what was wrong and names any other
    style's header that came instead (a proxy configured as another style). Names only."""
    wanted = NEEDS[style][1]
    others = [n[1] for n in NEEDS.values() if n[1] != wanted and n[1].lower() in headers]
    others = list(dict.fromkeys(others))  # traefik and caddy share their headers
    hint = f" ({' and '.join(others)} came instead)" if others else ""
    return MissingOriginalRequest(f"{why}{hint}", needs=needs(style))


def to_attributes(
    request: web.BaseRequest, style: Style, path_prefix: str, certificates: Source = "none"
) -> RequestAttributes:
    # Repeated headers are joined, as Envoy does for gRPC, and counted as sent: a second
    # copy must never silently replace the first.
    joined: dict[str, list[str]] = {}
    for key, value in request.headers.items():
        joined.setdefault(key.lower(), []).append(value)
    headers = {key: ",".join(values) for key, values in joined.items()}
    count = len(request.headers)
    certificate = forwarded_certificate_sha256(certificates, headers)
    if style == "envoy":
        # Envoy sends the original method and headers, and the original path behind its
        # http_service path_prefix.
        path = request.raw_path
        if path_prefix and path.startswith(path_prefix):
            path = path[len(path_prefix) :] or "/"
        hosts = joined.get("host", [])
        if len(hosts) != 1 or not hosts[0]:
            # Never aiohttp's stand-in for a missing Host (authz's own address).
            raise InvalidHost("the check names no one host")
        return RequestAttributes(
            request.method,
            hosts[0],
            path,
            headers,
            header_count=count,
            query_removable=False,
            # allowed_upstream_headers lets authz's cookie header replace the client's; a
            # Cookie header that is not UTF-8 cannot be written back as it came.
            cookie_rewritable=_utf8(headers.get("cookie", "")),
            client_certificate_sha256=certificate,
        )
    method_header, target_header, *_ = NEEDS[style]
    for name in NEEDS[style]:
        sent = len(joined.get(name.lower(), ()))
        if sent == 0 or not headers[name.lower()]:
            if name in _CLIENT_HOSTS:
                # The proxy sends it whenever the client named a host: an HTTP/1.0
                # client that sent none, not a proxy to warn about.
                raise InvalidHost(f"no host: {name} is empty")
            raise _missing(style, f"no {name}", headers)
        if sent > 1:
            raise _missing(style, f"{name} sent {sent} times", headers)
    method = headers[method_header.lower()]
    original_path = headers[target_header.lower()]
    if style == "nginx":
        host = headers["host"]
        scheme = ""  # nginx's recipe does not say it
    elif style == "ingress-nginx":
        scheme, host, original_path = split_original_url(original_path, headers)
        for name in INGRESS_NGINX_HOSTS:
            same_host(host, name, headers[name.lower()])
    else:
        host = headers["x-forwarded-host"]
        # Traefik and Caddy set X-Forwarded-Proto themselves (a client's copy is replaced
        # unless it comes from a hop they trust).
        scheme = headers.get("x-forwarded-proto", "").lower()
    for name in FORWARDING[style]:
        headers.pop(name, None)
    return RequestAttributes(
        method.upper(),
        host,
        original_path,
        headers,
        header_count=count,
        query_removable=False,
        cookie_rewritable=False,
        scheme=scheme,
        client_certificate_sha256=certificate,
    )


def split_original_url(url: str, headers: dict[str, str]) -> tuple[str, str, str]:
    """(scheme, host, path and query) of ingress-nginx's X-Original-URL.

    Only an absolute http or https URL is read; the authority is taken whole as the host
    (the core refuses anything but ``name[:port]``, so ``user@host`` never names
    ``host``), and the rest is the request target as the client sent it, judged like
    nginx's ``$request_uri``: nothing is decoded, resolved or cut here."""
    found = _ABSOLUTE_URL.fullmatch(url)
    if found is None or found["scheme"].lower() not in ("http", "https"):
        raise _missing("ingress-nginx", "X-Original-URL is not an absolute http(s) URL", headers)
    if not found["authority"]:
        # nginx's $http_host is empty when an HTTP/1.0 client sends no Host.
        raise InvalidHost("no host: X-Original-URL names none")
    return found["scheme"].lower(), found["authority"], found["target"]


def same_host(host: str, name: str, other: str) -> None:
    """InvalidHost unless header ``name``'s value ``other`` names the host of ``host``,
    X-Original-URL's: the same name once lower-cased, without port or trailing dot (as
    nginx keeps ``$host``). A request whose hosts differ is refused, not judged by one."""
    check_host(host)
    check_host(other)
    if hostname(other) != hostname(host):
        raise InvalidHost(f"{name} names another host than X-Original-URL")


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")  # aiohttp decodes other bytes to lone surrogates
    except UnicodeEncodeError:
        return False
    return True
