"""Reading claims: nested paths, and space-delimited scopes as lists."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from authz.core.model import Claims

MISSING: Any = object()
SCOPE_CLAIMS = frozenset({"scope", "scp"})


def get_claim(claims: Claims, path: Sequence[str]) -> Any:
    """Walk ``path`` into nested objects; MISSING when any step is absent.

    A space-delimited ``scope``/``scp`` string is returned as a list of scopes, split on
    the space (0x20) alone, as RFC 6749 3.3 delimits them: never on tabs, NBSP or other
    characters ``str.split()`` would also take.
    """
    value: Any = claims
    for step in path:
        if not isinstance(value, dict) or step not in value:
            return MISSING
        value = value[step]
    if path and path[-1] in SCOPE_CLAIMS and isinstance(value, str):
        return [scope for scope in value.split(" ") if scope]
    return value


def is_scope(path: tuple[str, ...]) -> bool:
    """A condition on scope/scp: its failure is RFC 6750 insufficient_scope."""
    return bool(path) and path[-1] in SCOPE_CLAIMS
