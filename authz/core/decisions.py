"""Decisions as answers, in one place for both adapters: allows (with the token stripped and
identity headers set or removed), denials (status, the RFC 6750 challenge, a small JSON
body), dry-run answers and the internal-error answer."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from authz.core.errors import (
    CheckError,
    ClaimMismatch,
    DpopError,
    DpopInvalid,
    DpopReplayed,
    DpopUseNonce,
    InternalError,
    MissingToken,
    Outcome,
)
from authz.core.model import Decision, RequestAttributes
from authz.core.tokens import StripPlan

DRY_RUN_HEADER = "x-authz-dry-run"
_REALM_UNSAFE = re.compile(r"[^A-Za-z0-9.:\[\]_-]")


def _realm(host: str) -> str:
    return _REALM_UNSAFE.sub("", host)[:255] or "authz"


def deny(
    error: CheckError, host: str, rule: str | None, provider: str | None, *, expose: bool
) -> Decision:
    """The deny Decision for ``error``: status, WWW-Authenticate and a small JSON body.

    ``expose`` (the operator's opt-in) adds the reason code, rule and failed condition to
    the body: config names only, never token or claim values.
    """
    realm = _realm(host)
    challenge: str | None
    extra: list[tuple[str, str]] = []
    if isinstance(error, DpopError):
        # RFC 9449 7.1: a DPoP challenge naming the proof algorithms
        proof = isinstance(error, DpopInvalid | DpopReplayed)
        code = "invalid_dpop_proof" if proof else "invalid_token"
        if isinstance(error, DpopUseNonce):
            code = "use_dpop_nonce"  # section 8: the nonce comes in DPoP-Nonce
            extra.append(("dpop-nonce", error.nonce))
        challenge = (
            f'DPoP algs="{error.algs}", error="{code}", error_description="{error.description}"'
        )
    elif isinstance(error, MissingToken):
        code, challenge = "unauthorized", f'Bearer realm="{realm}"'
    elif error.outcome is Outcome.UNAUTHENTICATED:
        code = "invalid_token"
        challenge = (
            f'Bearer realm="{realm}", error="invalid_token", '
            f'error_description="{error.description}"'
        )
    elif isinstance(error, ClaimMismatch) and error.scope:
        code = "insufficient_scope"
        challenge = (
            f'Bearer realm="{realm}", error="insufficient_scope", '
            f'error_description="{error.description}"'
        )
    elif error.outcome is Outcome.FORBIDDEN:
        code, challenge = "access_denied", None
    elif error.outcome in (
        Outcome.BAD_REQUEST,
        Outcome.CONTENT_TOO_LARGE,
        Outcome.HEADERS_TOO_LARGE,
    ):
        code, challenge = "invalid_request", None
    else:
        code, challenge = "temporarily_unavailable", None
    headers = [("content-type", "application/json"), ("cache-control", "no-store")]
    if challenge:
        headers.append(("www-authenticate", challenge))
    headers.extend(extra)
    body: dict[str, str] = {"error": code, "error_description": error.description}
    if expose:
        body["reason"] = error.reason
        if rule is not None:
            body["rule"] = rule
        if isinstance(error, ClaimMismatch) and error.condition:
            body["condition"] = error.condition
    return Decision(
        allowed=False,
        status=error.outcome.value,
        reason=error.reason,
        rule=rule,
        provider=provider,
        response_headers=tuple(headers),
        body=json.dumps(body),
    )


def internal_error() -> Decision:
    """The answer when something failed that never should: 503, no details."""
    return deny(InternalError(), "", None, None, expose=False)


def strip_tokens(
    request: RequestAttributes, plan: StripPlan, upstream: dict[str, str], remove: list[str]
) -> tuple[str, ...]:
    """Apply ``plan`` to an allow: every copy of a token that is not forwarded goes (headers
    into ``remove``, the Cookie header rewritten in ``upstream``); the query parameters to
    remove are returned."""
    remove.extend(plan.headers)
    if plan.cookies:
        cookie = plan.cookie_header(upstream.get("cookie", request.headers.get("cookie", "")))
        if cookie:
            upstream["cookie"] = cookie
        else:
            upstream.pop("cookie", None)
            remove.append("cookie")
    return plan.params


def allow(
    request: RequestAttributes,
    plan: StripPlan,
    *,
    reason: str,
    rule: str | None,
    provider: str | None,
    upstream: Mapping[str, str],
    identity_headers: Sequence[str],
    metadata: Mapping[str, Any],
) -> Decision:
    """An allow: ``upstream`` headers set; every identity header authz may set but does not
    here removed (a client's own copy must never pass); the token stripped per ``plan``."""
    headers = dict(upstream)
    unset = tuple(h for h in identity_headers if h not in headers)
    remove = list(unset)
    params = strip_tokens(request, plan, headers, remove)
    return Decision(
        allowed=True,
        status=200,
        reason=reason,
        rule=rule,
        provider=provider,
        upstream_headers=tuple(headers.items()),
        remove_headers=tuple(dict.fromkeys(remove)),
        unset_identity_headers=unset,
        remove_query_params=params,
        metadata=metadata,
    )


def dry_run_answer(answer: Decision, would: Decision) -> Decision:
    """``answer`` (an allow) marked with what enforcement would have decided."""
    verdict = "allow" if would.allowed else "deny"
    return replace(
        answer,
        upstream_headers=(*answer.upstream_headers, (DRY_RUN_HEADER, verdict)),
        remove_headers=tuple(h for h in answer.remove_headers if h != DRY_RUN_HEADER),
        unset_identity_headers=tuple(
            h for h in answer.unset_identity_headers if h != DRY_RUN_HEADER
        ),
        dry_run=(verdict, would.reason),
    )
