"""OIDC discovery: the issuer's /.well-known/openid-configuration names its jwks_uri.

A document that names another issuer is ignored (it could point at anyone's keys), and the
jwks_uri must be fetchable under the same rules as a configured one. When discovery fails
after it once worked, the last jwks_uri stays in use.
"""

from __future__ import annotations

import logging

from authz.core.errors import JwksError
from authz.keys.fetch import Fetcher, check_fetch_uri
from authz.keys.jwks import parse_json

log = logging.getLogger(__name__)


class Discovery:
    def __init__(self, url: str, issuer: str, *, allow_insecure: bool, provider: str) -> None:
        self.document_url = url.rstrip("/") + "/.well-known/openid-configuration"
        self.issuer = issuer
        self.allow_insecure = allow_insecure
        self.provider = provider
        self.jwks_uri: str | None = None  # the last one discovered

    async def discover(self, fetch: Fetcher) -> str:
        """The jwks_uri, fresh, or the last one when discovery fails now; JwksError when it
        never worked."""
        try:
            self.jwks_uri = await self._fetch(fetch)
        except JwksError:
            if self.jwks_uri is None:
                raise
            log.warning(
                "OIDC discovery for provider %s failed; keeping the last jwks_uri", self.provider
            )
        return self.jwks_uri

    async def _fetch(self, fetch: Fetcher) -> str:
        result = await fetch(self.document_url)
        if result.body is None:
            raise JwksError("discovery answered 304 to an unconditional request")
        document = parse_json(result.body, "discovery document")
        if not isinstance(document, dict):
            raise JwksError("the discovery document is not a JSON object")
        if document.get("issuer") != self.issuer:
            raise JwksError("the discovery document names another issuer")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise JwksError("the discovery document has no jwks_uri")
        try:
            return check_fetch_uri(jwks_uri, allow_insecure=self.allow_insecure)
        except ValueError as exc:
            raise JwksError(f"discovery jwks_uri refused: {exc}") from exc
