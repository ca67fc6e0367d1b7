"""One exception tree for everything authz can refuse or fail at.

Each class carries a stable snake_case ``reason`` (used as-is in metric labels,
logs and deny responses) and an ``outcome`` that fixes the HTTP status. The
``description`` is a fixed, client-safe sentence: never a token or claim value.
"""

from __future__ import annotations

from enum import Enum


class Outcome(Enum):
    """What a denial means for the client, as HTTP status and gRPC code names."""

    BAD_REQUEST = 400
    CONTENT_TOO_LARGE = 413
    HEADERS_TOO_LARGE = 431
    UNAUTHENTICATED = 401
    FORBIDDEN = 403
    UNAVAILABLE = 503


class AuthzError(Exception):
    """Base of every error authz raises on purpose."""


class BackendError(AuthzError):
    """python-jose is not using the ``cryptography`` backend."""


class KeyRejected(AuthzError):
    """A JWK that cannot be used for verification; the message says why, never key material."""


class JwksError(AuthzError):
    """A key set could not be fetched, read or parsed, or holds no usable key.

    ``result`` is the fixed code of ``authz_jwks_refresh_total{result}``.
    """

    result: str = "invalid"


class JwksTimeout(JwksError):
    result = "timeout"


class JwksHttpError(JwksError):
    """A non-200 answer, a redirect to another origin, or a body over the size cap."""

    result = "http_error"


class JwksNetworkError(JwksError):
    result = "network_error"


class JwksReadError(JwksError):
    result = "read_error"


class CheckError(AuthzError):
    """A check that ends in a denial. Raised inside the core, turned into a Decision."""

    reason: str = "internal_error"
    outcome: Outcome = Outcome.UNAVAILABLE
    description: str = "internal error"

    def __init__(self, detail: str = "") -> None:
        # detail is for operators' logs only; it must never hold token or claim values.
        super().__init__(detail or self.description)
        self.detail = detail


class InternalError(CheckError):
    reason = "internal_error"
    outcome = Outcome.UNAVAILABLE
    description = "internal error"


# --- 400: a request no rule can be trusted to match ----------------------------


class InvalidPath(CheckError):
    reason = "invalid_path"
    outcome = Outcome.BAD_REQUEST
    description = "the request path is not acceptable"


class InvalidHost(CheckError):
    """A Host (or :authority) that is not ``name[:port]`` or ``[v6][:port]``: upstreams
    read ``a.example.com:1:2`` or ``a,b`` differently, so host rules cannot be trusted.
    Also a request whose proxy routes by, or sends the upstream, another host than the
    one it names for authz (ingress-nginx: an absolute-form request line)."""

    reason = "invalid_host"
    outcome = Outcome.BAD_REQUEST
    description = "the request host is not acceptable"


class MethodOverride(CheckError):
    """X-HTTP-Method-Override (or a kin) names another method than the request's: the
    upstream may act on either, so no verdict on one method can be trusted."""

    reason = "method_override"
    outcome = Outcome.BAD_REQUEST
    description = "method override headers and parameters are not accepted"


class TokenNotStrippable(CheckError):
    """A token copy sits where the proxy cannot remove it, so an allow would hand it on."""

    reason = "token_not_strippable"
    outcome = Outcome.BAD_REQUEST
    description = "the request carries a token where it cannot be removed"


class AmbiguousToken(CheckError):
    """A forwarded token's location holds several copies or spellings: the upstream may read
    another copy than the one authz verified."""

    reason = "ambiguous_token"
    outcome = Outcome.BAD_REQUEST
    description = "the request carries more than one copy of the token"


class MissingOriginalRequest(CheckError):
    """A proxy asking over HTTP did not name the request to judge in the headers of the
    configured ``http_authz.original_request`` style (or named it twice, or in a form the
    style never sends). Other headers naming a request are never trusted in their place."""

    reason = "missing_original_request"
    outcome = Outcome.BAD_REQUEST
    description = "the proxy did not say which request to check"

    def __init__(self, detail: str = "", *, needs: str = "") -> None:
        """``needs``: the headers the configured style reads, e.g. "X-Original-URI and
        X-Original-Method" (config words, never a request's values)."""
        if needs:
            self.description = f"the proxy did not send {needs} naming the request to check"
        super().__init__(detail)


class RequestTooLarge(CheckError):
    reason = "request_too_large"
    outcome = Outcome.HEADERS_TOO_LARGE
    description = "the request has too many or too large headers"


class CheckRequestTooLarge(CheckError):
    """The whole request as the proxy sent it (headers and any body) exceeds
    limits.max_request_bytes."""

    reason = "check_request_too_large"
    outcome = Outcome.CONTENT_TOO_LARGE
    description = "the request is too large to check"


class MalformedRequest(CheckError):
    """The proxy's check request could not be decoded at all."""

    reason = "malformed_request"
    outcome = Outcome.BAD_REQUEST
    description = "the check request cannot be read"


# --- 401: no usable credentials -------------------------------------------------


class Unauthenticated(CheckError):
    outcome = Outcome.UNAUTHENTICATED


class MissingToken(Unauthenticated):
    reason = "missing_token"
    description = "bearer token required"


class InvalidToken(Unauthenticated):
    """The token was presented but is not acceptable (RFC 6750 ``invalid_token``)."""

    reason = "invalid_token"
    description = "the token is invalid"


