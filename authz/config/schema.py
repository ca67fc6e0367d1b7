"""The configuration file: typed, frozen, validated once.

Unknown keys are errors everywhere: a typo must never silently weaken a policy.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import ssl
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from authz.config.rules import TEMPLATE_PARAM, ClaimToHeader, Mode, Model, Rule, header_name
from authz.core.errors import ConfigError
from authz.core.paths import check_rule_path

ASYMMETRIC_ALGORITHMS = (
    *("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"),
)
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
SUPPORTED_ALGORITHMS = ASYMMETRIC_ALGORITHMS + HMAC_ALGORITHMS

PositiveSeconds = Annotated[float, Field(gt=0)]
_LOWER_HEX_ESCAPE = re.compile(r"%(?:[0-9A-Fa-f][a-f]|[a-f][0-9A-Fa-f])")


def _address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port, got {value!r}")
    return value


class Tls(Model):
    """A listener's certificate and key; with client_ca_file, clients must present a
    certificate that CA signed (mutual TLS between Envoy and authz)."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None

    def _read(self, path: Path) -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"tls: cannot read {path}: {exc.strerror}") from exc

    def pem(self) -> tuple[bytes, bytes, bytes | None]:
        """(certificate chain, private key, client CA bundle or None), as PEM bytes."""
        ca = self._read(self.client_ca_file) if self.client_ca_file else None
        return self._read(self.cert_file), self._read(self.key_file), ca

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.cert_file, self.key_file)
            if self.client_ca_file is not None:
                context.load_verify_locations(cafile=self.client_ca_file)
                context.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"tls: cannot load certificates: {exc}") from exc
        return context


class HttpAuthz(Model):
    """The HTTP authorization endpoint, for proxies that ask over HTTP."""

    listen: str
    # Which headers say what the client asked for, and so are trusted for it:
    # envoy: the request itself (Envoy http_service); nginx: X-Original-URI and
    # X-Original-Method (auth_request); traefik: X-Forwarded-Method/-Uri/-Host (Traefik
    # forwardAuth, Caddy forward_auth).
    original_request: Literal["envoy", "nginx", "traefik"] = "envoy"
    path_prefix: str = ""  # Envoy http_service path_prefix, removed from the path

    _check = field_validator("listen")(_address)


class Listen(Model):
    grpc: str = "127.0.0.1:9001"
    http: str = "127.0.0.1:9090"
    grpc_tls: Tls | None = None
    http_tls: Tls | None = None

    _check = field_validator("grpc", "http")(_address)


class DecisionLogSettings(Model):
    """One structured line per decision (see authz/decision_log.py)."""

    enabled: bool = False
    format: Literal["json", "text"] = "json"
    level: Literal["DEBUG", "INFO", "WARNING"] = "INFO"
    allow_sample_rate: float = Field(default=1.0, ge=0, le=1)  # denials are always logged
    log_subject: bool = False  # add the token's sub; no other claim is ever logged


class PathSettings(Model):
    """How request paths are read (see authz/paths.py)."""

    # refuse: any ";" in a path is invalid_path (Tomcat, Jetty and Spring cut ";x=1" off a
    # segment, so /admin;x=1 would slip past a rule for /admin); literal: ";" is ordinary
    # data, safe only for upstreams that never treat it specially.
    semicolons: Literal["refuse", "literal"] = "refuse"
    ignore_case: bool = False  # the default of every rule's match.ignore_case


class TokenCacheSettings(Model):
    """Verified tokens kept so a repeated token skips parsing and signature checks."""

    max_entries: int = Field(default=100_000, ge=0)  # 0 turns the cache off
    max_bytes: int = Field(default=64 << 20, gt=0)


class Limits(Model):
    """Bounds on what one check may cost."""

    max_request_bytes: int = Field(default=1 << 20, ge=4096)  # gRPC max receive message size
    max_headers: int = Field(default=200, gt=0)  # more request headers: 431
    max_header_bytes: int = Field(default=96 * 1024, gt=0)  # names + values, more: 431
    max_concurrent_checks: int = Field(default=2000, gt=0)  # more in flight: 503 at once


