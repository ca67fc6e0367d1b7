"""The server's own settings: listeners, TLS files, the HTTP authorization endpoint, limits,
the token cache, the decision log, traces and how request paths are read."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from authz.config.base import Model, address


class Tls(Model):
    """A listener's certificate and key; with client_ca_file, clients must present a
    certificate that CA signed (mutual TLS between Envoy and authz). The files are read
    by the build step (authz/runtime/build.py), not here."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None


class HttpAuthz(Model):
    """The HTTP authorization endpoint, for proxies that ask over HTTP."""

    listen: str
    # Which headers say what the client asked for, and so are trusted for it:
    # envoy: the request itself (Envoy http_service); nginx: X-Original-URI and
    # X-Original-Method (auth_request); ingress-nginx: X-Original-URL and
    # X-Original-Method (the Kubernetes controller's auth-url), X-Authz-Host and
    # X-Authz-Upstream-Host (its auth-proxy-set-headers); traefik and caddy:
    # X-Forwarded-Method/-Uri/-Host (Traefik forwardAuth, Caddy forward_auth; the two
    # styles read and answer alike, http_authz.ANSWERED_EMPTY).
    original_request: Literal["envoy", "nginx", "ingress-nginx", "traefik", "caddy"] = "envoy"
    path_prefix: str = ""  # Envoy http_service path_prefix, removed from the path
    # Where the proxy passes the client's TLS certificate, for certificate-bound tokens:
    # xfcc (Envoy's x-forwarded-client-cert), nginx (X-SSL-Client-Cert); each only with
    # its own original_request, never by default (a client could send the header itself
    # where no proxy replaces it). Traefik and Caddy leave a client's copy in place.
    certificate_source: Literal["none", "xfcc", "nginx"] = "none"

    _check = field_validator("listen")(address)

    @model_validator(mode="after")
    def _certificate_source(self) -> HttpAuthz:
        proxy = {"xfcc": "envoy", "nginx": "nginx"}
        wanted = proxy.get(self.certificate_source)
        if wanted is not None and wanted != self.original_request:
            raise ValueError(
                f"certificate_source: {self.certificate_source} is set by {wanted}, and "
                f"original_request is {self.original_request}"
            )
        return self


class Listen(Model):
    grpc: str = "127.0.0.1:9001"
    http: str = "127.0.0.1:9090"
    grpc_tls: Tls | None = None
    http_tls: Tls | None = None

    _check = field_validator("grpc", "http")(address)


class DecisionLogSettings(Model):
    """One structured line per decision (see authz/runtime/decision_log.py)."""

    enabled: bool = False
    format: Literal["json", "text"] = "json"
    level: Literal["DEBUG", "INFO", "WARNING"] = "INFO"
    allow_sample_rate: float = Field(default=1.0, ge=0, le=1)  # denials are always logged
    log_subject: bool = False  # add the token's sub; no other claim is ever logged


class TracingSettings(Model):
    """OpenTelemetry traces: one span per check, exported over OTLP/gRPC (see
    docs/operations.md). A change needs a restart."""

    # The collector's OTLP/gRPC receiver: http://host:port (plaintext) or https://host:port.
    otlp_endpoint: str
    # The share of checks that start a trace of their own that are recorded; a check
    # continuing a caller's trace follows the caller's sampled flag (ParentBased). Not 1
    # by default: a recorded check costs about a third more CPU (docs/operations.md).
    sample_ratio: float = Field(default=0.1, ge=0, le=1)
    service_name: str = Field(default="authz", min_length=1, max_length=256)

    @field_validator("otlp_endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        return otlp_endpoint(value)


def otlp_endpoint(value: str) -> str:
    """``http://host:port`` or ``https://host:port``, nothing more: OTLP/gRPC has no path,
    and credentials in a URL end up in logs."""
    try:
        url = urlsplit(value)
        port = url.port
    except ValueError as exc:
        raise ValueError(f"not a URL: {exc}") from exc
    if url.scheme not in ("http", "https"):
        raise ValueError("the scheme must be http (plaintext) or https")
    if not url.hostname:
        raise ValueError("a host is needed: http://collector:4317")
    if not port:
        raise ValueError("a port is needed (the OTLP/gRPC receiver's is usually 4317)")
    if url.username is not None or url.password is not None:
        raise ValueError("no credentials in the URL")
    if url.path not in ("", "/") or url.query or url.fragment:
        raise ValueError("OTLP over gRPC takes no path, query or fragment")
    return value


class PathSettings(Model):
    """How request paths are read (see authz/core/paths.py)."""

    # refuse: any ";" in a path is invalid_path (Tomcat, Jetty and Spring cut ";x=1" off a
    # segment, so /admin;x=1 would slip past a rule for /admin); literal: ";" is ordinary
    # data, safe only for upstreams that never treat it specially.
    semicolons: Literal["refuse", "literal"] = "refuse"
    ignore_case: bool = False  # the default of every rule's match.ignore_case


class TokenCacheSettings(Model):
    """Verified tokens kept so a repeated token skips parsing and signature checks."""

    max_entries: int = Field(default=100_000, ge=0)  # 0 turns the cache off
    max_bytes: int = Field(default=64 << 20, gt=0)


class Limits(Model):
    """Bounds on what one check may cost."""

    # A larger request as the proxy sent it (over gRPC: the CheckRequest, headers and any
    # body): 413. gRPC receives up to this plus Envoy's largest headers, so it is a deny.
    max_request_bytes: int = Field(default=1 << 20, ge=4096)
    max_headers: int = Field(default=200, gt=0)  # more request headers: 431
    max_header_bytes: int = Field(default=96 * 1024, gt=0)  # names + values, more: 431
    max_concurrent_checks: int = Field(default=2000, gt=0)  # more in flight: 503 at once
    # Connections. HTTP (the operations and HTTP authorization listeners): a request head
    # must arrive within http_header_timeout (a connection's first request counts from
    # its accept), a connection waiting for its next request closes after
    # http_idle_timeout, and connections beyond max_http_connections per listener are
    # closed at once. gRPC: the TLS and HTTP/2 handshake must also finish within
    # http_header_timeout, and connections beyond max_grpc_connections are closed at once.
    http_header_timeout: float = Field(default=10.0, gt=0)
    http_idle_timeout: float = Field(default=60.0, gt=0)
    max_http_connections: int = Field(default=1024, ge=16)
    max_grpc_connections: int = Field(default=4096, ge=16)
    # Seconds after which a gRPC connection is told to go away (GOAWAY, gracefully, so
    # the client opens a new one), spreading long-lived connections over workers and
    # replicas that started later; 0: never.
    grpc_max_connection_age: float = Field(default=600.0, ge=0)
