"""The core's judge of opaque tokens: what an introspection answer must say, how long it
is kept, one request per token, a bound on requests in flight. The endpoint is a fake
client here; tests/keys/test_introspection.py runs the HTTP client against a server."""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import replace
from typing import Any

import pytest

from authz.core.errors import (
    CheckError,
    IntrospectionUnavailable,
    InvalidAudience,
    InvalidClaims,
    InvalidIssuer,
    MalformedToken,
    MissingExpiration,
    Overloaded,
    TokenExpired,
    TokenInactive,
    TokenNotYetValid,
)
from authz.core.introspect import IntrospectionSettings, Introspector
from tests import support
from tests.support import NOW, FakeClock
from tests.support.memory import texts_held_by
from tests.support.tracing import RecordingTracer

ISSUER = "https://idp.example.com"
SETTINGS = IntrospectionSettings(
    issuer=ISSUER,
    audiences=frozenset({"api"}),
    token_types=frozenset({"bearer"}),
    clock_skew=5,
    max_token_bytes=512,
    max_ttl_s=60,
    negative_ttl_s=10,
    max_entries=100,
    max_bytes=1 << 20,
    max_in_flight=4,
    require_expiration=True,
    max_lifetime_s=3600,
)


def active(**members: Any) -> dict[str, Any]:
    answer = {"active": True, "iss": ISSUER, "aud": "api", "sub": "alice", "exp": NOW + 600}
    answer.update(members)
    return {k: v for k, v in answer.items() if v is not None}


class Endpoint:
    """Answers by token; counts requests; can hold answers until released."""

    def __init__(self, answers: dict[str, dict[str, Any] | CheckError]) -> None:
        self.answers = answers
        self.asked: list[str] = []
        self.gate: asyncio.Event | None = None

    async def introspect(self, token: str) -> dict[str, Any]:
        self.asked.append(token)
        if self.gate is not None:
            await self.gate.wait()
        answer = self.answers[token]
        if isinstance(answer, CheckError):
            raise answer
        return dict(answer)


def judge(
    answers: dict[str, dict[str, Any] | CheckError], **settings: Any
) -> tuple[Introspector, Endpoint, FakeClock, list[str]]:
    endpoint, clock, events = Endpoint(answers), FakeClock(), []
    introspector = Introspector(
        "opaque",
        endpoint,
        replace(SETTINGS, **settings),
        clock,
        on_cache=lambda provider, result: events.append(f"{provider}:{result}"),
    )
    return introspector, endpoint, clock, events


async def test_an_active_answer_is_an_identity_with_its_members_as_claims() -> None:
    introspector, endpoint, _, events = judge({"tok": active(scope="read write")})
    identity = await introspector.verify("tok")
    assert identity.provider == "opaque"
    assert identity.claims["sub"] == "alice" and identity.claims["scope"] == "read write"
    payload = base64.urlsafe_b64decode(identity.raw_payload + "==")
    assert json.loads(payload) == identity.claims  # what forward_payload_header carries
    assert introspector.cached("tok") is identity
    assert await introspector.verify("tok") is identity
    assert endpoint.asked == ["tok"]
    assert events == ["opaque:miss", "opaque:hit", "opaque:hit"]


