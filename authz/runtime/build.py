"""The one build step: a config -> everything a running authz needs.

``serve`` (the App), ``check-config`` and a reload all go through here, so what one accepts
the others build. Here (with build_policy.py) config models become runtime objects, and
their defaults become arguments: the core, keys and adapters never see a config model.
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

import aiohttp

from authz.config import (
    AnyTenant,
    Config,
    ConfigError,
    Dpop,
    Limits,
    Provider,
    RemoteJwks,
    SecretSource,
    Tls,
    split_address,
)
from authz.core.authorizer import Authorizer, CheckLimits, Observer, Settings
from authz.core.dpop import (
    DpopBinding,
    DpopSettings,
    DpopVerifier,
    MemoryReplayStore,
    NonceSettings,
    ReplayStore,
)
from authz.core.errors import JwksError
from authz.core.identify import ProviderRuntime
from authz.core.jws import media_type
from authz.core.policy import HeaderFromClaim
from authz.core.tenants import PLACEHOLDER, IssuerTemplate
from authz.core.token_cache import TokenCache
from authz.core.tokens import HeaderSource, TokenSources
from authz.core.tracing import Tracer
from authz.core.verify import Clock, KeyLookup, Verifier
from authz.keys.crypto import construct_key
from authz.keys.fetch import AiohttpFetcher, Fetcher, ssl_context_for
from authz.keys.jwks import INLINE_MAX_KEYS, hmac_key_set, parse_jwks
from authz.keys.remote import RemoteKeySource, RemoteSettings
from authz.keys.sources import FileKeySource, KeyEvents, KeySource, Monotonic, StaticKeySource
from authz.keys.tenants import TenantKeySources
from authz.runtime.build_policy import build_policy
from authz.runtime.checks import check, errors_located
from authz.runtime.lint import Finding, findings
from authz.runtime.tls_files import TlsFiles

if TYPE_CHECKING:  # loaded only when a provider introspects, or tracing is on
    from authz.core.introspect import IntrospectionSettings, Introspector
    from authz.runtime.otel import OtelTracing


class FetcherFor(Protocol):
    """HTTP clients for the providers, sharing one aiohttp session."""

    def __call__(self, settings: RemoteJwks, trust: ssl.SSLContext | None) -> Fetcher:
        """A fetcher for a remote key set's settings, trusting the given CA bundle (None:
        the system's)."""
        ...

    def session(self, limit: int) -> aiohttp.ClientSession:
        """A session for introspection requests, at most ``limit`` connections at once,
        made when first asked for."""
        ...


class Events(KeyEvents, Protocol):
    """What key sources, introspection clients (the keys layer's IntrospectionEvents)
    and introspectors report."""

    def introspection(self, provider: str, result: str, seconds: float) -> None: ...

    def introspection_cache(self, provider: str, result: str) -> None: ...

    def tenant_source(self, provider: str, event: str, tenants: int) -> None: ...


@dataclass(frozen=True, slots=True)
class Built:
    """What a config builds to: the authorizer and the key sources it reads (not started)."""

    authorizer: Authorizer
    sources: Mapping[str, KeySource]
    warnings: tuple[Finding, ...]
    introspectors: Mapping[str, Introspector] = field(default_factory=dict)


@errors_located
def validate(config: Config) -> tuple[Finding, ...]:
    """ConfigError for what cannot be built; warnings for what surely is not meant."""
    check(config)
    return findings(config)


@errors_located
def build(
    config: Config,
    *,
    events: Events,
    fetcher_for: FetcherFor,
    observe: Observer | None,
    clock: Clock = time.time,
    monotonic: Monotonic = time.monotonic,
    keep: Mapping[str, KeySource] | None = None,
    keep_introspectors: Mapping[str, Introspector] | None = None,
    replay: ReplayStores | None = None,
    tracer: Tracer | None = None,
) -> Built:
    """Every runtime object of ``config``; nothing is fetched or started. ``keep``: sources
    to reuse by provider name (a reload keeps those whose keys are configured as before);
    ``keep_introspectors`` likewise, with their kept answers; ``replay``: the DPoP proofs
    seen (the App keeps one across reloads; None: a new one); ``tracer``: the App's
    (build_tracing), for a span per check."""
    warnings = validate(config)
    sources = {
        name: (keep or {}).get(name)
        or build_key_source(name, provider, events, fetcher_for, monotonic)
        for name, provider in config.providers.items()
        if provider.introspection is None
    }
    introspectors = {
        name: (keep_introspectors or {}).get(name)
        or build_introspector(name, provider, events, fetcher_for, clock)
        for name, provider in config.providers.items()
        if provider.introspection is not None
    }
    authorizer = build_authorizer(
        config, sources, clock, observe, introspectors, replay, tracer=tracer
    )
    return Built(authorizer, sources, warnings, introspectors)


