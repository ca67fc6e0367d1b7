"""What tests share: keys and tokens, clocks, the config and authorizer builders, request
builders, local servers, a PKI. Test modules import from here, never from each other."""

from tests.support.clock import FakeClock, fixed_clock
from tests.support.configs import (
    LISTEN_ANYWHERE,
    FixedKeys,
    Recorder,
    authorizer,
    config,
    config_data,
    fixed_keys,
    provider,
    verifier,
)
from tests.support.requests import answer, check_request, req
from tests.support.servers import (
    FakeIdp,
    Reply,
    call,
    proxy_call,
    scrape,
    wait_for,
    wait_ready,
)
from tests.support.tokens import (
    AUDIENCE,
    ISSUER,
    NOW,
    Signer,
    b64,
    b64json,
    ec_signer,
    make_signer,
    rsa_signer,
    wall_clock_claims,
)

__all__ = [
    "AUDIENCE",
    "ISSUER",
    "LISTEN_ANYWHERE",
    "NOW",
    "FakeClock",
    "FakeIdp",
    "FixedKeys",
    "Recorder",
    "Reply",
    "Signer",
    "answer",
    "authorizer",
    "b64",
    "b64json",
    "call",
    "check_request",
    "config",
    "config_data",
    "ec_signer",
    "fixed_clock",
    "fixed_keys",
    "make_signer",
    "provider",
    "proxy_call",
    "req",
    "rsa_signer",
    "scrape",
    "verifier",
    "wait_for",
    "wait_ready",
    "wall_clock_claims",
]
