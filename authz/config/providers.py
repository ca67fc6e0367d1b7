"""Token issuers: where their keys come from, how their tokens are verified and found.

Which algorithms exist and which URLs may be fetched are the keys layer's knowledge: the
build step (authz/runtime/checks.py) checks ``algorithms`` and the JWKS URLs against it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from authz.config.base import Model, PositiveSeconds, claim_header_name, header_name
from authz.config.rules import ClaimToHeader


class RemoteJwks(Model):
    """A JWKS fetched over HTTP(S), directly (``uri``) or through OIDC ``discovery``."""

    allow_insecure: bool = False  # http:// to hosts other than loopback
    uri: str | None = None
    discovery: str | None = None  # issuer URL whose /.well-known/openid-configuration to read
    refresh_interval: PositiveSeconds = 300.0
    min_refresh_interval: PositiveSeconds = 30.0
    max_refresh_interval: PositiveSeconds = 3600.0
    timeout: PositiveSeconds = 5.0
    connect_timeout: PositiveSeconds = 2.0
    unknown_kid_wait: PositiveSeconds = 0.5
    max_bytes: int = Field(default=1 << 20, gt=0)
    max_keys: int = Field(default=100, gt=0)
    ca_file: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _interval_defaults(cls, data: Any) -> Any:
        # Unset bounds follow a short refresh_interval, so {refresh_interval: 2} just works.
        if isinstance(data, dict) and isinstance(data.get("refresh_interval"), int | float):
            interval = data["refresh_interval"]
            data = dict(data)
            low = cls.model_fields["min_refresh_interval"].default
            high = cls.model_fields["max_refresh_interval"].default
            data.setdefault("min_refresh_interval", min(low, interval))
            data.setdefault("max_refresh_interval", max(high, interval))
        return data

    @model_validator(mode="after")
    def _valid(self) -> RemoteJwks:
        if (self.uri is None) == (self.discovery is None):
            raise ValueError("exactly one of uri or discovery is required")
        if not self.min_refresh_interval <= self.refresh_interval <= self.max_refresh_interval:
            raise ValueError(
                "need min_refresh_interval <= refresh_interval <= max_refresh_interval"
            )
        return self


class FileJwks(Model):
    path: Path
    reload_interval: PositiveSeconds = 5.0  # how often the file is checked for changes
    max_keys: int = Field(default=100, gt=0)  # a JWKS with more keys is refused


class Jwks(Model):
    """Exactly one of ``inline``, ``file``, ``remote`` or ``discovery: true``."""

    inline: str | dict[str, Any] | None = None
    file: FileJwks | None = None
    remote: RemoteJwks | None = None
    discovery: bool | None = None

    @field_validator("file", mode="before")
    @classmethod
    def _file_shorthand(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str | Path) else value

    @model_validator(mode="after")
    def _exactly_one(self) -> Jwks:
        given = [k for k in ("inline", "file", "remote") if getattr(self, k) is not None]
        if self.discovery:
            given.append("discovery")
        if len(given) != 1:
            raise ValueError("exactly one of inline, file, remote or discovery: true is required")
        return self

    def remote_settings(self, issuer: str) -> RemoteJwks | None:
        """The remote settings; ``discovery: true`` means discovery from the issuer."""
        if self.discovery:
            return RemoteJwks(discovery=issuer)
        return self.remote

    @field_validator("inline")
    @classmethod
    def _inline_json(cls, value: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        if isinstance(value, str):
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"inline JWKS is not valid JSON: {exc.msg}") from exc
            if not isinstance(parsed, dict):
                raise ValueError("inline JWKS must be a JSON object")
        return value

    def inline_document(self) -> dict[str, Any] | None:
        if self.inline is None:
            return None
        if isinstance(self.inline, str):
            parsed: dict[str, Any] = json.loads(self.inline)
            return parsed
        return self.inline


class HeaderSource(Model):
    name: str
    value_prefix: str = ""

    _name = field_validator("name")(header_name)


def check_issuer_template(issuer: str) -> None:
    """ValueError unless ``{tenant}`` is exactly one whole path segment of an http(s) URL,
    so a token's tenant can select that segment and nothing else."""
    parts = urlsplit(issuer)
    if issuer.count(TENANT_PLACEHOLDER) != 1:
        raise ValueError("issuer: {tenant} must appear exactly once")
    if parts.scheme not in ("https", "http") or "{" in parts.netloc or "}" in parts.netloc:
        raise ValueError("issuer: {tenant} must be in the path, after a fixed scheme and host")
    if parts.query or parts.fragment:
        raise ValueError("issuer: a template has no query or fragment")
    if TENANT_PLACEHOLDER not in parts.path.split("/"):
        raise ValueError("issuer: {tenant} must be a whole path segment (/.../{tenant}/...)")