def build_authorizer(
    config: Config,
    keys: Mapping[str, KeyLookup],
    clock: Clock,
    observe: Observer | None,
    introspectors: Mapping[str, Introspector] | None = None,
    replay: ReplayStores | None = None,
    *,
    tracer: Tracer | None = None,
    holder_checks: bool = True,
) -> Authorizer:
    """``keys``: the key lookup of each JWT provider; ``introspectors``: the judge of
    each introspection provider; ``replay``: where DPoP proofs are remembered;
    ``tracer``: one span per check (None: tracing off); ``holder_checks`` False (offline
    judging only): what the token and the request say of a DPoP or certificate binding
    is checked, but not the DPoP proof nor the client certificate, which only a live
    request has (the check's Trace lists them as skipped)."""
    settings = config.token_cache
    # A fresh token cache per config: a provider's settings may have changed.
    cache = TokenCache(settings.max_entries, settings.max_bytes) if settings.max_entries else None
    seen = replay if replay is not None else ReplayStores(replay_entries(config))
    providers = {
        name: build_provider(
            name,
            provider,
            config,
            keys.get(name),
            clock,
            cache,
            (introspectors or {}).get(name),
            seen,
            holder_checks=holder_checks,
        )
        for name, provider in config.providers.items()
    }
    limits = config.limits
    return Authorizer(
        build_policy(config),
        providers,
        Settings(
            global_dry_run=config.mode == "dry_run",
            expose_reasons=config.expose_reasons,
            max_header_value_bytes=config.max_header_value_bytes,
            limits=CheckLimits(
                max_headers=limits.max_headers,
                max_header_bytes=limits.max_header_bytes,
                max_concurrent_checks=limits.max_concurrent_checks,
                max_request_bytes=limits.max_request_bytes,
            ),
            semicolons_literal=config.paths.semicolons == "literal",
            judge_method_overrides=config.method_override == "judge_both",
        ),
        observe,
        cache,
        tracer,
    )


def build_tracing(config: Config) -> OtelTracing | None:
    """The tracer provider of ``config.tracing`` (None when tracing is off; OpenTelemetry
    is imported only here, and only then). Its exporter connects when it first exports."""
    settings = config.tracing
    if settings is None:
        return None
    from authz.runtime.otel import OtelTracing, otlp_exporter

    return OtelTracing(
        otlp_exporter(settings.otlp_endpoint),
        sample_ratio=settings.sample_ratio,
        service_name=settings.service_name,
    )


def build_provider(
    name: str,
    provider: Provider,
    config: Config,
    keys: KeyLookup | None,
    clock: Clock,
    cache: TokenCache | None,
    introspector: Introspector | None = None,
    replay: ReplayStores | None = None,
    *,
    holder_checks: bool = True,
) -> ProviderRuntime:
    delimiter = config.nested_claim_delimiter
    dpop = provider.dpop if provider.introspection is None and provider.dpop.mode != "off" else None
    header_sources: list[HeaderSource] = []
    for source in provider.from_headers:
        header_sources.append(HeaderSource(source.name, source.value_prefix))
        if (
            dpop
            and source.name == "authorization"
            and source.value_prefix.strip().lower() == "bearer"
        ):
            header_sources.append(HeaderSource("authorization", "DPoP "))  # RFC 9449 7.1
    sources = TokenSources(
        headers=tuple(header_sources),
        params=tuple(provider.from_params),
        cookies=tuple(provider.from_cookies),
    )
    headers = tuple(
        HeaderFromClaim(m.header, tuple(m.claim.split(delimiter)) if m.claim else ())
        for m in provider.claim_to_headers
    )
    if provider.introspection is not None:
        assert introspector is not None  # build() makes one for each such provider
        return ProviderRuntime(
            name=name,
            verifier=None,
            sources=sources,
            headers=headers,
            payload_header=provider.forward_payload_header,
            forward=provider.forward,
            introspector=introspector,
            introspect_jwts=provider.introspection.introspect_jwts,
            certificate_bound=provider.certificate_bound,
            client_certificates=holder_checks,
        )
    assert keys is not None
    tenants = None
    if provider.tenants is not None:
        allowed = None if isinstance(provider.tenants, AnyTenant) else frozenset(provider.tenants)
        tenants = IssuerTemplate.parse(provider.issuer, allowed)
    verifier = Verifier(
        provider=name,
        issuer=provider.issuer,
        audiences=frozenset(provider.audiences),
        algorithms=frozenset(provider.algorithms),
        clock_skew=provider.clock_skew,
        require_expiration=provider.require_expiration,
        keys=keys,
        clock=clock,
        max_lifetime=provider.max_lifetime,
        typ=media_type(provider.typ) if provider.typ else None,
        require_kid=provider.require_kid,
        max_token_bytes=provider.max_token_bytes,
        cache=cache,
        tenants=tenants,
        tenant_keys=keys if isinstance(keys, TenantKeySources) else None,
    )
    return ProviderRuntime(
        name=name,
        verifier=verifier,
        sources=sources,
        headers=headers,
        payload_header=provider.forward_payload_header,
        forward=provider.forward,
        dpop=dpop_checks(name, dpop, clock, replay, holder_checks) if dpop else None,
        certificate_bound=provider.certificate_bound,
        client_certificates=holder_checks,
    )