async def test_a_request_to_the_endpoint_is_a_step_of_the_check() -> None:
    good, bad = "Opaque-Secret-1", "Opaque-Secret-2"
    introspector, _, _, _ = judge({good: active(sub="alice-sub"), bad: {"active": False}})
    tracer = RecordingTracer()
    check = tracer.start_check(None)
    await introspector.verify(good, check)
    await introspector.verify(good, check)  # a kept answer: no request, no step
    with pytest.raises(TokenInactive):
        await introspector.verify(bad, check)
    asked, refused = check.children
    assert (asked.name, asked.attributes, asked.error) == (
        "authz.introspection",
        {"authz.provider": "opaque"},
        None,
    )
    assert refused.error == "token_inactive"
    for value in tracer.values():
        assert all(secret not in value for secret in (good, bad, "alice-sub"))


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ({"active": False}, TokenInactive),
        ({}, TokenInactive),
        (active(active="true"), TokenInactive),  # only the JSON true is active
        (active(iss="https://evil.example"), InvalidIssuer),
        (active(aud=None), InvalidAudience),  # RFC 7662 allows it; this API needs it
        (active(aud=["other"]), InvalidAudience),
        (active(aud=7), InvalidAudience),
        (active(token_type="DPoP"), InvalidClaims),
        (active(token_type=1), InvalidClaims),
        (active(sub=42), InvalidClaims),
        (active(exp="soon"), InvalidClaims),
        (active(exp=NOW - 6), TokenExpired),
        (active(nbf=NOW + 6), TokenNotYetValid),
        (active(exp=None), MissingExpiration),  # require_expiration, as for JWTs
        (active(iat=NOW, exp=NOW + 7200), InvalidClaims),  # max_lifetime 3600
        (active(cnf={"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}), InvalidClaims),
        (active(cnf={"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}), InvalidClaims),
    ],
)
async def test_answers_that_do_not_vouch_for_the_token(
    answer: dict[str, Any], error: type[CheckError]
) -> None:
    introspector, _, _, _ = judge({"tok": answer})
    with pytest.raises(error):
        await introspector.verify("tok")


@pytest.mark.parametrize(
    "answer",
    [
        active(iss=None),  # optional in RFC 7662
        active(aud=["other", "api"]),
        active(token_type="bearer"),
        active(exp=NOW - 4, nbf=NOW + 4),  # within the skew
        active(name="\ud800"),  # a lone surrogate, as JSON may carry
    ],
)
async def test_answers_that_do(answer: dict[str, Any]) -> None:
    introspector, _, _, _ = judge({"tok": answer})
    assert (await introspector.verify("tok")).claims == answer


async def test_without_require_expiration_an_answer_needs_no_exp() -> None:
    introspector, _, _, _ = judge({"tok": active(exp=None)}, require_expiration=False)
    assert "exp" not in (await introspector.verify("tok")).claims


async def test_a_kept_refusal_holds_neither_the_token_nor_the_answer() -> None:
    """The exception of a refusal holds, through its traceback, the token and the
    answer: a flood of made-up tokens would keep them all, uncounted."""
    token = "x" * 400
    introspector, _, _, _ = judge({token: {"active": False, "pad": "p" * 5000}})
    with pytest.raises(TokenInactive):
        await introspector.verify(token)
    (entry,) = introspector._entries.values()
    reachable = texts_held_by(entry)
    assert not any(token in text or "p" * 5000 in text for text in reachable)


async def test_an_active_answer_is_kept_until_exp_or_max_ttl() -> None:
    introspector, endpoint, clock, _ = judge(
        {"short": active(exp=NOW + 20), "long": active(exp=NOW + 600)}
    )
    await introspector.verify("short")
    await introspector.verify("long")
    clock.advance(19)
    assert introspector.cached("short") is not None
    clock.advance(1)  # exp: no longer kept
    assert introspector.cached("short") is None
    assert introspector.cached("long") is not None
    clock.advance(40)  # max_ttl
    assert introspector.cached("long") is None
    await introspector.verify("long")
    assert endpoint.asked == ["short", "long", "long"]


async def test_a_refused_answer_is_kept_for_negative_ttl_and_says_the_same() -> None:
    introspector, endpoint, clock, events = judge({"tok": {"active": False}})
    for _ in range(2):
        with pytest.raises(TokenInactive):
            await introspector.verify("tok")
    assert introspector.cached("tok") is None  # a negative answer is no identity
    clock.advance(10)
    with pytest.raises(TokenInactive):
        await introspector.verify("tok")
    assert endpoint.asked == ["tok", "tok"]
    assert events == ["opaque:miss", "opaque:negative_hit", "opaque:miss"]


async def test_time_failures_and_endpoint_failures_are_never_kept() -> None:
    failing = IntrospectionUnavailable("down", result="timeout")
    introspector, endpoint, _, _ = judge({"expired": active(exp=NOW - 100), "down": failing})
    for token, error in (("expired", TokenExpired), ("down", IntrospectionUnavailable)):
        for _ in range(2):
            with pytest.raises(error):
                await introspector.verify(token)
    assert endpoint.asked == ["expired", "expired", "down", "down"]


async def test_a_cache_of_zero_ttl_or_entries_keeps_nothing() -> None:
    for settings in ({"max_ttl_s": 0}, {"max_entries": 0}):
        introspector, endpoint, _, _ = judge({"tok": active()}, **settings)
        await introspector.verify("tok")
        await introspector.verify("tok")
        assert endpoint.asked == ["tok", "tok"]


async def test_the_cache_is_bounded_and_keyed_by_a_hash() -> None:
    answers: dict[str, dict[str, Any] | CheckError] = {f"t{i}": active() for i in range(10)}
    introspector, _, _, _ = judge(answers, max_entries=4)
    for token in answers:
        await introspector.verify(token)
    assert len(introspector) == 4
    assert introspector.cached("t0") is None and introspector.cached("t9") is not None
    assert not any(token.encode() in key for key in introspector._entries for token in answers)
    one_entry = introspector.bytes // 4
    small, _, _, _ = judge(answers, max_bytes=3 * one_entry + 1)
    for token in answers:
        await small.verify(token)
    assert len(small) == 3 and small.bytes <= 3 * one_entry + 1


async def test_one_request_per_token_however_many_checks_wait() -> None:
    introspector, endpoint, _, _ = judge({"tok": active()})
    endpoint.gate = asyncio.Event()
    waiting = [asyncio.create_task(introspector.verify("tok")) for _ in range(20)]
    await asyncio.sleep(0)
    endpoint.gate.set()
    identities = await asyncio.gather(*waiting)
    assert endpoint.asked == ["tok"]
    assert all(identity is identities[0] for identity in identities)


async def test_a_check_that_goes_away_does_not_cancel_the_request_for_others() -> None:
    introspector, endpoint, _, _ = judge({"tok": active()})
    endpoint.gate = asyncio.Event()
    first = asyncio.create_task(introspector.verify("tok"))
    second = asyncio.create_task(introspector.verify("tok"))
    await asyncio.sleep(0)
    first.cancel()
    endpoint.gate.set()
    assert (await second).claims["sub"] == "alice"
    assert endpoint.asked == ["tok"]


async def test_requests_in_flight_are_bounded() -> None:
    answers: dict[str, dict[str, Any] | CheckError] = {f"t{i}": active() for i in range(3)}
    introspector, endpoint, _, _ = judge(answers, max_in_flight=2)
    endpoint.gate = asyncio.Event()
    held = [asyncio.create_task(introspector.verify(t)) for t in ("t0", "t1")]
    await asyncio.sleep(0)
    with pytest.raises(Overloaded):
        await introspector.verify("t2")
    joined = asyncio.create_task(introspector.verify("t0"))  # joins a request in flight
    endpoint.gate.set()
    await asyncio.gather(*held, joined)
    await introspector.verify("t2")  # room again
    assert endpoint.asked == ["t0", "t1", "t2"]


@pytest.mark.parametrize("token", ["", "has space", 'quote"', "a" * 513, "é", "a=b"])
async def test_what_is_no_bearer_token_is_never_sent(token: str) -> None:
    introspector, endpoint, _, _ = judge({})
    with pytest.raises(MalformedToken):
        await introspector.verify(token)
    assert endpoint.asked == []


# --- in the authorizer: which tokens go to the endpoint -------------------------------

OPAQUE = {
    "issuer": ISSUER,
    "audiences": ["api"],
    "introspection": {
        "endpoint": "https://idp.example.com/introspect",
        "client_id": "authz",
        "client_secret": {"env": "UNUSED_HERE"},
    },
    "claim_to_headers": [{"header": "x-user-id", "claim": "sub"}],
}


def mixed(
    answers: dict[str, dict[str, Any] | CheckError], jwks: dict[str, Any], **opaque: Any
) -> tuple[Any, Endpoint]:
    """An authorizer whose one rule requires a JWT provider (corp) or an opaque one."""
    introspection = {**OPAQUE["introspection"], **opaque}  # type: ignore[dict-item]
    built = support.config(
        providers={
            "corp": support.provider(
                jwks={"inline": jwks}, claim_to_headers=[{"header": "x-user-id", "claim": "sub"}]
            ),
            "opaque": {**OPAQUE, "introspection": introspection},
        },
        rules=[{"match": {"prefix": "/"}, "requires": {"any": ["corp", "opaque"]}}],
    )
    introspector, endpoint, _, _ = judge(answers, max_token_bytes=8192)
    checker = support.authorizer(
        built,
        support.fixed_keys(jwks),
        clock=support.fixed_clock(NOW),
        introspectors={"opaque": introspector},
    )
    return checker, endpoint


async def test_opaque_tokens_go_to_the_endpoint_and_jwts_to_their_keys(
    jwks: dict[str, Any], rsa_signer: support.Signer
) -> None:
    checker, endpoint = mixed({"opaque-tok": active(sub="bob")}, jwks)
    decision = await checker.check(support.req(authorization="Bearer opaque-tok"))
    assert decision.allowed and decision.provider == "opaque"
    assert dict(decision.upstream_headers)["x-user-id"] == "bob"
    assert "authorization" in decision.remove_headers  # the token never reaches the upstream
    assert decision.metadata["opaque"]["sub"] == "bob"  # the answer is Envoy's dynamic metadata
    jwt = rsa_signer.token(sub="carol")
    decision = await checker.check(support.req(authorization=f"Bearer {jwt}"))
    assert decision.allowed and decision.provider == "corp"
    assert dict(decision.upstream_headers)["x-user-id"] == "carol"
    assert endpoint.asked == ["opaque-tok"]  # the JWT was not sent anywhere


async def test_introspect_jwts_sends_the_providers_jwts_to_the_endpoint(
    jwks: dict[str, Any], rsa_signer: support.Signer
) -> None:
    jwt = rsa_signer.token(iss=ISSUER)  # the opaque provider's issuer
    checker, endpoint = mixed({jwt: {"active": False}}, jwks, introspect_jwts=True)
    decision = await checker.check(support.req(authorization=f"Bearer {jwt}"))
    assert (decision.status, decision.reason) == (401, "token_inactive")  # revoked
    assert endpoint.asked == [jwt]


async def test_denials_from_introspection(jwks: dict[str, Any]) -> None:
    down = IntrospectionUnavailable("down", result="timeout")
    checker, _ = mixed({"revoked": {"active": False}, "down": down}, jwks)
    inactive = await checker.check(support.req(authorization="Bearer revoked"))
    assert (inactive.status, inactive.reason) == (401, "token_inactive")
    assert 'error="invalid_token"' in dict(inactive.response_headers)["www-authenticate"]
    unavailable = await checker.check(support.req(authorization="Bearer down"))
    assert (unavailable.status, unavailable.reason) == (503, "introspection_unavailable")
    odd = await checker.check(support.req(authorization='Bearer has"quote'))
    assert (odd.status, odd.reason) == (401, "malformed_token")


async def test_an_opaque_token_on_a_jwt_only_rule_is_malformed(jwks: dict[str, Any]) -> None:
    checker = support.authorizer(
        support.config(providers={"corp": support.provider(jwks={"inline": jwks})}),
        support.fixed_keys(jwks),
    )
    decision = await checker.check(support.req(authorization="Bearer opaque-tok"))
    assert (decision.status, decision.reason) == (401, "malformed_token")


async def test_certificate_bound_required_holds_for_introspected_tokens(
    jwks: dict[str, Any],
) -> None:
    """An introspection answer is never bound (cnf is refused), so required refuses all."""
    built = support.config(
        providers={"opaque": {**OPAQUE, "certificate_bound": "required"}},
        rules=[{"match": {"prefix": "/"}, "requires": {"provider": "opaque"}}],
    )
    introspector, _, _, _ = judge({"tok": active()})
    checker = support.authorizer(built, introspectors={"opaque": introspector})
    decision = await checker.check(support.req(authorization="Bearer tok"))
    assert (decision.status, decision.reason) == (401, "certificate_binding_mismatch")
