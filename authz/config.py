"""The configuration file: typed, frozen, validated once.

Unknown keys are errors everywhere: a typo must never silently weaken a policy.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from authz.errors import ConfigError

SUPPORTED_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512")
HEADER_NAME = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]+$")
# Headers authz must never be asked to overwrite or strip: Envoy refuses or mishandles them.
RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})

PositiveSeconds = Annotated[float, Field(gt=0)]
HTTP_METHODS = frozenset(
    [
        "GET",
        "HEAD",
        "POST",
        "PUT",
        "DELETE",
        "CONNECT",
        "OPTIONS",
        "TRACE",
        "PATCH",
        "PROPFIND",
        "PROPPATCH",
        "MKCOL",
        "COPY",
        "MOVE",
        "LOCK",
        "UNLOCK",
        "REPORT",
        "SEARCH",
        "PURGE",
    ]
)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _header_name(value: str) -> str:
    name = value.strip().lower()
    if not HEADER_NAME.match(name) or name.startswith(":") or name in RESERVED_HEADERS:
        raise ValueError(f"not a usable header name: {value!r}")
    return name


def _address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port, got {value!r}")
    return value


class Listen(_Model):
    grpc: str = "127.0.0.1:9001"
    http: str = "127.0.0.1:9090"

    _check = field_validator("grpc", "http")(_address)


LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def check_fetch_uri(value: str, *, allow_insecure: bool) -> str:
    """An http(s) URI; plain http only for loopback hosts or with allow_insecure."""
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"must be an http(s):// URL, got {value!r}")
    host = parts.hostname
    loopback = host in LOOPBACK_HOSTS or host.startswith("127.")
    if parts.scheme == "http" and not (loopback or allow_insecure):
        raise ValueError("must use https (http is allowed for loopback or with allow_insecure)")
    return value


class RemoteJwks(_Model):
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


class FileJwks(_Model):
    path: Path
    reload_interval: PositiveSeconds = 5.0  # how often the file is checked for changes


class Jwks(_Model):
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


class HeaderSource(_Model):
    name: str
    value_prefix: str = ""

    _name = field_validator("name")(_header_name)


class ClaimToHeader(_Model):
    header: str
    claim: str = Field(min_length=1)

    _name = field_validator("header")(_header_name)


class Provider(_Model):
    issuer: str = Field(min_length=1)
    audiences: list[str] = Field(min_length=1)
    jwks: Jwks
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"], min_length=1)
    clock_skew: float = Field(default=60.0, ge=0, le=3600)
    require_expiration: bool = True
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
        return None if value is None else _header_name(value)

    @model_validator(mode="after")
    def _has_source(self) -> Provider:
        if not (self.from_headers or self.from_params or self.from_cookies):
            raise ValueError("at least one of from_headers, from_params, from_cookies is required")
        return self

    def identity_headers(self) -> tuple[str, ...]:
        """Headers this provider may inject, which a client must never be able to send."""
        names = [h.header for h in self.claim_to_headers]
        if self.forward_payload_header:
            names.append(self.forward_payload_header)
        return tuple(names)


class Match(_Model):
    prefix: str | None = None
    path: str | None = None
    methods: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_path_kind(self) -> Match:
        if self.prefix is not None and self.path is not None:
            raise ValueError("use either prefix or path, not both")
        for value in (self.prefix, self.path):
            if value is not None and not value.startswith("/"):
                raise ValueError("prefix and path must start with '/'")
        return self

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, value: list[str]) -> list[str]:
        methods = [m.upper() for m in value]
        unknown = [m for m in methods if m not in HTTP_METHODS]
        if unknown:
            # A misspelt method makes a rule never match, so requests fall through to a later,
            # possibly looser rule.
            raise ValueError(f"unknown HTTP method(s) {unknown}")
        return methods


OPERATORS = ("equals", "one_of", "contains", "contains_any", "contains_all", "matches", "exists")


class ClaimCondition(_Model):
    """One condition on one claim; exactly one operator."""

    claim: str = Field(min_length=1)
    equals: Any = None
    one_of: list[Any] | None = None
    contains: Any = None
    contains_any: list[Any] | None = None
    contains_all: list[Any] | None = None
    matches: str | None = None
    exists: bool | None = None

    @model_validator(mode="after")
    def _exactly_one_operator(self) -> ClaimCondition:
        given = [op for op in OPERATORS if op in self.model_fields_set]
        if len(given) != 1:
            raise ValueError(f"exactly one operator is required, one of: {', '.join(OPERATORS)}")
        return self

    @field_validator("matches")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from exc
        return value

    @property
    def operator(self) -> str:
        return next(op for op in OPERATORS if op in self.model_fields_set)


class Requires(_Model):
    """Exactly one of: ``provider``, ``any`` (a token from one of these), ``allow_missing``
    (no token passes; a token that is sent must be valid)."""

    provider: str | None = None
    any: list[str] | None = Field(default=None, min_length=1)
    allow_missing: str | list[str] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Requires:
        given = [k for k in ("provider", "any", "allow_missing") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("exactly one of provider, any or allow_missing is required")
        return self

    @property
    def providers(self) -> tuple[str, ...]:
        if self.provider is not None:
            return (self.provider,)
        if self.any is not None:
            return tuple(self.any)
        missing = self.allow_missing
        return (missing,) if isinstance(missing, str) else tuple(missing or ())

    @property
    def optional(self) -> bool:
        return self.allow_missing is not None


class Rule(_Model):
    name: str | None = None
    match: Match = Field(default_factory=Match)
    public: bool = False
    requires: Requires | None = None
    claims: list[ClaimCondition] = Field(default_factory=list)

    @model_validator(mode="after")
    def _public_or_requires(self) -> Rule:
        if self.public and self.requires is not None:
            raise ValueError("a rule is either public: true or has requires, not both")
        if not self.public and self.requires is None:
            raise ValueError(
                "a rule needs requires (provider, any or allow_missing) or public: true"
            )
        if self.public and self.claims:
            raise ValueError("a public rule cannot have claim conditions")
        return self


class Config(_Model):
    listen: Listen = Field(default_factory=Listen)
    providers: dict[str, Provider] = Field(default_factory=dict)
    nested_claim_delimiter: str = Field(default=".", min_length=1)
    rules: list[Rule] = Field(min_length=1)
    shutdown_grace: PositiveSeconds = 10.0
    startup_wait: float = Field(default=0.0, ge=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _references(self) -> Config:
        for index, rule in enumerate(self.rules):
            for name in rule.requires.providers if rule.requires else ():
                if name not in self.providers:
                    raise ValueError(f"rules.{index}.requires: unknown provider {name!r}")
        names = [r.name for r in self.rules if r.name]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"rules: duplicate rule names {duplicates}")
        return self

    def rule_name(self, index: int) -> str:
        return self.rules[index].name or str(index)


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


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
            where = _location(err["loc"])
            lines.append(f"{where}: {message}" if where else message)
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from exc


def load_config(path: str | Path) -> Config:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    config = parse_config(data)
    base = Path(path).resolve().parent
    # Relative JWKS file paths are relative to the config file, not the working directory.
    providers = {}
    for name, provider in config.providers.items():
        jwks = provider.jwks
        if jwks.file is not None and not jwks.file.path.is_absolute():
            jwks = jwks.model_copy(
                update={"file": jwks.file.model_copy(update={"path": base / jwks.file.path})}
            )
        remote = jwks.remote
        if remote is not None and remote.ca_file is not None and not remote.ca_file.is_absolute():
            jwks = jwks.model_copy(
                update={"remote": remote.model_copy(update={"ca_file": base / remote.ca_file})}
            )
        provider = provider.model_copy(update={"jwks": jwks})
        providers[name] = provider
    return config.model_copy(update={"providers": providers})
