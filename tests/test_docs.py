"""README.md tells the truth about the reason codes and the metrics."""

from __future__ import annotations

from pathlib import Path

from authz.core.errors import ALLOW_REASONS, DENY_REASONS
from authz.runtime.metrics import Metrics

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_reason_code_is_documented() -> None:
    for reason in (*ALLOW_REASONS, *DENY_REASONS):
        assert f"| `{reason}` |" in README, reason


def test_every_metric_is_documented() -> None:
    for family in Metrics().registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        assert f"| `{name}` |" in README, name
