"""Session fixtures: the bundled pricing table and policy, loaded once. Plain helpers that
test modules import live in tests/support/ (tests/README.md has the map)."""

from __future__ import annotations

import pytest

from webhook.core.engine import Config
from webhook.tables import load_policy, load_pricing


@pytest.fixture(scope="session")
def table():
    return load_pricing()


@pytest.fixture(scope="session")
def policy():
    return load_policy()


@pytest.fixture(scope="session")
def config(table, policy) -> Config:
    return Config(table=table, policy=policy)
