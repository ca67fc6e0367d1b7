"""Multi-tenant issuers: one provider for many issuers of one shape, such as Entra ID's
``https://login.microsoftonline.com/{tenant}/v2.0``.

The template fixes the scheme, host and every other part of the issuer; ``{tenant}`` is
one whole path segment of ``[A-Za-z0-9._-]{1,128}``, never ``.`` or ``..``. So the
tenant a token names can select only that segment: never another host, another path or
another IdP's keys. A tenant outside the allowlist is refused before any key work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from authz.core.verify import KeyLookup

PLACEHOLDER = "{tenant}"
TENANT = re.compile(r"[A-Za-z0-9._-]{1,128}")


def valid_tenant(name: str) -> bool:
    return TENANT.fullmatch(name) is not None and name not in (".", "..")


@dataclass(frozen=True, slots=True)
class IssuerTemplate:
    prefix: str  # the issuer up to the tenant segment ("https://host/")
    suffix: str  # after it ("/v2.0"), possibly empty
    allowed: frozenset[str] | None  # None: any tenant

    @classmethod
    def parse(cls, template: str, allowed: frozenset[str] | None) -> IssuerTemplate:
        prefix, _, suffix = template.partition(PLACEHOLDER)
        return cls(prefix, suffix, allowed)

    def tenant_of(self, iss: object) -> str | None:
        """The tenant an ``iss`` names, when it has the template's shape; else None."""
        if not isinstance(iss, str) or len(iss) <= len(self.prefix) + len(self.suffix):
            return None
        if not (iss.startswith(self.prefix) and iss.endswith(self.suffix)):
            return None
        tenant = iss[len(self.prefix) : len(iss) - len(self.suffix)]
        return tenant if valid_tenant(tenant) else None

    def allows(self, tenant: str) -> bool:
        return self.allowed is None or tenant in self.allowed

    def issuer(self, tenant: str) -> str:
        return f"{self.prefix}{tenant}{self.suffix}"


class TenantKeys(Protocol):
    """Each tenant's own key set (the keys layer's TenantKeySources)."""

    def keys_for(self, tenant: str) -> KeyLookup:
        """The tenant's keys, set up on first use; NoKeys when a new tenant cannot be set
        up now (creation is rate-limited)."""
        ...

    def current(self, tenant: str) -> KeyLookup | None:
        """The tenant's keys if already set up (nothing is created)."""
        ...
