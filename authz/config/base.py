"""What every config model shares: the base model, the error, and field checks that need
no knowledge of the rest of authz."""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

PositiveSeconds = Annotated[float, Field(gt=0)]
HEADER_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+.^_`|~-")
TOKEN_CHARS = HEADER_NAME_CHARS | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")  # RFC 9110 tchar
# Headers authz must never be asked to overwrite or strip: Envoy refuses or mishandles them.
RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})


class ConfigError(Exception):
    """The configuration is invalid; the message names the offending key."""


SEVERAL_PROBLEMS = "several_problems"


def several_problems(problems: list[str]) -> PydanticCustomError:
    """The error a model validator raises for several problems at once, each naming its
    own key path: check-config tells, and locates, each on its own line."""
    # pydantic puts each context value into the message in turn: "problems" first, so that
    # a "{problems}" inside the joined text (a rule may be named so) is left as it is.
    context = {"problems": tuple(problems), "joined": "; ".join(problems)}
    return PydanticCustomError(SEVERAL_PROBLEMS, "{joined}", context)


class Model(BaseModel):
    """Frozen, and unknown keys are errors: a typo must never silently weaken a policy."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


def header_name(value: str) -> str:
    name = value.strip().lower()
    if not name or not set(name) <= HEADER_NAME_CHARS or name in RESERVED_HEADERS:
        raise ValueError(f"not a usable header name: {value!r}")
    return name


# What a claim must never set: the credentials and cookies the upstream trusts, Envoy's own
# control headers, HTTP/2 pseudo-headers, hop-by-hop headers.
NOT_FROM_CLAIMS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "dpop",
        "x-forwarded-client-cert",
        "te",
        "upgrade",
        "keep-alive",
        "trailer",
    }
)


def claim_header_name(value: str) -> str:
    """A header a claim may be written to: header_name, and none of NOT_FROM_CLAIMS,
    ``x-envoy-*`` or a pseudo-header."""
    name = value.strip().lower()
    if name.startswith(":") or name.startswith("x-envoy-") or name in NOT_FROM_CLAIMS:
        raise ValueError(
            f"{value!r} must never be set from a claim: the upstream (or Envoy) trusts it "
            "as a credential or a control header"
        )
    return header_name(value)


def http_method(value: str) -> str:
    """A method as a request line can carry it: an RFC 9110 token."""
    if not value or not set(value) <= TOKEN_CHARS:
        raise ValueError(f"{value!r} is not an HTTP method (an RFC 9110 token)")
    return value


def untokenable(value: object, where: str = "") -> str | None:
    """What in ``value`` (claims as JSON or YAML parsed them) no token can carry, and
    where: a number that is not finite (JSON has none; ``1e400`` parses as infinity), a
    string that is not UTF-8 (a lone surrogate); None when there is nothing of the kind.
    Values are never shown: they may be secrets."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{where or 'the value'} is not a finite number"
    if isinstance(value, str) and not _utf8(value):
        return f"{where or 'the value'} is not UTF-8 text (a lone surrogate)"
    if isinstance(value, dict):
        for key, item in value.items():
            name = str(key).encode("utf-8", "backslashreplace").decode()
            inner = f"{where}.{name}" if where else name
            if not _utf8(str(key)):
                return f"the name {inner} is not UTF-8 text (a lone surrogate)"
            found = untokenable(item, inner)
            if found:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = untokenable(item, f"{where}[{index}]")
            if found:
                return found
    return None


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def checked_regex(pattern: str) -> str:
    """RE2 syntax only: linear-time matching, so no pattern can be catastrophic."""
    import re2  # loaded only for configs with regular expressions

    options = re2.Options()
    options.log_errors = False
    try:
        re2.compile(pattern, options)
    except re2.error as exc:
        why = exc.args[0] if exc.args else ""
        why = why.decode(errors="replace") if isinstance(why, bytes) else str(why)
        raise ValueError(f"invalid or unsupported regular expression (RE2 syntax): {why}") from exc
    return pattern


def address(value: str) -> str:
    """``host:port``; IPv6 hosts in brackets. Parsed into parts by ``split_address``."""
    split_address(value)
    return value


def split_address(value: str) -> tuple[str, int]:
    """The one parser of listen addresses: ``host:port`` -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port, got {value!r}")
    return host.strip("[]"), int(port)
