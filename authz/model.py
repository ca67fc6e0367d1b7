"""Plain data the core works on: no protobuf, no aiohttp."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Claims = Mapping[str, Any]


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

    @property
    def path_only(self) -> str:
        return self.path.split("?", 1)[0]

    @property
    def query(self) -> str:
        _, _, query = self.path.partition("?")
        return query


@dataclass(frozen=True, slots=True)
class Identity:
    """A verified token: which provider vouched for it, and its claims."""

    provider: str
    claims: Claims
    raw_payload: str  # the token's base64url payload segment, exactly as signed


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one check; the adapters turn it into a proto or HTTP reply.

    For an allow, ``upstream_headers`` are set on the request (overwriting what the
    client sent), ``remove_headers`` and ``remove_query_params`` are stripped from it.
    For a deny, ``status``, ``response_headers`` and ``body`` form the local reply.
    """

    allowed: bool
    status: int
    reason: str
    rule: str | None = None
    provider: str | None = None
    upstream_headers: tuple[tuple[str, str], ...] = ()
    remove_headers: tuple[str, ...] = ()
    remove_query_params: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    response_headers: tuple[tuple[str, str], ...] = ()
    body: str = ""
