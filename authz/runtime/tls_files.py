"""A listener's TLS files, followed while it runs: a renewed certificate (cert-manager
renews weeks before expiry, and the kubelet swaps the mounted files) is served from the
next handshake on, without a restart.

A renewal is taken only whole and usable: the new chain must load with the new key in a
TLS context first; anything else (a half-written pair, a key that does not match) keeps
the running one and is logged. The client CA is followed likewise for gRPC; for the HTTP
listeners a CA added is trusted from then on, one removed only after a restart
(OpenSSL contexts can add trust, not drop it).
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable
from pathlib import Path

from authz.support.files import Signature, file_signature

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 1.0  # files are looked at (three stat calls) at most this often
Material = tuple[bytes, bytes, bytes | None]  # certificate chain, private key, client CA


class TlsFiles:
    """The certificate chain, key and optional client CA of one listener."""

    def __init__(
        self,
        cert_file: Path,
        key_file: Path,
        client_ca_file: Path | None,
        *,
        where: str,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """The files are read here, once: OSError when one cannot be."""
        self._paths = (cert_file, key_file, client_ca_file)
        self._where = where
        self._monotonic = monotonic
        self._signatures = self._signed()
        self.material = self._read()
        self._next_check = monotonic() + CHECK_INTERVAL_S

    @property
    def mutual(self) -> bool:
        return self._paths[2] is not None

    def _signed(self) -> tuple[Signature | None, ...]:
        return tuple(file_signature(p) if p is not None else None for p in self._paths)

    def _read(self) -> Material:
        cert, key, ca = self._paths
        return cert.read_bytes(), key.read_bytes(), ca.read_bytes() if ca else None

    def refreshed(self) -> Material | None:
        """The new material when the files changed since last seen, stayed unchanged while
        read, and load as a pair; None otherwise. Cheap enough to ask on every handshake.
        Never raises."""
        now = self._monotonic()
        if now < self._next_check:
            return None
        self._next_check = now + CHECK_INTERVAL_S
        signatures = self._signed()
        if signatures == self._signatures:
            return None
        try:
            self.load_into(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
            material = self._read()
        except (OSError, ssl.SSLError, ValueError) as exc:
            # Left for the next look: the files may be half written.
            log.warning(
                "%s: renewed TLS files not taken (%s): serving the last ones", self._where, exc
            )
            return None
        if self._signed() != signatures:
            return None  # changed while being read: the next look takes them whole
        self._signatures = signatures
        self.material = material
        log.info("%s: renewed TLS certificate taken", self._where)
        return material

    def load_into(self, context: ssl.SSLContext) -> None:
        """The files as they are now into ``context`` (ssl.SSLError when the chain and key
        do not make a pair, or the CA does not load)."""
        cert, key, ca = self._paths
        context.load_cert_chain(cert, key)
        if ca is not None:
            context.load_verify_locations(cafile=ca)