def dpop_checks(
    name: str, settings: Dpop, clock: Clock, replay: ReplayStores | None, proofs: bool
) -> DpopBinding:
    """The verifier; without ``proofs`` (offline judging) only the checks of the token and
    the scheme, reading no nonce secret and keeping no replay store."""
    if proofs:
        return dpop_verifier(name, settings, clock, replay)
    return DpopBinding(dpop_settings(settings, None))


def dpop_verifier(
    name: str, settings: Dpop, clock: Clock, replay: ReplayStores | None
) -> DpopVerifier:
    stores = replay if replay is not None else ReplayStores(settings.max_replay_entries)
    return DpopVerifier(
        dpop_settings(settings, nonce_settings(name, settings)),
        construct_key,
        stores.store(settings, f"providers.{name}.dpop.replay_store"),
        clock,
    )


def dpop_settings(settings: Dpop, nonce: NonceSettings | None) -> DpopSettings:
    return DpopSettings(
        mode=settings.mode,
        algorithms=frozenset(settings.algorithms),
        max_age_s=settings.max_age,
        clock_skew_s=settings.clock_skew,
        external_origin=settings.external_origin,
        nonce=nonce,
    )


MIN_NONCE_SECRET_BYTES = 32


def nonce_settings(name: str, settings: Dpop) -> NonceSettings | None:
    if settings.nonce is None:
        return None
    where = f"providers.{name}.dpop.nonce.secret"
    secret = read_secret(settings.nonce.secret, where)
    if len(secret) < MIN_NONCE_SECRET_BYTES:
        raise ConfigError(f"{where}: at least {MIN_NONCE_SECRET_BYTES} bytes")
    return NonceSettings(settings.nonce.rotation, secret)


class ReplayStores:
    """The DPoP replay stores, owned by the App so that they outlive reloads: one in
    memory shared by every provider that asks for memory, one Redis client per URL and
    prefix."""

    def __init__(self, memory_entries: int) -> None:
        self._memory = MemoryReplayStore(memory_entries)
        self._redis: dict[tuple[str, str, str | None], ReplayStore] = {}

    def store(self, settings: Dpop, where: str) -> ReplayStore:
        if settings.replay_store == "memory":
            return self._memory
        redis = settings.replay_store.redis
        password = None
        if redis.password is not None:
            try:
                password = read_secret(redis.password, f"{where}.redis.password").decode()
            except UnicodeDecodeError as exc:
                raise ConfigError(f"{where}.redis.password: not UTF-8 text") from exc
        key = (redis.url, redis.key_prefix, password)
        if key not in self._redis:
            from authz.keys.replay import RedisReplayStore

            self._redis[key] = RedisReplayStore(
                redis.url, redis.key_prefix, timeout_s=redis.timeout, password=password
            )
        return self._redis[key]

    async def close(self) -> None:
        stores, self._redis = list(self._redis.values()), {}
        for store in stores:
            close = getattr(store, "close", None)
            if close is not None:
                await close()


def replay_entries(config: Config) -> int:
    """How many DPoP proofs the in-memory store keeps: the largest any provider asks."""
    return max((p.dpop.max_replay_entries for p in config.providers.values()), default=1)


