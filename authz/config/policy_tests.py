"""The schema of a policy test file (``authz test``): the config it tests and its cases,
each a request, the claims of the token it carries, and the answer expected."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
    JsonValue,
    ValidationError,
    field_validator,
    model_validator,
)

from authz.config.base import ConfigError, Model, http_method, untokenable
from authz.config.explain import problems
from authz.config.source import parse_yaml


class CaseRequest(Model):
    method: Annotated[str, AfterValidator(http_method)] = "GET"
    path: str = "/"
    host: str = "localhost"
    headers: dict[str, str] = Field(default_factory=dict)
    context: dict[str, str] = Field(default_factory=dict)  # Envoy's context_extensions
    token: str | None = None  # sent as is where the provider reads tokens first


class DryRunExpect(Model):
    """What enforcement would have answered, under a dry-run rule or mode."""

    decision: Literal["allow", "deny"]
    reason: str | None = None


class Expect(Model):
    """What the answer must be; only the keys given are compared (``rule: null`` asks for
    no rule at all)."""

    allowed: bool | None = None
    status: int | None = Field(default=None, ge=100, le=599)
    reason: str | None = None
    rule: str | None = None
    provider: str | None = None
    # Set with these values (others may be set too): the upstream's headers on an allow,
    # the answer's headers (www-authenticate) on a deny.
    headers: dict[str, str] = Field(default_factory=dict, min_length=1)
    headers_absent: list[str] = Field(default_factory=list, min_length=1)  # not set upstream
    headers_removed: list[str] = Field(default_factory=list, min_length=1)  # from the request
    dry_run: DryRunExpect | None = None  # None given: no dry run at all

    @model_validator(mode="after")
    def _something(self) -> Expect:
        if not self.model_fields_set:
            raise ValueError("expect at least one of: " + ", ".join(Expect.model_fields))
        return self


class Case(Model):
    name: str = Field(min_length=1)
    request: CaseRequest = Field(default_factory=CaseRequest)
    # The claims of a token minted for the case (iss, aud, iat and exp filled from the
    # config unless given); no claims and no request.token: the request has no token.
    claims: dict[str, JsonValue] | None = None
    provider: str | None = None  # the token's provider; default: the matched rule's
    expect: Expect

    @field_validator("claims")
    @classmethod
    def _carried_in_a_token(
        cls, claims: dict[str, JsonValue] | None
    ) -> dict[str, JsonValue] | None:
        problem = untokenable(claims)
        if problem is not None:
            raise ValueError(f"{problem}: no token can carry it")
        return claims

    @model_validator(mode="after")
    def _one_token(self) -> Case:
        if self.claims is not None and self.request.token is not None:
            raise ValueError("give claims or request.token, not both")
        if self.provider is not None and self.claims is None and self.request.token is None:
            raise ValueError("provider names the token's provider: give claims or a token")
        return self


class PolicyTests(Model):
    config: Path  # relative to the test file's folder
    cases: list[Case] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> PolicyTests:
        names = [case.name for case in self.cases]
        twins = sorted({name for name in names if names.count(name) > 1})
        if twins:
            raise ValueError(f"cases: duplicate names {twins}")
        return self


def load_policy_tests(path: Path) -> tuple[PolicyTests, list[int]]:
    """The tests in ``path`` (the config path resolved against its folder), and the line
    each case starts on. Errors name FILE:LINE:COL, as check-config's do."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text") from exc
    data, source = parse_yaml(text, str(path))
    if source.duplicates:
        loc, first = source.duplicates[0]
        raise ConfigError(
            f"{source.at(loc)}: {'.'.join(map(str, loc))}: written twice (first at {first}); "
            "YAML would keep only the last"
        )
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a policy test file is a mapping with config and cases")
    try:
        tests = PolicyTests.model_validate(data)
    except ValidationError as exc:
        found = problems(exc, PolicyTests, data, source)
        raise ConfigError("invalid policy tests:\n  " + "\n  ".join(found)) from exc
    config = tests.config if tests.config.is_absolute() else path.parent / tests.config
    lines = [source.at(("cases", index)).line for index in range(len(tests.cases))]
    return tests.model_copy(update={"config": config}), lines
