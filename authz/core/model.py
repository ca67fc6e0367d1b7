"""Plain data the core works on: no protobuf, no aiohttp."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

Claims = Mapping[str, Any]


def hostname(host: str) -> str:
    """``host`` (``name[:port]`` or ``[v6][:port]``) without its port or a trailing dot,
    lower-cased: the name host rules compare, as nginx's ``$host`` holds it."""
    host = host.lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return host[:-1] if host.endswith(".") else host


@dataclass(frozen=True, slots=True)
class RequestAttributes:
    """The parts of an HTTP request a check looks at.

    ``path`` is the request target as Envoy saw it, query string included.
    ``headers`` keys are lower-case; repeated headers arrive joined by Envoy.
    """

    method: str
    host: str
    path: str
    headers: Mapping[str, str]
    context: Mapping[str, str] = field(default_factory=dict)  # Envoy's context_extensions
    header_count: int = 0  # header lines as sent, before repeated names were joined
    # What the proxy can do with the answer: remove query parameters (Envoy over gRPC only),
    # rewrite the Cookie header (Envoy). A token it cannot remove makes an allow impossible.
    query_removable: bool = True
    cookie_rewritable: bool = True
    size: int = 0  # bytes of the request as the proxy sent it; 0: not measured
    # The scheme the client used, as the proxy knows it (Envoy's; Traefik's forwarded
    # one); "": unknown (nginx and Envoy over HTTP do not say it in a trusted way).
    scheme: str = ""
    # The method as sent, when ``method`` is an override being judged (judge_both).
    sent_method: str = ""
    # SHA-256 of the client's TLS certificate (DER), as the proxy passed it on; b"": none.
    client_certificate_sha256: bytes = b""
    # W3C trace context the proxy sent beside the request (gRPC metadata, from Envoy's
    # tracer), read only when tracing is on; "": none. The request's own traceparent
    # header, if any, is in ``headers``.
    trace_parent: str = ""
    trace_state: str = ""

    @property
    def query(self) -> str:
        _, _, query = self.path.partition("?")
        return query.split("#", 1)[0]

    @property
    def hostname(self) -> str:
        """The host without its port or a trailing dot, lower-cased."""
        return hostname(self.host)

    @property
    def query_params(self) -> dict[str, str]:
        """Decoded query parameters that appear exactly once.

        A repeated name is left out: frameworks disagree on which value wins (Django, PHP
        and Rails take the last), so no single value can be trusted for it.
        """
        params: dict[str, str] = {}
        repeated: set[str] = set()
        for _, name, value in query_pairs(self.query):
            if name in params:
                repeated.add(name)
            params[name] = value
        for name in repeated:
            del params[name]
        return params


def query_pairs(query: str) -> list[tuple[str, str, str]]:
    """(raw name, decoded name, decoded value) for each parameter of a query string."""
    pairs = []
    for part in query.split("&"):
        if part:
            raw, _, value = part.partition("=")
            pairs.append((raw, unquote_plus(raw), unquote_plus(value)))
    return pairs


@dataclass(frozen=True, slots=True)
class Identity:
    """A verified token: which provider vouched for it, and its claims."""

    provider: str
    claims: Claims
    raw_payload: str  # the token's base64url payload segment, exactly as signed
    tenant: str | None = None  # a multi-tenant provider's tenant, from the issuer
    # The identity headers rendered for it, and for which provider settings: an Identity
    # the token cache keeps is rendered once, and the memo goes when the Identity does.
    rendered: list[Any] = field(default_factory=list, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one check; the adapters turn it into a proto or HTTP reply.

    For an allow, ``upstream_headers`` are set on the request (overwriting what the
    client sent), ``remove_headers`` and ``remove_query_params`` are stripped from it;
    ``unset_identity_headers`` are the identity headers among ``remove_headers`` (those
    authz may set and this answer does not), for proxies that can only overwrite.
    For a deny, ``status``, ``response_headers`` and ``body`` form the local reply.
    """

    allowed: bool
    status: int
    reason: str
    rule: str | None = None
    provider: str | None = None
    upstream_headers: tuple[tuple[str, str], ...] = ()
    remove_headers: tuple[str, ...] = ()
    unset_identity_headers: tuple[str, ...] = ()
    remove_query_params: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    response_headers: tuple[tuple[str, str], ...] = ()
    body: str = ""
    dry_run: tuple[str, str] | None = None  # in dry-run mode: (would-be decision, reason)
