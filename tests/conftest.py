"""Fixtures only; what tests share besides fixtures is tests/support."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests import support
from tests.support.pki import Pki, make_pki


@pytest.fixture(scope="session")
def rsa_signer() -> support.Signer:
    return support.rsa_signer()


@pytest.fixture(scope="session")
def other_rsa_signer() -> support.Signer:
    return support.rsa_signer()


@pytest.fixture(scope="session")
def ec_signer() -> support.Signer:
    return support.ec_signer()


@pytest.fixture(scope="session")
def jwks(rsa_signer: support.Signer, ec_signer: support.Signer) -> dict[str, Any]:
    return {"keys": [rsa_signer.jwk, ec_signer.jwk]}


@pytest.fixture
def now() -> float:
    return support.NOW


@pytest.fixture
async def idp() -> AsyncIterator[support.FakeIdp]:
    fake = support.FakeIdp()
    await fake.server.start_server()
    yield fake
    await fake.server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder: Path = tmp_path_factory.mktemp("pki")
    return make_pki(folder)
