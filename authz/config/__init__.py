"""The configuration file's schema: typed, frozen models, loaded and validated once."""

from authz.config.schema import (
    Config,
    DecisionLogSettings,
    FileJwks,
    Limits,
    Provider,
    RemoteJwks,
    check_fetch_uri,
    load_config,
    parse_config,
)

__all__ = [
    "Config",
    "DecisionLogSettings",
    "FileJwks",
    "Limits",
    "Provider",
    "RemoteJwks",
    "check_fetch_uri",
    "load_config",
    "parse_config",
]
