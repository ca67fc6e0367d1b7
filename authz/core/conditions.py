"""Claim and request conditions: a tree built once (by the build step) and evaluated per check.

A failed evaluation returns a Failure naming where in the config the condition sits
and what it tested (operator and claim path), never the value it saw.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from authz.core.claims import MISSING, get_claim
from authz.core.model import Claims, RequestAttributes
from authz.core.operators import Test

if TYPE_CHECKING:  # the CEL library loads only for configs that use it
    from authz.core.cel_strict import StrictProgram


@dataclass(frozen=True, slots=True)
class Failure:
    where: str  # position in the config, e.g. "claims[1].any"
    what: str  # operator and subject, e.g. "contains on realm_access.roles"
    scope: bool  # the condition was about scope/scp: RFC 6750 insufficient_scope
    indeterminate: bool = False  # missing, null or ill-typed input, not a plain "no"

    def __str__(self) -> str:
        return f"{self.where} ({self.what})"


@dataclass(slots=True)
class EvalContext:
    """What conditions can see for one check."""

    claims: Mapping[str, Claims]  # verified claims by provider
    primary: str  # the provider whose claims a condition sees by default
    request: RequestAttributes
    path: str  # as check_path accepted it: the request path, without the query
    params: Mapping[str, str] = field(default_factory=dict)  # from a path template
    tenants: Mapping[str, str] = field(default_factory=dict)  # by provider, multi-tenant ones

    def cel_activation(self, variables: frozenset[str], *, headers: bool) -> dict[str, Any]:
        """Only the variables an expression uses: converting them to CEL is most of its cost."""
        activation: dict[str, Any] = {}
        if "jwt" in variables:
            activation["jwt"] = self.claims.get(self.primary, {})
        if "claims" in variables:
            activation["claims"] = self.claims
        if "tenant" in variables:
            activation["tenant"] = self.tenants.get(self.primary)
        if "request" in variables:
            activation["request"] = {
                "method": self.request.method,
                "host": self.request.hostname,
                "path": self.path,
                "headers": self.request.headers if headers else {},
                "params": self.params,
                "context": self.request.context,
            }
        return activation


class Node(Protocol):
    def check(self, ctx: EvalContext) -> Failure | None: ...


Getter = Callable[[EvalContext], Any]


def claim_subject(path: tuple[str, ...], provider: str | None) -> Getter:
    """Read the claim at ``path`` of ``provider``'s token (default: the primary one)."""

    def claim(ctx: EvalContext) -> Any:
        return get_claim(ctx.claims.get(provider or ctx.primary, {}), path)

    return claim


def tenant_subject(provider: str | None) -> Getter:
    """The tenant of ``provider``'s token (default: the primary one); missing when the
    provider is not multi-tenant."""
    return lambda ctx: ctx.tenants.get(provider or ctx.primary, MISSING)


def request_subject(attribute: str) -> Getter:
    """method, host, path, header.NAME, query.NAME, param.NAME or context.NAME."""
    if attribute == "method":
        return lambda ctx: ctx.request.method.upper()
    if attribute == "host":
        return lambda ctx: ctx.request.hostname
    if attribute == "path":
        return lambda ctx: ctx.path
    kind, _, name = attribute.partition(".")
    if kind == "header":
        return lambda ctx: ctx.request.headers.get(name, MISSING)
    if kind == "query":
        return lambda ctx: ctx.request.query_params.get(name, MISSING)
    if kind == "param":
        return lambda ctx: ctx.params.get(name, MISSING)
    return lambda ctx: ctx.request.context.get(name, MISSING)


@dataclass(frozen=True, slots=True)
class Leaf:
    where: str
    what: str
    scope: bool
    read: Getter
    test: Test
    wants: str = ""  # the configured value, as the config writes it, for explanations

    def check(self, ctx: EvalContext) -> Failure | None:
        verdict = self.test(self.read(ctx), ctx)
        if verdict is True:
            return None
        return Failure(self.where, self.what, self.scope, indeterminate=verdict is None)


@dataclass(frozen=True, slots=True)
class AllOf:
    children: tuple[Node, ...]

    def check(self, ctx: EvalContext) -> Failure | None:
        first: Failure | None = None
        for child in self.children:
            failure = child.check(ctx)
            if failure is not None and not failure.indeterminate:
                return failure  # a plain "no" decides, even after an indeterminate child
            first = first or failure
        return first


@dataclass(frozen=True, slots=True)
class AnyOf:
    where: str
    children: tuple[Node, ...]

    def check(self, ctx: EvalContext) -> Failure | None:
        failures = []
        for child in self.children:
            failure = child.check(ctx)
            if failure is None:
                return None
            failures.append(failure)
        return Failure(
            self.where,
            "none of the alternatives held",
            all(f.scope for f in failures),
            indeterminate=any(f.indeterminate for f in failures),
        )


@dataclass(frozen=True, slots=True)
class Not:
    where: str
    child: Node

    def check(self, ctx: EvalContext) -> Failure | None:
        failure = self.child.check(ctx)
        if failure is None:
            return Failure(self.where, "the negated condition held", False)
        if failure.indeterminate:
            # not(missing claim) is not a pass: the negation cannot be judged either.
            return Failure(self.where, f"cannot negate: {failure.what}", False, indeterminate=True)
        return None


@dataclass(frozen=True, slots=True)
class Expr:
    where: str
    program: StrictProgram  # compiled once; == != in fail on a type mismatch
    variables: frozenset[str]
    uses_headers: bool
    source: str = ""  # the expression as configured, for explanations

    def check(self, ctx: EvalContext) -> Failure | None:
        try:
            activation = ctx.cel_activation(self.variables, headers=self.uses_headers)
            result = self.program.execute(activation)
        # A CEL runtime error (a missing key; a comparison between different types, which
        # cel_strict makes an error) fails the condition, under `not` too.
        except Exception:
            return Failure(self.where, "CEL expression raised an error", False, indeterminate=True)
        if result is True:
            return None
        if result is False:
            return Failure(self.where, "CEL expression was false", False)
        return Failure(self.where, "CEL expression was not a boolean", False, indeterminate=True)


def expression(where: str, source: str) -> Expr:
    """A CEL condition, compiled once with strict comparisons; ValueError if invalid."""
    from authz.core.cel_strict import compile_strict  # CEL loads only for configs using it

    program = compile_strict(source)
    # Converting request headers to CEL costs more than the rest: only when mentioned.
    return Expr(where, program, frozenset(program.variables()), "headers" in source, source)
