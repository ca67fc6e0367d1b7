"""The configuration file: typed, frozen, validated once.

Unknown keys are errors everywhere: a typo must never silently weaken a policy.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from authz.errors import ConfigError

SUPPORTED_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512")
HEADER_NAME = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]+$")
# Headers authz must never be asked to overwrite or strip: Envoy refuses or mishandles them.
RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})

PositiveSeconds = Annotated[float, Field(gt=0)]


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


class RemoteJwks(_Model):
    uri: str
    refresh_interval: PositiveSeconds = 300.0
    timeout: PositiveSeconds = 5.0

    @field_validator("uri")
    @classmethod
    def _http_uri(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s):// URI")
        return value


class Jwks(_Model):
    """Exactly one of ``inline``, ``file`` or ``remote``."""

    inline: str | dict[str, Any] | None = None
    file: Path | None = None
    remote: RemoteJwks | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Jwks:
        given = [k for k in ("inline", "file", "remote") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("exactly one of inline, file or remote is required")
        return self

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
    audiences: list[str] = Field(default_factory=list)
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
    def _upper(cls, value: list[str]) -> list[str]:
        return [m.upper() for m in value]


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
    provider: str


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
            raise ValueError("a rule needs requires: {provider: NAME} or public: true")
        if self.public and self.claims:
            raise ValueError("a public rule cannot have claim conditions")
        return self


class Config(_Model):
    listen: Listen = Field(default_factory=Listen)
    providers: dict[str, Provider] = Field(default_factory=dict)
    nested_claim_delimiter: str = Field(default=".", min_length=1)
    rules: list[Rule] = Field(min_length=1)
    shutdown_grace: PositiveSeconds = 10.0
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _references(self) -> Config:
        for index, rule in enumerate(self.rules):
            if rule.requires and rule.requires.provider not in self.providers:
                raise ValueError(
                    f"rules.{index}.requires.provider: unknown provider {rule.requires.provider!r}"
                )
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
        file = provider.jwks.file
        if file is not None and not file.is_absolute():
            jwks = provider.jwks.model_copy(update={"file": base / file})
            provider = provider.model_copy(update={"jwks": jwks})
        providers[name] = provider
    return config.model_copy(update={"providers": providers})
