"""A real, certified OpenID Provider for the tests: panva's oidc-provider (npm), run by
tests/idp/server.mjs on a free loopback port. Tokens come from its token endpoint, as a
client gets them (client_credentials, resource indicators), and it introspects and
revokes them."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from dev.stack import free_port
from tests.support.dpop import make_proof
from tests.support.servers import stop_process
from tests.support.tokens import Signer, make_signer

IDP_FOLDER = Path(__file__).resolve().parent.parent / "idp"
RESOURCE = "https://api.example"  # resource indicators are RESOURCE/<kind>
# The resources it serves: JWT access tokens (typ at+jwt) signed with each algorithm, and
# opaque ones that only introspection can judge.
ALGORITHMS = ("RS256", "PS256", "ES256", "EdDSA")
JWT_RESOURCES = {alg: f"{RESOURCE}/{alg.lower()}" for alg in ALGORITHMS}
OPAQUE_RESOURCE = f"{RESOURCE}/opaque"
CLIENT = ("app", "app-secret-9f8e7d6c5b4a39281706f5e4d3c2b1a0")
OTHER_CLIENT = ("reports", "reports-secret-0a1b2c3d4e5f60718293a4b5c6d7e8f9")
INTROSPECTOR = ("authz", "authz-secret-11223344556677889900aabbccddeeff")
MTLS_CLIENT = ("mtls-app", "mtls-app-secret-5f4e3d2c1b0a99887766554433221100")


class OpenIdProvider:
    """oidc-provider serving one issuer per tenant prefix ("" is the host's root)."""

    def __init__(self, workdir: Path, tenants: tuple[str, ...] = ("",)) -> None:
        self.workdir = workdir
        self.tenants = tenants
        self.port = free_port()
        self.generation = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._keys_file = workdir / "idp-private-keys.json"

    def issuer(self, tenant: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{tenant}"

    def start(self, generation: int = 1) -> None:
        """Start with signing keys of ``generation`` (kid "<alg>-g<generation>")."""
        if shutil.which("node") is None or not (IDP_FOLDER / "node_modules").is_dir():
            raise RuntimeError("the OpenID Provider needs Node.js and `make idp` (npm ci)")
        self.generation = generation
        settings = {
            "port": self.port,
            "generation": generation,
            "tenants": list(self.tenants),
            "clients": [{"client_id": c, "client_secret": s} for c, s in (CLIENT, OTHER_CLIENT)],
            "introspector": {"client_id": INTROSPECTOR[0], "client_secret": INTROSPECTOR[1]},
            "mtls_client": {"client_id": MTLS_CLIENT[0], "client_secret": MTLS_CLIENT[1]},
            "resources": {
                **{uri: {"format": "jwt", "alg": alg} for alg, uri in JWT_RESOURCES.items()},
                OPAQUE_RESOURCE: {"format": "opaque"},
            },
            "keys_out": str(self._keys_file),
        }
        path = self.workdir / f"idp-{generation}.json"
        path.write_text(json.dumps(settings))
        log = open(self.workdir / "idp.log", "ab")  # noqa: SIM115 - the process keeps it
        self._proc = subprocess.Popen(
            ["node", str(IDP_FOLDER / "server.mjs"), str(path)],
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=IDP_FOLDER,
        )
        log.close()
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().decode()
        if not line.startswith("ready "):
            self.stop()
            raise RuntimeError(f"the OpenID Provider did not start: {self.log()[-2000:]}")

    def stop(self) -> None:
        if self._proc is not None:
            proc, self._proc = self._proc, None
            stop_process(proc)
            if proc.stdout is not None:
                proc.stdout.close()

    def rotate(self) -> None:
        """Restart on the same port with a new generation of signing keys: the old keys
        are no longer published, and tokens already issued are forgotten."""
        self.stop()
        self.start(self.generation + 1)

    def signer(self, alg: str = "RS256") -> tuple[Signer, str]:
        """The OP's own signing key for ``alg`` and its kid, to sign as the OP would."""
        pem = json.loads(self._keys_file.read_text())[alg].encode()
        key = serialization.load_pem_private_key(pem, password=None)
        return make_signer(key), f"{alg}-g{self.generation}"

    def log(self) -> str:
        return (self.workdir / "idp.log").read_text(errors="replace")

    def token(
        self,
        resource: str,
        scope: str = "read write",
        *,
        client: tuple[str, str] = CLIENT,
        tenant: str = "",
        dpop: Signer | None = None,
        certificate: bytes | None = None,
    ) -> str:
        """An access token from the token endpoint (client_credentials, client_secret_basic);
        with ``dpop``, a proof by that key is sent and the token is bound to it; with
        ``certificate`` (PEM), the MTLS_CLIENT's token is bound to that certificate."""
        url = f"{self.issuer(tenant)}/token"
        headers = {"dpop": make_proof(dpop, "POST", url)} if dpop is not None else {}
        if certificate is not None:
            headers["x-client-certificate"] = urllib.parse.quote(certificate.decode())
        answer = self._post(
            url,
            {"grant_type": "client_credentials", "resource": resource, "scope": scope},
            client,
            headers,
        )
        assert answer["token_type"] == ("DPoP" if dpop is not None else "Bearer"), answer
        token: str = answer["access_token"]
        return token

    def revoke(self, token: str, *, client: tuple[str, str] = CLIENT, tenant: str = "") -> None:
        self._post(f"{self.issuer(tenant)}/token/revocation", {"token": token}, client)

    def introspect(self, token: str, tenant: str = "") -> dict[str, Any]:
        """What the OP answers authz about ``token``."""
        return self._post(
            f"{self.issuer(tenant)}/token/introspection", {"token": token}, INTROSPECTOR
        )

    def _post(
        self,
        url: str,
        form: dict[str, str],
        client: tuple[str, str],
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        basic = base64.b64encode(f"{client[0]}:{client[1]}".encode()).decode()
        request = urllib.request.Request(
            url,
            data=urllib.parse.urlencode(form).encode(),
            headers={"authorization": f"Basic {basic}", **(headers or {})},
        )
        deadline = time.monotonic() + 5
        while True:
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    body = response.read()
                    return json.loads(body) if body else {}
            except urllib.error.HTTPError as exc:
                raise AssertionError(f"{url}: {exc.code} {exc.read()!r}") from exc
            except ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