class SecretSource(Model):
    """A secret read (by the build step) from a file or an environment variable."""

    file: Path | None = None
    env: str | None = None

    @model_validator(mode="after")
    def _one(self) -> SecretSource:
        if (self.file is None) == (self.env is None):
            raise ValueError("exactly one of file or env is required")
        return self


class SharedSecret(SecretSource):
    """An HMAC secret for HS256/384/512, read (by the build step) from a file or an
    environment variable."""

    kid: str | None = None  # when set, tokens must name it; when not, their kid is ignored


class IntrospectionCache(Model):
    """Answers kept so a repeated token is not introspected again: active ones until
    min(exp, now + max_ttl), inactive or refused ones for negative_ttl."""

    max_ttl: float = Field(default=60.0, ge=0)  # 0: every check asks the endpoint
    negative_ttl: float = Field(default=10.0, ge=0)
    max_entries: int = Field(default=100_000, ge=0)
    max_bytes: int = Field(default=32 << 20, gt=0)


class Introspection(Model):
    """Opaque tokens judged by the issuer's introspection endpoint (RFC 7662)."""

    endpoint: str | None = None
    discovery: bool = False  # the issuer's discovery document names the endpoint
    client_id: str = Field(min_length=1)
    client_secret: SecretSource
    auth_method: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic"
    timeout: PositiveSeconds = 2.0
    connect_timeout: PositiveSeconds = 1.0
    max_in_flight: int = Field(default=256, gt=0)  # requests at once; more: 503 overloaded
    max_answer_bytes: int = Field(default=64 * 1024, gt=0)
    allow_insecure: bool = False  # http:// to hosts other than loopback
    ca_file: Path | None = None
    introspect_jwts: bool = False  # JWTs too, for routes that must see revocation
    cache: IntrospectionCache = Field(default_factory=IntrospectionCache)

    @model_validator(mode="after")
    def _one_endpoint(self) -> Introspection:
        if (self.endpoint is None) == (not self.discovery):
            raise ValueError("exactly one of endpoint or discovery: true is required")
        return self


class RedisReplayStore(Model):
    """DPoP proofs remembered in Redis, so that every replica and worker sees them."""

    url: str = Field(min_length=1)  # redis://host:port/db or rediss:// (TLS)
    key_prefix: str = "authz:dpop:"
    password: SecretSource | None = None  # instead of one in the URL
    timeout: PositiveSeconds = 0.5  # per command; beyond it the check fails closed (503)

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("a redis://, rediss:// or unix:// URL")
        return value


class ReplayStoreSettings(Model):
    redis: RedisReplayStore


class DpopNonce(Model):
    """Server nonces (RFC 9449 section 8): proofs must carry a nonce authz handed out,
    which bounds how early a client can make proofs. Stateless: an HMAC of the current
    time slot with the secret, so every worker and replica with the secret accepts the
    others' nonces."""

    secret: SecretSource  # at least 32 bytes
    rotation: PositiveSeconds = 60.0  # a nonce is accepted in its slot and the next one


