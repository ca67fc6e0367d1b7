"""The identity phase: find the rule's token in the request, route it by its (not yet
trusted) issuer, and verify it, or take an earlier verification from the token cache."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from authz.core.certbound import Mode as CertMode
from authz.core.certbound import certificate_binding, check_certificate_binding
from authz.core.errors import CheckError, InvalidIssuer, MissingToken
from authz.core.jws import COMPACT_JWS, ParsedToken, parse_token
from authz.core.model import Identity, RequestAttributes
from authz.core.policy import CompiledRule, HeaderFromClaim
from authz.core.tokens import TokenSources
from authz.core.verify import Verifier

if TYPE_CHECKING:  # types only: identify itself needs neither module
    from authz.core.dpop import DpopBinding
    from authz.core.introspect import Introspector
    from authz.core.tracing import Span


@dataclass(frozen=True, slots=True)
class ProviderRuntime:
    """Everything the authorizer needs to know about one provider: it verifies JWTs
    (``verifier``) or asks its issuer's introspection endpoint (``introspector``)."""

    name: str
    verifier: Verifier | None
    sources: TokenSources
    headers: tuple[HeaderFromClaim, ...]
    payload_header: str | None
    forward: bool
    introspector: Introspector | None = None
    introspect_jwts: bool = False  # JWTs go to the endpoint too (to see revocation)
    # Proofs of possession for DPoP-bound tokens: a DpopVerifier, or for offline judging a
    # DpopBinding (the token and scheme checked, the proof left out). Either way the DPoP
    # header is authz's, never the upstream's.
    dpop: DpopBinding | None = None
    certificate_bound: CertMode = "off"  # RFC 8705 certificate-bound tokens
    # False for offline judging: no live connection shows a client certificate, so only
    # what the token says of its binding is checked.
    client_certificates: bool = True

    def accepts_issuer(self, iss: object) -> bool:
        """Whether a token naming ``iss`` is for this provider (routing, before trust)."""
        if self.verifier is not None:
            return self.verifier.accepts_issuer(iss)
        assert self.introspector is not None
        return iss == self.introspector.issuer

    @property
    def max_token_bytes(self) -> int:
        judge = self.verifier or self.introspector
        assert judge is not None
        return judge.max_token_bytes

    def cached(self, raw: str) -> Identity | None:
        if self.introspector is not None:
            return self.introspector.cached(raw)
        assert self.verifier is not None
        return self.verifier.cached(raw)

    def takes_jwts(self) -> bool:
        return self.verifier is not None or self.introspect_jwts


@dataclass(slots=True)
class Trace:
    """What a check learned before it ended, for denials, dry runs and metrics."""

    rule: CompiledRule | None = None
    routed: list[str] = field(default_factory=list)  # providers a token was routed to
    identities: list[tuple[ProviderRuntime, Identity]] = field(default_factory=list)
    verified: int = 0  # identities verified in this check, not taken from the cache
    proofs: set[bytes] = field(default_factory=set)  # DPoP proofs recorded by this check
    span: Span | None = None  # the check's span, when tracing is on
    # For explaining a decision (authz eval): the request as the rule phase judged it (a
    # method override applied), its path and template parameters, whether the rule's
    # conditions were evaluated, and a failed first judgement of a method override.
    judged: RequestAttributes | None = None
    path: str = ""
    params: Mapping[str, str] | None = None  # None until a rule matched: no dict per check
    conditions_reached: bool = False
    first_judgement: Trace | None = None
    # (provider, check) of each holder-of-key check left out as no live request is there
    # to pass it (offline judging): dpop_proof, certificate_binding.
    skipped_offline: list[tuple[str, str]] = field(default_factory=list)

    @property
    def provider(self) -> str | None:
        if self.routed:
            return self.routed[-1]
        if self.rule is not None and len(self.rule.providers) == 1:
            return self.rule.providers[0]
        return None

    @property
    def token_cache(self) -> Literal["hit", "miss"] | None:
        if not self.identities:
            return None
        return "miss" if self.verified else "hit"


