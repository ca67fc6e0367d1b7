"""The top level of the configuration file, and loading it: parse YAML, validate the
schema, name the bad key (file, line, column) in every error, resolve file paths against
the config's folder.

Checks that need the rest of authz (algorithms, fetchable URLs, rule paths, CEL) run in the
build step, authz/runtime/checks.py, which check-config and serve share.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationError, model_validator

from authz.config.base import ConfigError, Model, PositiveSeconds, several_problems
from authz.config.explain import problems
from authz.config.providers import Provider
from authz.config.rules import Mode, Rule
from authz.config.server import (
    DecisionLogSettings,
    HttpAuthz,
    Limits,
    Listen,
    PathSettings,
    Tls,
    TokenCacheSettings,
    TracingSettings,
)
from authz.config.source import SourceMap, parse_yaml
from authz.config.suggest import closest_choice

DEFAULT_DRAIN = 3.0
MAX_WORKERS = 64


class Config(Model):
    listen: Listen = Field(default_factory=Listen)
    http_authz: HttpAuthz | None = None
    limits: Limits = Field(default_factory=Limits)
    token_cache: TokenCacheSettings = Field(default_factory=TokenCacheSettings)
    decision_log: DecisionLogSettings = Field(default_factory=DecisionLogSettings)
    tracing: TracingSettings | None = None  # OpenTelemetry traces; off when absent
    providers: dict[str, Provider] = Field(default_factory=dict)
    nested_claim_delimiter: str = Field(default=".", min_length=1)
    rules: list[Rule] = Field(min_length=1)
    shutdown_grace: PositiveSeconds = 10.0
    # Part of the grace: after SIGTERM, health says NOT_SERVING while every check is still
    # answered, so that health-checking proxies move traffic away before the listeners close.
    # Not given: DEFAULT_DRAIN, or half the grace when that leaves too little of it.
    shutdown_drain: float = Field(default=DEFAULT_DRAIN, ge=0)
    startup_wait: float = Field(default=0.0, ge=0)
    workers: int = Field(
        default=1, ge=1, le=MAX_WORKERS
    )  # processes sharing the ports (SO_REUSEPORT)
    paths: PathSettings = Field(default_factory=PathSettings)
    # X-HTTP-Method-Override and friends naming another method: refuse (400 method_override),
    # or judge the request under both methods and allow only when both are allowed.
    method_override: Literal["refuse", "judge_both"] = "refuse"
    mode: Mode = "enforce"  # dry_run: allow everything, record what would have been denied
    expose_reasons: bool = False  # tell clients which rule and condition denied them
    max_header_value_bytes: int = Field(default=8192, gt=0)  # longer claim headers are dropped
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Operational logs on stderr: one JSON object per line, or human text (runtime/logs.py).
    log_format: Literal["json", "text"] = "json"
    # Where each key was written, when the config was loaded from a file (not a key).
    _source: SourceMap | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _default_drain(cls, data: Any) -> Any:
        """A grace of 4 s with no drain given is a drain of 2 s, not a refused config."""
        if isinstance(data, dict) and "shutdown_drain" not in data:
            grace = data.get("shutdown_grace")
            if (
                isinstance(grace, int | float)
                and not isinstance(grace, bool)
                and 0 < grace <= 2 * DEFAULT_DRAIN
            ):
                return {**data, "shutdown_drain": grace / 2}
        return data

    @model_validator(mode="after")
    def _unique_rule_names(self) -> Config:
        first: dict[str, int] = {}
        taken: list[str] = []
        for index, rule in enumerate(self.rules):
            if rule.name is None:
                continue
            if rule.name in first:
                taken.append(
                    f"rules.{index}: the name {rule.name!r} is taken by rules.{first[rule.name]} "
                    "(decision logs and metrics name rules: they must differ)"
                )
            else:
                first[rule.name] = index
        if taken:
            raise several_problems(taken)  # every repeat, each on its line
        return self

    @model_validator(mode="after")
    def _references(self) -> Config:
        if self.shutdown_drain >= self.shutdown_grace:
            raise ValueError(
                f"shutdown_drain ({self.shutdown_drain:g}s) must be below shutdown_grace "
                f"({self.shutdown_grace:g}s): the drain is the first part of the grace, and "
                "checks in flight when the listeners close need the rest"
            )
        for index, rule in enumerate(self.rules):
            where = f"rules.{index} ({self.rule_name(index)})"
            providers = rule.requires.providers if rule.requires else ()
            for name in providers:
                if name not in self.providers:
                    meant = closest_choice(name, sorted(self.providers))
                    raise ValueError(f"{where}.requires: unknown provider {name!r}{meant}")
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
        self._check_token_locations()
        return self

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

    @property
    def source(self) -> SourceMap | None:
        """Where each key was written: the file's, for messages that name it."""
        return self._source


def _uses_context(conditions: list[Any]) -> bool:
    """Whether a condition reads request: context.NAME. (A CEL expression's use of
    request.context is found by the build step, which parses CEL.)"""
    for condition in conditions:
        if (condition.request or "").startswith("context."):
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


def parse_config(data: Any, source: SourceMap | None = None) -> Config:
    """The config in ``data``; ``source``: where each key was written, so that errors (here
    and in the build step) say FILE:LINE:COL."""
    if not isinstance(data, dict):
        message = "the configuration must be a YAML mapping"
        raise ConfigError(source.locate(message) if source else message)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        lines = problems(exc, Config, data, source)
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from exc
    config._source = source
    return config


def read_config_text(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:  # e.g. a write cut off in the middle of a character
        raise ConfigError(f"{path} is not UTF-8 text") from exc


def load_config(path: str | Path, text: str | None = None) -> Config:
    """The config in the file at ``path``; or in ``text``, read as if it were that file's
    (relative paths in it are resolved against the folder of ``path``)."""
    if text is None:
        text = read_config_text(path)
    data, source = parse_yaml(text, str(path))
    config = parse_config(data, source)
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
    introspection = provider.introspection
    if introspection is not None:
        introspection = resolved(introspection, "ca_file").model_copy(
            update={"client_secret": resolved(introspection.client_secret, "file")}
        )
    return provider.model_copy(
        update={"shared_secret": secret, "jwks": jwks, "introspection": introspection}
    )