class Dpop(Model):
    """DPoP (RFC 9449) proofs of possession for tokens bound to a key (cnf.jkt)."""

    # required: every token must be DPoP-bound and come with a proof; when_bound: those
    # that are bound (cnf.jkt) must; off: no DPoP (a bound token is taken as a bearer one)
    mode: Literal["required", "when_bound", "off"] = "when_bound"
    algorithms: list[str] = Field(
        default_factory=lambda: ["ES256", "EdDSA", "PS256", "RS256"], min_length=1
    )
    max_age: PositiveSeconds = 60.0  # how old a proof's iat may be
    clock_skew: float = Field(default=5.0, ge=0, le=300)
    # scheme://authority clients use, when authz's proxy sits behind another one that
    # changes them (the request's own scheme and Host are used otherwise)
    external_origin: str | None = None
    max_replay_entries: int = Field(default=100_000, gt=0)  # the in-memory jti store
    # memory: each process remembers the proofs it saw; {redis: {...}}: all share them
    replay_store: Literal["memory"] | ReplayStoreSettings = "memory"
    nonce: DpopNonce | None = None

    @field_validator("external_origin")
    @classmethod
    def _origin(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise ValueError("an origin: scheme://host[:port], nothing after")
        return value.rstrip("/")


TENANT_PLACEHOLDER = "{tenant}"
TENANT_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")


class AnyTenant(Model):
    """Every tenant whose tokens carry the provider's audience, bounded."""

    any: Literal[True]
    max: int = Field(default=1000, gt=0)  # tenants with key sources at once (LRU)
    create_rate: float = Field(default=5.0, gt=0)  # new tenants' key sources per second
    burst: int = Field(default=20, gt=0)


class Provider(Model):
    issuer: str = Field(min_length=1)
    audiences: list[str] = Field(min_length=1)
    # With "{tenant}" as one path segment of the issuer: the tenants it may name.
    tenants: list[str] | AnyTenant | None = None
    jwks: Jwks | None = None
    shared_secret: SharedSecret | None = None  # instead of jwks, for HS* algorithms only
    introspection: Introspection | None = None  # instead of jwks: opaque tokens (RFC 7662)
    dpop: Dpop = Field(default_factory=Dpop)
    # RFC 8705: a token bound to a client certificate (cnf x5t#S256) is accepted only from
    # the client that showed it. required: every token must be bound; off: no check.
    certificate_bound: Literal["required", "when_bound", "off"] = "when_bound"
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"], min_length=1)
    clock_skew: float = Field(default=60.0, ge=0, le=3600)
    require_expiration: bool = True
    max_lifetime: PositiveSeconds | None = None  # exp - iat (or exp - now) may not exceed it
    typ: str | None = None  # e.g. at+jwt (RFC 9068): the token header's typ must match
    require_kid: bool = False  # false: a kid-less token is tried with the one key of its alg
    max_token_bytes: int = Field(default=8192, ge=256, le=1 << 20)
    from_headers: list[HeaderSource] = Field(
        default_factory=lambda: [HeaderSource(name="authorization", value_prefix="Bearer ")]
    )
    from_params: list[str] = Field(default_factory=list)
    from_cookies: list[str] = Field(default_factory=list)
    claim_to_headers: list[ClaimToHeader] = Field(default_factory=list)
    forward_payload_header: str | None = None
    forward: bool = False

    @field_validator("forward_payload_header")
    @classmethod
    def _payload_header(cls, value: str | None) -> str | None:
        return None if value is None else claim_header_name(value)

    @model_validator(mode="after")
    def _keys(self) -> Provider:
        kinds = [self.jwks, self.shared_secret, self.introspection]
        if sum(kind is not None for kind in kinds) != 1:
            raise ValueError("exactly one of jwks, shared_secret or introspection is required")
        if self.introspection is not None:
            jwt_only = {"algorithms", "typ", "require_kid"} & self.model_fields_set
            if jwt_only:
                raise ValueError(
                    f"{', '.join(sorted(jwt_only))}: for JWT providers; an introspection "
                    "provider's tokens are judged by their issuer's endpoint"
                )
        return self

    @model_validator(mode="after")
    def _tenants(self) -> Provider:
        templated = TENANT_PLACEHOLDER in self.issuer
        if templated != (self.tenants is not None):
            raise ValueError(
                "tenants and an issuer with {tenant} go together: "
                "issuer: https://idp.example.com/{tenant}/v2.0 with tenants: [...] or "
                "{any: true}"
            )
        if not templated:
            return self
        check_issuer_template(self.issuer)
        if isinstance(self.tenants, list):
            if not self.tenants:
                raise ValueError("tenants: list at least one, or {any: true}")
            for tenant in self.tenants:
                if not TENANT_NAME.fullmatch(tenant) or tenant in (".", ".."):
                    raise ValueError(f"tenants: {tenant!r} is not a tenant name ([A-Za-z0-9._-])")
        if self.introspection is not None or self.shared_secret is not None:
            # A shared secret signs for every tenant alike: whoever holds it is any tenant.
            raise ValueError("tenants are for jwks providers")
        return self

    @model_validator(mode="after")
    def _tenant_headers(self) -> Provider:
        if self.tenants is None and any(m.issuer_param for m in self.claim_to_headers):
            raise ValueError("claim_to_headers: issuer_param needs a provider with tenants")
        return self

    @model_validator(mode="after")
    def _has_source(self) -> Provider:
        if not (self.from_headers or self.from_params or self.from_cookies):
            raise ValueError("at least one of from_headers, from_params, from_cookies is required")
        return self