def build_introspector(
    name: str,
    provider: Provider,
    events: Events,
    fetcher_for: FetcherFor,
    clock: Clock,
) -> Introspector:
    """The judge of an introspection provider and its HTTP client (loaded only here, so
    a config without introspection never imports it). Nothing is fetched yet."""
    from authz.core.introspect import Introspector
    from authz.keys.introspection import EndpointSettings, HttpIntrospectionClient

    settings = provider.introspection
    assert settings is not None
    where = f"providers.{name}.introspection"
    try:
        trust = ssl_context_for(str(settings.ca_file) if settings.ca_file else None)
    except JwksError as exc:
        raise ConfigError(f"{where}.ca_file: {exc}") from exc
    secret = read_secret(settings.client_secret, f"{where}.client_secret")
    try:
        secret_text = secret.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}.client_secret: not UTF-8 text") from exc
    # The discovery document is read within the introspection timeouts.
    discovery = RemoteJwks(
        discovery=provider.issuer,
        allow_insecure=settings.allow_insecure,
        timeout=settings.timeout,
        connect_timeout=settings.connect_timeout,
    )
    client = HttpIntrospectionClient(
        name,
        provider.issuer,
        EndpointSettings(
            endpoint=settings.endpoint,
            discovery=provider.issuer if settings.discovery else None,
            client_id=settings.client_id,
            client_secret=secret_text,
            auth_method=settings.auth_method,
            timeout_s=settings.timeout,
            connect_timeout_s=settings.connect_timeout,
            max_bytes=settings.max_answer_bytes,
            allow_insecure=settings.allow_insecure,
        ),
        # Its own connections, as many as requests may be in flight: the key fetches'
        # session (aiohttp's default of 100) would queue them into timeouts.
        session=lambda: fetcher_for.session(settings.max_in_flight),
        fetcher=fetcher_for(discovery, trust),
        events=events,
        ssl_context=trust,
    )
    return Introspector(
        name, client, introspection_settings(provider), clock, on_cache=events.introspection_cache
    )


def introspection_settings(provider: Provider) -> IntrospectionSettings:
    """How an introspection provider judges answers (the client aside)."""
    from authz.core.introspect import IntrospectionSettings

    settings = provider.introspection
    assert settings is not None
    cache = settings.cache
    return IntrospectionSettings(
        issuer=provider.issuer,
        audiences=frozenset(provider.audiences),
        token_types=frozenset({"bearer"}),  # RFC 6750 tokens are all authz reads
        clock_skew=provider.clock_skew,
        max_token_bytes=provider.max_token_bytes,
        max_ttl_s=cache.max_ttl,
        negative_ttl_s=cache.negative_ttl,
        max_entries=cache.max_entries,
        max_bytes=cache.max_bytes,
        max_in_flight=settings.max_in_flight,
        require_expiration=provider.require_expiration,
        max_lifetime_s=provider.max_lifetime,
    )


def build_key_source(
    name: str,
    provider: Provider,
    events: Events,
    fetcher_for: FetcherFor,
    monotonic: Monotonic,
) -> KeySource:
    """The provider's key source, not started. An inline JWKS or a shared secret is parsed
    here, so a broken one is a ConfigError before anything serves."""
    algorithms = tuple(provider.algorithms)
    where = f"providers.{name}"
    try:
        if provider.shared_secret is not None:
            secret = provider.shared_secret
            secret_bytes = read_secret(secret, f"{where}.shared_secret")
            keys = hmac_key_set(secret_bytes, algorithms, secret.kid)
            return StaticKeySource(name, algorithms, events, keys, monotonic)
        jwks = provider.jwks
        assert jwks is not None  # the schema: exactly one of jwks and shared_secret
        inline = jwks.inline_document()
        if inline is not None:
            keys = parse_jwks(inline, algorithms, max_keys=INLINE_MAX_KEYS)
            return StaticKeySource(name, algorithms, events, keys, monotonic)
    except JwksError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    if jwks.file is not None:
        return FileKeySource(
            name,
            algorithms,
            events,
            jwks.file.path,
            reload_interval_s=jwks.file.reload_interval,
            max_keys=jwks.file.max_keys,
            monotonic=monotonic,
        )
    remote = jwks.remote_settings(provider.issuer)
    assert remote is not None  # the schema guarantees exactly one kind
    try:
        trust = ssl_context_for(str(remote.ca_file) if remote.ca_file else None)
    except JwksError as exc:
        raise ConfigError(f"{where}.jwks.remote.ca_file: {exc}") from exc
    fetcher = fetcher_for(remote, trust)

    def remote_source(tenant: str | None) -> RemoteKeySource:
        def at(url: str | None) -> str | None:
            return url if url is None or tenant is None else url.replace(PLACEHOLDER, tenant)

        issuer = provider.issuer if tenant is None else provider.issuer.replace(PLACEHOLDER, tenant)
        return RemoteKeySource(
            name,
            algorithms,
            events,
            RemoteSettings(
                uri=at(remote.uri),
                discovery=at(remote.discovery),
                refresh_interval_s=remote.refresh_interval,
                min_refresh_interval_s=remote.min_refresh_interval,
                max_refresh_interval_s=remote.max_refresh_interval,
                unknown_kid_wait_s=remote.unknown_kid_wait,
                max_keys=remote.max_keys,
                allow_insecure=remote.allow_insecure,
            ),
            issuer=issuer,
            fetcher=fetcher,
            monotonic=monotonic,
        )

    if provider.tenants is None or PLACEHOLDER not in (remote.uri or remote.discovery or ""):
        return remote_source(None)  # one key set, whichever tenant
    every = provider.tenants if isinstance(provider.tenants, AnyTenant) else None
    listed = tuple(provider.tenants) if isinstance(provider.tenants, list) else ()
    return TenantKeySources(
        name,
        algorithms,
        events,
        remote_source,
        listed=listed,
        max_tenants=every.max if every else len(listed),
        create_per_s=every.create_rate if every else 1.0,  # listed ones are made at start
        burst=every.burst if every else 1,
        first_wait_s=remote.unknown_kid_wait,
        on_event=events.tenant_source,
        monotonic=monotonic,
    )


