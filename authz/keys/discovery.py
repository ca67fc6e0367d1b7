"""OIDC discovery: the issuer's /.well-known/openid-configuration names its jwks_uri (and
its introspection_endpoint).

A document that names another issuer is ignored (it could point at anyone's keys), and the
URL must be fetchable under the same rules as a configured one. When discovery fails
after it once worked, the last URL stays in use.
"""

from __future__ import annotations

import logging

from authz.core.errors import JwksError
from authz.keys.fetch import Fetcher, check_fetch_uri
from authz.keys.jwks import parse_json

log = logging.getLogger(__name__)


class Discovery:
    def __init__(
        self,
        url: str,
        issuer: str,
        *,
        allow_insecure: bool,
        provider: str,
        member: str = "jwks_uri",
    ) -> None:
        """``member``: the document's member that names the URL wanted."""
        self.document_url = url.rstrip("/") + "/.well-known/openid-configuration"
        self.issuer = issuer
        self.allow_insecure = allow_insecure
        self.provider = provider
        self.member = member
        self.jwks_uri: str | None = None  # the last one discovered (of ``member``)

    async def discover(self, fetch: Fetcher) -> str:
        """The jwks_uri, fresh, or the last one when discovery fails now; JwksError when it
        never worked."""
        try:
            self.jwks_uri = await self._fetch(fetch)
        except JwksError:
            if self.jwks_uri is None:
                raise
            log.warning(
                "OIDC discovery for provider %s failed; keeping the last %s",
                self.provider,
                self.member,
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
        url = document.get(self.member)
        if not isinstance(url, str):
            raise JwksError(f"the discovery document has no {self.member}")
        try:
            return check_fetch_uri(url, allow_insecure=self.allow_insecure)
        except ValueError as exc:
            raise JwksError(f"discovery {self.member} refused: {exc}") from exc
