"""Settings given outside the config file: `authz serve --workers N`, or the AUTHZ_WORKERS
environment variable (the command line reads both). A platform that cannot edit the file's
text sets them, e.g. a Kubernetes Deployment sizing workers to its CPU limit. They win over
the file's value at start and on every reload."""

from __future__ import annotations

import re
from dataclasses import dataclass

from authz.config.base import ConfigError
from authz.config.load import MAX_WORKERS, Config

_WHOLE_NUMBER = re.compile(r"[0-9]+")


@dataclass(frozen=True, slots=True)
class Overrides:
    workers: int | None = None

    def apply(self, config: Config) -> Config:
        if self.workers is None or self.workers == config.workers:
            return config
        return config.model_copy(update={"workers": self.workers})


def parse_workers(value: str, source: str) -> int:
    """A number of workers given as text by ``source`` (a flag or a variable's name)."""
    if not _WHOLE_NUMBER.fullmatch(value):
        raise ConfigError(f"{source}: {value!r} is not a whole number of workers (1 to 64)")
    workers = int(value)
    if not 1 <= workers <= MAX_WORKERS:
        raise ConfigError(
            f"{source}: {workers} workers is out of range (1 to {MAX_WORKERS}); from a "
            "Kubernetes CPU limit, set a limit of at most 64 cores (without one, Kubernetes "
            "gives the node's cores)"
        )
    return workers