async def identify(
    request: RequestAttributes,
    rule: CompiledRule,
    candidates: list[ProviderRuntime],
    trace: Trace,
) -> bool:
    """The rule's identities, into ``trace``; False when no token was sent and the rule
    allows that (allow_missing). Raises the CheckError that denies the request."""
    if rule.every:
        for provider in candidates:
            found = provider.sources.find(request, strict=provider.forward)
            if found is None:
                raise MissingToken(f"no token for provider {provider.name}")
            if not _from_cache(found, [provider], trace):
                await _judge(found, [provider], trace)
            await _prove(request, found, trace)
        return True
    found, finders = _find_token(request, candidates)
    if found is None:
        if rule.optional:
            return False
        raise MissingToken("no token in the request")
    if not _from_cache(found, finders, trace):
        await _judge(found, finders, trace)
    await _prove(request, found, trace)
    return True


async def _prove(request: RequestAttributes, token: str, trace: Trace) -> None:
    """The holder-of-key checks for the identity just found, cached or not: a cache hit
    never skips them. The certificate binding first: it needs no I/O. What an offline
    build cannot check (the client certificate, the DPoP proof) goes to the trace."""
    provider, identity = trace.identities[-1]
    if provider.client_certificates:
        check_certificate_binding(
            provider.certificate_bound, identity.claims, request.client_certificate_sha256
        )
    elif certificate_binding(provider.certificate_bound, identity.claims) is not None:
        trace.skipped_offline.append((provider.name, "certificate_binding"))
    if provider.dpop is not None and await provider.dpop.prove(
        request, token, identity.claims, trace.proofs
    ):
        trace.skipped_offline.append((provider.name, "dpop_proof"))


async def _judge(found: str, finders: list[ProviderRuntime], trace: Trace) -> None:
    """A token shaped as a compact JWS goes to the providers that take JWTs, routed by
    its (not yet trusted) iss before any key work; anything else goes to the
    introspection providers. Each judge checks the issuer again."""
    if COMPACT_JWS.fullmatch(found) is None:
        introspecting = [p for p in finders if p.introspector is not None]
        if introspecting:
            await _verify_with_any(found, None, introspecting, trace)
            return
    token = parse_token(found, max(p.max_token_bytes for p in finders))
    iss = token.claims.get("iss")
    matching = [p for p in finders if p.takes_jwts() and p.accepts_issuer(iss)]
    if not matching:
        raise InvalidIssuer("iss matches none of the rule's providers")
    await _verify_with_any(found, token, matching, trace)


def _find_token(
    request: RequestAttributes, candidates: list[ProviderRuntime]
) -> tuple[str | None, list[ProviderRuntime]]:
    """The first token any candidate finds, and the candidates that find that same token."""
    found = [(p, p.sources.find(request, strict=p.forward)) for p in candidates]
    first = next((token for _, token in found if token is not None), None)
    if first is None:
        return None, []
    return first, [p for p, token in found if token == first]


def _from_cache(raw: str, providers: list[ProviderRuntime], trace: Trace) -> bool:
    """Use a cached verification by one of ``providers``; its time checks run again."""
    for provider in providers:
        identity = provider.cached(raw)
        if identity is not None:
            trace.routed.append(provider.name)
            trace.identities.append((provider, identity))
            return True
    return False


async def _verify_with_any(
    raw: str, token: ParsedToken | None, providers: list[ProviderRuntime], trace: Trace
) -> None:
    """Verify with the first provider that accepts; providers rarely share an issuer.
    ``token``: ``raw`` parsed as a JWS, for the providers that verify JWTs themselves."""
    first_error: CheckError | None = None
    for provider in providers:
        trace.routed.append(provider.name)
        try:
            if provider.introspector is not None:
                identity = await provider.introspector.verify(raw, trace.span)
            else:
                assert provider.verifier is not None and token is not None
                identity = await provider.verifier.verify(token, trace.span)
            trace.identities.append((provider, identity))
            trace.verified += 1
            return
        except CheckError as exc:
            first_error = first_error or exc
    assert first_error is not None
    raise first_error
