"""README.md and docs/ tell the truth: reason codes, metrics, config keys and links."""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from authz.config import Config, Dpop, FileJwks, Introspection, Provider, RemoteJwks
from authz.core.errors import ALLOW_REASONS, DENY_REASONS
from authz.runtime.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
PAGES = [README, *sorted(DOCS.glob("*.md"))]

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def nested_model(annotation: object) -> type[BaseModel] | None:
    """The model a field holds, directly or as ``Model | None``; None for anything else."""
    candidates = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else ()
    for candidate in (annotation, *candidates):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def config_keys() -> list[str]:
    """Every top-level key; a key holding a model is given as its children, parent.child."""
    keys = []
    for name, field in Config.model_fields.items():
        model = nested_model(field.annotation)
        if model is None:
            keys.append(name)
        else:
            keys += [f"{name}.{child}" for child in model.model_fields]
    return keys


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    text = FENCE.sub("", read(path))
    headings = re.findall(r"^#+\s+(.+?)\s*$", text, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_readme_is_short() -> None:
    assert len(read(README).splitlines()) <= 150


def test_every_reason_code_is_documented() -> None:
    decisions = read(DOCS / "decisions.md")
    for reason in (*ALLOW_REASONS, *DENY_REASONS):
        assert f"| `{reason}` |" in decisions, reason


def test_every_metric_is_documented() -> None:
    operations = read(DOCS / "operations.md")
    for family in Metrics().registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        assert f"| `{name}` |" in operations, name


@pytest.mark.parametrize(
    "key",
    [
        *config_keys(),
        *Provider.model_fields,
        *RemoteJwks.model_fields,
        *FileJwks.model_fields,
        *Introspection.model_fields,
        *Dpop.model_fields,
    ],
)
def test_every_config_key_is_documented(key: str) -> None:
    assert f"`{key}`" in read(DOCS / "configuration.md"), key


def test_links_between_pages_resolve() -> None:
    checked = 0
    for page in PAGES:
        for target in LINK.findall(FENCE.sub("", read(page))):
            file, _, anchor = target.partition("#")
            if "://" in file or (file and not file.endswith(".md")):
                continue
            resolved = (page.parent / file).resolve() if file else page
            assert resolved.is_file(), f"{page.name}: {target}"
            if anchor:
                assert anchor in anchors(resolved), f"{page.name}: {target}"
            checked += 1
    assert checked > 0


def test_readme_links_every_docs_page() -> None:
    readme = read(README)
    for page in sorted(DOCS.glob("*.md")):
        assert f"](docs/{page.name})" in readme, page.name
    for name in ("SECURITY.md", "BENCHMARKS.md"):
        assert f"]({name})" in readme, name


TEST_REFERENCE = re.compile(r"(tests/[\w/]*test_\w+\.py)(?:::(test_\w+))?")
BARE_TEST = re.compile(r"`(test_\w+)`")


def test_every_test_named_as_proof_exists() -> None:
    """SECURITY.md and the docs name the tests that prove each guarantee: they must exist."""
    defined = {
        match
        for path in (ROOT / "tests").rglob("test_*.py")
        for match in re.findall(r"^(?:async )?def (test_\w+)", read(path), re.MULTILINE)
    }
    checked = 0
    for page in [ROOT / "SECURITY.md", *sorted(DOCS.glob("*.md"))]:
        text = read(page)
        for file, function in TEST_REFERENCE.findall(text):
            assert (ROOT / file).is_file(), f"{page.name}: {file}"
            if function:
                assert re.search(rf"def {function}\b", read(ROOT / file)), f"{file}::{function}"
            checked += 1
        for function in BARE_TEST.findall(text):
            assert function in defined, f"{page.name}: {function}"
            checked += 1
    assert checked > 50


def models_in(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[type[BaseModel]]:
    """``model`` and every model its fields hold, through lists, dicts and unions."""
    if model in seen:
        return seen
    seen.add(model)
    for field in model.model_fields.values():
        pending = [field.annotation]
        while pending:
            annotation = pending.pop()
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                models_in(annotation, seen)
            pending.extend(typing.get_args(annotation))
    return seen


@pytest.mark.parametrize(
    ("model", "key"),
    [
        (model.__name__, field.alias or name)
        for model in sorted(models_in(Config, set()), key=lambda m: m.__name__)
        for name, field in model.model_fields.items()
    ],
)
def test_every_key_of_every_config_model_is_documented(model: str, key: str) -> None:
    """Rules, matches, conditions, TLS, secrets... every key anywhere in the config tree."""
    text = read(DOCS / "configuration.md") + read(DOCS / "policy.md")
    word = rf"(?<![\w-]){re.escape(key)}(?![\w-])"
    in_code_span = rf"`[^`\n]*{word}[^`\n]*`"  # `decision_log.enabled`, `{path, reload_interval}`
    in_yaml = rf"{word}:"  # match: {prefix: /api} in an example
    assert re.search(in_code_span, text) or re.search(in_yaml, text), f"{model}.{key}"
