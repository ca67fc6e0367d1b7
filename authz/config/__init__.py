"""The configuration file's schema: typed, frozen models, loaded and validated once.

Imports nothing else of authz. What needs other layers' knowledge to check (algorithms,
fetchable URLs, rule paths, CEL) is checked by the build step, authz/runtime/checks.py.
"""

from authz.config.base import ConfigError, http_method, split_address, untokenable
from authz.config.load import Config, load_config, parse_config, read_config_text
from authz.config.overrides import Overrides, parse_workers
from authz.config.providers import (
    AnyTenant,
    Dpop,
    FileJwks,
    Introspection,
    Jwks,
    Provider,
    RemoteJwks,
    SecretSource,
    SharedSecret,
)
from authz.config.rules import ClaimCondition, HeaderMatch, Match, Rule
from authz.config.server import (
    DecisionLogSettings,
    HttpAuthz,
    Limits,
    Listen,
    PathSettings,
    Tls,
    TokenCacheSettings,
    TracingSettings,
)

__all__ = [
    "AnyTenant",
    "ClaimCondition",
    "Config",
    "ConfigError",
    "DecisionLogSettings",
    "Dpop",
    "FileJwks",
    "HeaderMatch",
    "HttpAuthz",
    "Introspection",
    "Jwks",
    "Limits",
    "Listen",
    "Match",
    "Overrides",
    "PathSettings",
    "Provider",
    "RemoteJwks",
    "Rule",
    "SecretSource",
    "SharedSecret",
    "Tls",
    "TokenCacheSettings",
    "TracingSettings",
    "http_method",
    "load_config",
    "parse_config",
    "parse_workers",
    "read_config_text",
    "split_address",
    "untokenable",
]