class MalformedToken(InvalidToken):
    reason = "malformed_token"
    description = "the token is malformed"


class AlgorithmNotAllowed(InvalidToken):
    reason = "algorithm_not_allowed"
    description = "the token's signing algorithm is not allowed"


class UnknownKey(InvalidToken):
    reason = "unknown_kid"
    description = "the token was signed by an unknown key"


class InvalidSignature(InvalidToken):
    reason = "invalid_signature"
    description = "the token signature is invalid"


class TokenExpired(InvalidToken):
    reason = "token_expired"
    description = "the token has expired"


class TokenNotYetValid(InvalidToken):
    reason = "token_not_yet_valid"
    description = "the token is not valid yet"


class MissingExpiration(InvalidToken):
    reason = "missing_exp"
    description = "the token has no expiration"


class InvalidClaims(InvalidToken):
    reason = "invalid_claims"
    description = "the token's registered claims are invalid"


class InvalidIssuer(InvalidToken):
    reason = "invalid_issuer"
    description = "the token issuer is not accepted"


class InvalidAudience(InvalidToken):
    reason = "invalid_audience"
    description = "the token audience is not accepted"


class CertificateBindingMismatch(InvalidToken):
    """A certificate-bound token (RFC 8705) from a client without that certificate."""

    reason = "certificate_binding_mismatch"
    description = "the token is bound to a client certificate this request did not present"


class TokenInactive(InvalidToken):
    """The issuer's introspection endpoint (RFC 7662) says the token is not active:
    revoked, expired, or never issued."""

    reason = "token_inactive"
    description = "the token is not active"


class DpopError(InvalidToken):
    """A DPoP (RFC 9449) failure: answered with a DPoP challenge (error invalid_dpop_proof
    for the proof's own failures, invalid_token otherwise)."""

    algs = ""  # the algorithms the provider accepts for proofs, for the challenge


class DpopMissing(DpopError):
    reason = "dpop_missing"
    description = "a DPoP proof of possession is required"


class DpopInvalid(DpopError):
    reason = "dpop_invalid"
    description = "the DPoP proof is invalid"


class DpopUseNonce(DpopError):
    """The provider wants proofs to carry a server nonce (RFC 9449 section 8): the answer
    hands out the current one in a DPoP-Nonce header."""

    reason = "dpop_use_nonce"
    description = "the DPoP proof must carry the nonce the server provides"
    nonce = ""


class DpopReplayed(DpopError):
    reason = "dpop_replayed"
    description = "the DPoP proof was used before"


class DpopBindingMismatch(DpopError):
    reason = "dpop_binding_mismatch"
    description = "the DPoP proof's key is not the one the token is bound to"


# --- 403: authenticated, but not allowed ----------------------------------------


class Forbidden(CheckError):
    outcome = Outcome.FORBIDDEN


class ClaimMismatch(Forbidden):
    reason = "claim_mismatch"
    description = "the token does not grant access to this resource"

    def __init__(self, detail: str = "", *, scope: bool = False, condition: str = "") -> None:
        super().__init__(detail)
        # True when the failed condition is on scope/scp: RFC 6750 insufficient_scope.
        self.scope = scope
        # Where in the rule and what it tested, e.g. "claims[1] (contains on roles)".
        self.condition = condition


class NoMatchingRule(Forbidden):
    reason = "no_matching_rule"
    description = "no rule allows this request"


# --- 503: we cannot decide right now ---------------------------------------------


class Overloaded(CheckError):
    reason = "overloaded"
    outcome = Outcome.UNAVAILABLE
    description = "too many checks in flight"


class IntrospectionUnavailable(CheckError):
    """The introspection endpoint failed, timed out or gave no usable answer: not a
    verdict on the token, so it is never cached and never an allow."""

    reason = "introspection_unavailable"
    outcome = Outcome.UNAVAILABLE
    description = "the token cannot be checked right now"

    def __init__(self, detail: str = "", *, result: str = "network_error") -> None:
        super().__init__(detail)
        # The fixed code of authz_introspection_requests_total{result}.
        self.result = result


class DpopOriginUnknown(CheckError):
    """A DPoP proof cannot be checked: the proxy does not say the scheme the client used
    and no dpop.external_origin is configured."""

    reason = "dpop_origin_unknown"
    outcome = Outcome.UNAVAILABLE
    description = "the request cannot be checked right now"


class ReplayStoreUnavailable(CheckError):
    """The shared store of DPoP proofs did not answer: a proof cannot be judged fresh, so
    the check fails closed."""

    reason = "replay_store_unavailable"
    outcome = Outcome.UNAVAILABLE
    description = "the request cannot be checked right now"


class NoKeys(CheckError):
    reason = "no_keys"
    outcome = Outcome.UNAVAILABLE
    description = "no signing keys are available to verify the token"


def _leaves(cls: type[CheckError]) -> list[type[CheckError]]:
    subclasses = cls.__subclasses__()
    return [cls] if not subclasses else [leaf for sub in subclasses for leaf in _leaves(sub)]


# The fixed set of reasons, for docs, metrics and tests: every error a check ends with is a
# leaf of the CheckError tree (the classes between, such as InvalidToken, only group them).
ALLOW_REASONS = ("allowed", "public", "anonymous", "dry_run")
DENY_REASONS = tuple(dict.fromkeys(cls.reason for cls in _leaves(CheckError)))
