"""A listener's TLS files, followed while it runs: a renewed certificate (cert-manager
renews weeks before expiry, and the kubelet swaps the mounted files) is served from the
next handshake on, without a restart.

A renewal is taken only whole and usable: the files must stay unchanged while read, and
the new chain must load with the new key (and the client CA as trust) into a fresh TLS
context; anything else keeps the running material and is logged once. Nothing that is
serving is modified: gRPC is handed a new certificate configuration, and the HTTP
listener's handshakes switch to the fresh context (an SNI callback, which runs for
every handshake, with or without a server name), so a removed client CA stops being
trusted and a certificate of another key type replaces the old one.
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
    """The certificate chain, key and optional client CA of one listener.

    ``refreshed`` may be called from gRPC's core threads (its certificate fetcher, under
    the listener's lock, one at a time) and from the event loop; its state changes are
    single assignments, so a race at worst takes one renewal twice."""

    def __init__(
        self,
        cert_file: Path,
        key_file: Path,
        client_ca_file: Path | None,
        *,
        where: str,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """The files are read here, once: OSError or ssl.SSLError when they cannot be
        read or do not make a pair."""
        self._paths = (cert_file, key_file, client_ca_file)
        self._where = where
        self._monotonic = monotonic
        # Signatures before reading: a renewal landing while reading is seen as a change.
        self._signatures = self._signed()
        self._failed: tuple[Signature | None, ...] | None = None
        self.context = self._context()
        self.material = self._read()
        self._next_check = monotonic() + CHECK_INTERVAL_S

    @property
    def mutual(self) -> bool:
        return self._paths[2] is not None

    def serving_context(self) -> ssl.SSLContext:
        """A context for an HTTP listener whose handshakes use the latest material."""
        first = self.context

        def latest(connection: ssl.SSLObject, _name: str | None, _: ssl.SSLContext) -> None:
            current = self.context
            if current is not first:
                connection.context = current
            return None

        first.sni_callback = latest
        return first

    def _signed(self) -> tuple[Signature | None, ...]:
        return tuple(file_signature(p) if p is not None else None for p in self._paths)

    def _read(self) -> Material:
        cert, key, ca = self._paths
        return cert.read_bytes(), key.read_bytes(), ca.read_bytes() if ca else None

    def _context(self) -> ssl.SSLContext:
        """A server context from the files as they are now: the chain and key, and with a
        client CA, client certificates required and that CA the only trust (never the
        system's)."""
        cert, key, ca = self._paths
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key)
        if ca is not None:
            context.load_verify_locations(cafile=ca)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def refreshed(self) -> Material | None:
        """The new material when the files changed since last seen, stayed unchanged while
        read, and load as a pair; None otherwise (``context`` then is the new one too).
        Cheap enough to ask on every handshake. Never raises."""
        now = self._monotonic()
        if now < self._next_check:
            return None
        self._next_check = now + CHECK_INTERVAL_S
        signatures = self._signed()
        if signatures in (self._signatures, self._failed):
            return None
        try:
            context = self._context()
            material = self._read()
        except (OSError, ssl.SSLError, ValueError) as exc:
            if self._signed() == signatures:  # a finished write that does not load
                self._failed = signatures
                log.warning(
                    "%s: renewed TLS files not taken (%s): serving the last ones until "
                    "they change again",
                    self._where,
                    exc,
                )
            return None
        if self._signed() != signatures:
            return None  # changed while being read: the next look takes them whole
        self._signatures, self._failed = signatures, None
        self.context, self.material = context, material
        log.info("%s: renewed TLS certificate taken", self._where)
        return material