@dataclass(frozen=True, slots=True)
class HttpAuthzPlan:
    host: str
    port: int
    style: Literal["envoy", "nginx", "ingress-nginx", "traefik", "caddy"]
    path_prefix: str
    certificate_source: Literal["none", "xfcc", "nginx"] = "none"


@dataclass(frozen=True, slots=True)
class Listeners:
    """Where and how authz listens, every file read and every address parsed: the servers
    are made from this (runtime/app.py), so check-config judges exactly what serve binds."""

    grpc_address: str
    grpc_tls: TlsFiles | None
    grpc_receive_bytes: int
    ops_host: str
    ops_port: int
    ops_tls: ssl.SSLContext | None
    ops_tls_files: TlsFiles | None  # followed: a renewal is loaded into ops_tls
    http_authz: HttpAuthzPlan | None
    max_headers: int
    max_header_bytes: int
    reuse_port: bool  # workers > 1 share the ports
    connections: ConnectionLimits


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    header_timeout_s: float
    idle_timeout_s: float
    max_http: int  # per HTTP listener
    max_grpc: int
    grpc_max_age_s: float  # 0: never
    fitted: str = ""  # why the maxima were lowered below the config's, if they were


# The most request header bytes Envoy can be configured to accept (max_request_headers_kb).
ENVOY_MAX_HEADER_BYTES = 8 << 20
GRPC_FRAMING_BYTES = 1 << 20  # the CheckRequest's other fields and protobuf framing


def grpc_receive_bytes(max_request_bytes: int) -> int:
    """The gRPC receive limit: above anything Envoy can send (its largest headers plus a
    body up to limits.max_request_bytes), so that a large request reaches the handler and
    gets a 413 deny. Over the receive limit grpcio answers RESOURCE_EXHAUSTED, which
    Envoy with failure_mode_allow: true would turn into an allow."""
    return ENVOY_MAX_HEADER_BYTES + max_request_bytes + GRPC_FRAMING_BYTES


# Descriptors kept for everything but the listeners' connections: key files, JWKS
# fetches, the config watcher, the interpreter's own.
RESERVED_DESCRIPTORS = 128


def connection_limits(limits: Limits, listeners: int, descriptors: int | None) -> ConnectionLimits:
    """The connection maxima, lowered in proportion when the process may not open that many
    descriptors (``descriptors``: its soft limit; None: unknown): whichever listener a
    flood of connections targets, the others can still accept theirs."""
    max_http, max_grpc = limits.max_http_connections, limits.max_grpc_connections
    fitted = ""
    wanted = max_grpc + listeners * max_http
    budget = (descriptors or 0) - RESERVED_DESCRIPTORS
    if descriptors is not None and wanted > budget:
        share = max(budget, 0) / wanted
        max_http = max(16, int(max_http * share))
        max_grpc = max(16, int(max_grpc * share))
        fitted = (
            f"the descriptor limit ({descriptors}) is below what limits.max_grpc_connections "
            f"and limits.max_http_connections need ({wanted + RESERVED_DESCRIPTORS}): at most "
            f"{max_grpc} gRPC and {max_http} HTTP connections per listener"
        )
    return ConnectionLimits(
        header_timeout_s=limits.http_header_timeout,
        idle_timeout_s=limits.http_idle_timeout,
        max_http=max_http,
        max_grpc=max_grpc,
        grpc_max_age_s=limits.grpc_max_connection_age,
        fitted=fitted,
    )