def check_fetch_uri(value: str, *, allow_insecure: bool) -> str:
    """An http(s) URI; plain http only for loopback hosts or with allow_insecure."""
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"must be an http(s):// URL, got {value!r}")
    host = parts.hostname
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"  # a name that merely starts with 127. is not loopback
    if parts.scheme == "http" and not (loopback or allow_insecure):
        raise ValueError("must use https (http is allowed for loopback or with allow_insecure)")
    return value


class RemoteJwks(Model):
    """A JWKS fetched over HTTP(S), directly (``uri``) or through OIDC ``discovery``."""

    allow_insecure: bool = False  # declared first: the URL checks below read it
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

    @field_validator("uri", "discovery")
    @classmethod
    def _fetchable(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        return check_fetch_uri(value, allow_insecure=bool(info.data.get("allow_insecure")))

    @model_validator(mode="before")
    @classmethod
    def _interval_defaults(cls, data: Any) -> Any:
        # Unset bounds follow a short refresh_interval, so {refresh_interval: 2} just works.
        if isinstance(data, dict) and isinstance(data.get("refresh_interval"), int | float):
            interval = data["refresh_interval"]
            data = dict(data)
            data.setdefault("min_refresh_interval", min(30.0, interval))
            data.setdefault("max_refresh_interval", max(3600.0, interval))
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


class SharedSecret(Model):
    """An HMAC secret for HS256/384/512, read from a file or an environment variable."""

    file: Path | None = None
    env: str | None = None
    kid: str | None = None  # when set, tokens must name it; when not, their kid is ignored

    @model_validator(mode="after")
    def _one(self) -> SharedSecret:
        if (self.file is None) == (self.env is None):
            raise ValueError("exactly one of file or env is required")
        return self

    def read(self) -> bytes:
        """The secret's bytes (a trailing newline in a file is not part of it)."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if not value:
                raise ConfigError(f"shared_secret: environment variable {self.env} is not set")
            return value.encode()
        assert self.file is not None
        try:
            return self.file.read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            raise ConfigError(f"shared_secret: cannot read {self.file}: {exc.strerror}") from exc


class Provider(Model):
    issuer: str = Field(min_length=1)
    audiences: list[str] = Field(min_length=1)
    jwks: Jwks | None = None
    shared_secret: SharedSecret | None = None  # instead of jwks, for HS* algorithms only
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

    @field_validator("algorithms")
    @classmethod
    def _known_algorithms(cls, value: list[str]) -> list[str]:
        for alg in value:
            if alg.lower() == "none":
                raise ValueError("'none' is never accepted")
            if alg not in SUPPORTED_ALGORITHMS:
                raise ValueError(
                    f"unsupported algorithm {alg!r}; supported: {', '.join(SUPPORTED_ALGORITHMS)}"
                )
        return value

    @field_validator("forward_payload_header")
    @classmethod
    def _payload_header(cls, value: str | None) -> str | None:
        return None if value is None else header_name(value)

    @model_validator(mode="after")
    def _keys(self) -> Provider:
        if (self.jwks is None) == (self.shared_secret is None):
            raise ValueError("exactly one of jwks or shared_secret is required")
        hmac = [a for a in self.algorithms if a in HMAC_ALGORITHMS]
        if self.shared_secret is not None and len(hmac) != len(self.algorithms):
            raise ValueError("a shared_secret provider accepts only HS256, HS384 or HS512")
        if self.jwks is not None and hmac:
            # Never verify HMAC with a key from a JWKS: that is algorithm confusion.
            raise ValueError(f"{hmac} need a shared_secret, not a jwks")
        return self

    @model_validator(mode="after")
    def _discovery_from_issuer(self) -> Provider:
        if self.jwks is not None and self.jwks.discovery:
            try:
                check_fetch_uri(self.issuer, allow_insecure=False)
            except ValueError as exc:
                raise ValueError(f"jwks.discovery: true needs an https issuer: {exc}") from exc
        return self

    @model_validator(mode="after")
    def _has_source(self) -> Provider:
        if not (self.from_headers or self.from_params or self.from_cookies):
            raise ValueError("at least one of from_headers, from_params, from_cookies is required")
        return self


class Config(Model):
    listen: Listen = Field(default_factory=Listen)
    http_authz: HttpAuthz | None = None
    limits: Limits = Field(default_factory=Limits)
    token_cache: TokenCacheSettings = Field(default_factory=TokenCacheSettings)
    decision_log: DecisionLogSettings = Field(default_factory=DecisionLogSettings)
    providers: dict[str, Provider] = Field(default_factory=dict)
    nested_claim_delimiter: str = Field(default=".", min_length=1)
    rules: list[Rule] = Field(min_length=1)
    shutdown_grace: PositiveSeconds = 10.0
    startup_wait: float = Field(default=0.0, ge=0)
    workers: int = Field(default=1, ge=1, le=64)  # processes sharing the ports (SO_REUSEPORT)
    paths: PathSettings = Field(default_factory=PathSettings)
    # X-HTTP-Method-Override and friends naming another method: refuse (400 method_override),
    # or judge the request under both methods and allow only when both are allowed.
    method_override: Literal["refuse", "judge_both"] = "refuse"
    mode: Mode = "enforce"  # dry_run: allow everything, record what would have been denied
    expose_reasons: bool = False  # tell clients which rule and condition denied them
    max_header_value_bytes: int = Field(default=8192, gt=0)  # longer claim headers are dropped
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _references(self) -> Config:
        for index, rule in enumerate(self.rules):
            where = f"rules.{index} ({self.rule_name(index)})"
            providers = rule.requires.providers if rule.requires else ()
            for name in providers:
                if name not in self.providers:
                    raise ValueError(f"{where}.requires: unknown provider {name!r}")
            for name in _condition_providers(rule.claims):
                if name not in providers:
                    raise ValueError(
                        f"{where}.claims: provider {name!r} is not required by the rule"
                    )
        if self.http_authz is not None:
            for index, rule in enumerate(self.rules):
                if rule.match.context or _uses_context(rule.claims):
                    # The HTTP endpoint never receives context_extensions: such a rule would
                    # never match there, and requests would fall through to a later rule.
                    raise ValueError(
                        f"rules.{index} ({self.rule_name(index)}): matches on Envoy's "
                        "context_extensions, which http_authz never receives"
                    )
        self._check_rule_paths()
        self._check_token_locations()
        names = [r.name for r in self.rules if r.name]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"rules: duplicate rule names {duplicates}")
        return self

    def _check_rule_paths(self) -> None:
        literal = self.paths.semicolons == "literal"
        for index, rule in enumerate(self.rules):
            if rule.match.regex is not None and _LOWER_HEX_ESCAPE.search(rule.match.regex):
                # Request paths reach rules with upper-case hex digits (paths.py).
                raise ValueError(
                    f"rules.{index} ({self.rule_name(index)}).match.regex: write "
                    "percent-escapes with upper-case hex digits (%3A, not %3a): paths are "
                    "matched that way"
                )
            for kind in ("prefix", "path", "path_separated_prefix", "template"):
                value = getattr(rule.match, kind)
                if value is None:
                    continue
                text = TEMPLATE_PARAM.sub("x", value) if kind == "template" else value
                try:
                    check_rule_path(text, semicolons_literal=literal)
                except ValueError as exc:
                    raise ValueError(
                        f"rules.{index} ({self.rule_name(index)}).match.{kind}: {exc}"
                    ) from None

    def _check_token_locations(self) -> None:
        # One location, two providers that disagree on forwarding: a token found there would
        # be both kept and stripped.
        seen: dict[tuple[str, str], tuple[str, bool]] = {}
        for name, provider in self.providers.items():
            locations = [
                *(("header", h.name) for h in provider.from_headers),
                *(("parameter", p) for p in provider.from_params),
                *(("cookie", c) for c in provider.from_cookies),
            ]
            for location in locations:
                other = seen.setdefault(location, (name, provider.forward))
                if other[1] != provider.forward:
                    raise ValueError(
                        f"providers {other[0]!r} and {name!r} both read the {location[0]} "
                        f"{location[1]!r} but only one has forward: true"
                    )
        if self.http_authz is None:
            return
        # What the proxies asking over HTTP can remove: no proxy removes one parameter from
        # the query, and only Envoy (an allowed_upstream_headers cookie) rewrites the Cookie
        # header. A token left there would reach the upstream on every allow.
        style = self.http_authz.original_request
        for name, provider in self.providers.items():
            if provider.forward:
                continue
            if provider.from_params:
                raise ValueError(
                    f"providers.{name}.from_params: http_authz ({style}) cannot remove a "
                    "query parameter, so the token would reach the upstream; read it from "
                    "a header, or set forward: true"
                )
            if provider.from_cookies and style != "envoy":
                raise ValueError(
                    f"providers.{name}.from_cookies: http_authz ({style}) cannot remove one "
                    "cookie, so the token would reach the upstream; read it from a header, "
                    "or set forward: true"
                )

    def rule_name(self, index: int) -> str:
        return self.rules[index].name or str(index)


def _uses_context(conditions: list[Any]) -> bool:
    for condition in conditions:
        if (condition.request or "").startswith("context.") or "request.context" in (
            condition.expr or ""
        ):
            return True
        children = [*(condition.all or ()), *(condition.any or ())]
        if condition.not_ is not None:
            children.append(condition.not_)
        if _uses_context(children):
            return True
    return False


def _condition_providers(conditions: list[Any]) -> set[str]:
    names: set[str] = set()
    for condition in conditions:
        if condition.provider:
            names.add(condition.provider)
        names |= _condition_providers([*(condition.all or ()), *(condition.any or ())])
        if condition.not_ is not None:
            names |= _condition_providers([condition.not_])
    return names


def _location(loc: tuple[int | str, ...], data: Any) -> str:
    """A dotted path to the bad key; a rule is named as well as numbered."""
    where = ".".join(str(part) for part in loc)
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        rules = data.get("rules") if isinstance(data, dict) else None
        if isinstance(rules, list) and loc[1] < len(rules) and isinstance(rules[loc[1]], dict):
            name = rules[loc[1]].get("name")
            if isinstance(name, str):
                where = where.replace(f"rules.{loc[1]}", f"rules.{loc[1]} ({name})", 1)
    return where


def parse_config(data: Any) -> Config:
    if not isinstance(data, dict):
        raise ConfigError("the configuration must be a YAML mapping")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False, include_input=False):
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = "unknown key"
            where = _location(err["loc"], data)
            lines.append(f"{where}: {message}" if where else message)
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from exc


def load_config(path: str | Path) -> Config:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:  # e.g. a write cut off in the middle of a character
        raise ConfigError(f"{path} is not UTF-8 text") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    config = parse_config(data)
    base = Path(path).resolve().parent
    providers = {name: _resolve_paths(p, base) for name, p in config.providers.items()}
    listen = config.listen.model_copy(
        update={
            name: _resolve_tls(getattr(config.listen, name), base)
            for name in ("grpc_tls", "http_tls")
        }
    )
    return config.model_copy(update={"providers": providers, "listen": listen})


def _resolve_tls(tls: Tls | None, base: Path) -> Tls | None:
    if tls is None:
        return None
    return tls.model_copy(
        update={
            name: base / value
            for name in ("cert_file", "key_file", "client_ca_file")
            if isinstance(value := getattr(tls, name), Path) and not value.is_absolute()
        }
    )


def _resolve_paths(provider: Provider, base: Path) -> Provider:
    """Relative file paths in a provider are relative to the config file, not the cwd."""

    def resolved(model: Any, field: str) -> Any:
        if model is None:
            return None
        value = getattr(model, field)
        if isinstance(value, Path) and not value.is_absolute():
            return model.model_copy(update={field: base / value})
        return model

    secret = resolved(provider.shared_secret, "file")
    jwks = provider.jwks
    if jwks is not None:
        jwks = jwks.model_copy(
            update={"file": resolved(jwks.file, "path"), "remote": resolved(jwks.remote, "ca_file")}
        )
    return provider.model_copy(update={"shared_secret": secret, "jwks": jwks})
