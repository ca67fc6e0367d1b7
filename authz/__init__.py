"""authz: JWT external authorization for Envoy."""

__version__ = "0.1.0"
