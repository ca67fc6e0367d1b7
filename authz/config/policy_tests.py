"""The schema of a policy test file (``authz test``): the config it tests and its cases,
each a request, the claims of the token it carries, and the answer expected."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, JsonValue, ValidationError, model_validator

from authz.config.base import ConfigError, Model


class CaseRequest(Model):
    method: str = "GET"
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
    each case starts on."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text") from exc
    loader = _StrictLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a policy test file is a mapping with config and cases")
    try:
        tests = PolicyTests.model_validate(data)
    except ValidationError as exc:
        lines = [
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors(include_url=False, include_input=False)
        ]
        raise ConfigError(f"{path}: invalid policy tests:\n  " + "\n  ".join(lines)) from exc
    config = tests.config if tests.config.is_absolute() else path.parent / tests.config
    return tests.model_copy(update={"config": config}), _case_lines(root, len(tests.cases))


class _StrictLoader(yaml.SafeLoader):
    """A second key of one name in a mapping is an error: one of the two would be lost."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            if isinstance(key, str | int | float | bool):
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _case_lines(root: Any, count: int) -> list[int]:
    for key, value in getattr(root, "value", []):
        if getattr(key, "value", None) == "cases" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return [0] * count