@errors_located
def build_listeners(config: Config, descriptors: int | None = None) -> Listeners:
    """``descriptors``: the process's soft limit on open files, which bounds the
    connection maxima (None: do not bound them, as check-config)."""
    listen, limits = config.listen, config.limits
    ops_host, ops_port = split_address(listen.http)
    http_authz = None
    if config.http_authz is not None:
        host, port = split_address(config.http_authz.listen)
        http_authz = HttpAuthzPlan(
            host,
            port,
            config.http_authz.original_request,
            config.http_authz.path_prefix,
            config.http_authz.certificate_source,
        )
    ops_files = tls_files(listen.http_tls, "listen.http_tls") if listen.http_tls else None
    return Listeners(
        grpc_address=listen.grpc,
        grpc_tls=tls_files(listen.grpc_tls, "listen.grpc_tls") if listen.grpc_tls else None,
        grpc_receive_bytes=grpc_receive_bytes(limits.max_request_bytes),
        ops_host=ops_host,
        ops_port=ops_port,
        ops_tls=ops_files.serving_context() if ops_files is not None else None,
        ops_tls_files=ops_files,
        http_authz=http_authz,
        max_headers=limits.max_headers,
        max_header_bytes=limits.max_header_bytes,
        reuse_port=config.workers > 1,
        connections=connection_limits(limits, 2 if http_authz else 1, descriptors),
    )


INTROSPECTOR_FIELDS = (
    "issuer",
    "audiences",
    "introspection",
    "clock_skew",
    "max_token_bytes",
    "require_expiration",
    "max_lifetime",
)


def same_introspection(old: Provider, new: Provider) -> bool:
    """Whether an introspection provider judges as before (so a reload keeps its
    introspector and the answers it holds)."""
    return all(getattr(old, f) == getattr(new, f) for f in INTROSPECTOR_FIELDS)


def same_keys(old: Provider, new: Provider) -> bool:
    """Whether two provider configs describe the same keys (so a reload keeps the source)."""
    fields = ("issuer", "tenants", "jwks", "shared_secret", "algorithms")
    return all(getattr(old, f) == getattr(new, f) for f in fields)


def read_secret(secret: SecretSource, where: str) -> bytes:
    """A secret's bytes (a trailing newline in a file is not part of it); ``where``: the
    key that names it, for errors."""
    if secret.env is not None:
        value = os.environ.get(secret.env)
        if not value:
            raise ConfigError(f"{where}: environment variable {secret.env} is not set")
        return value.encode()
    assert secret.file is not None
    try:
        return secret.file.read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {secret.file}: {exc.strerror}") from exc


def tls_files(tls: Tls, where: str) -> TlsFiles:
    """The listener's certificate chain, key and client CA, read now and followed while
    it runs (runtime/tls_files.py)."""
    for path in (tls.cert_file, tls.key_file, tls.client_ca_file):
        if path is None:
            continue
        try:
            path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read {path}: {exc.strerror}") from exc
    try:
        files = TlsFiles(tls.cert_file, tls.key_file, tls.client_ca_file, where=where)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{where}: cannot load certificates: {exc}") from exc
    return files


class Fetchers:
    """Fetchers for remote key sets, sharing one aiohttp session that this object owns."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        # Introspection sessions by connection limit: reloads reuse them.
        self._limited: dict[int, aiohttp.ClientSession] = {}

    def session(self, limit: int) -> aiohttp.ClientSession:
        if limit not in self._limited:
            connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit)
            self._limited[limit] = aiohttp.ClientSession(connector=connector)
        return self._limited[limit]

    def _shared(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    def __call__(self, settings: RemoteJwks, trust: ssl.SSLContext | None) -> Fetcher:
        return AiohttpFetcher(
            self._shared(),
            timeout_s=settings.timeout,
            connect_timeout_s=settings.connect_timeout,
            max_bytes=settings.max_bytes,
            ssl_context=trust,
        )

    async def close(self) -> None:
        sessions = [*self._limited.values(), *([self._session] if self._session else [])]
        self._session = None
        self._limited.clear()
        for session in sessions:
            await session.close()
