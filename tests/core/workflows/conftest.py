"""The two configurations the workflow tests decide under."""

from __future__ import annotations

import pytest
import yaml

from tests.support.config import policy_with
from webhook.core.engine import Config


@pytest.fixture(scope="module")
def wide(table) -> Config:
    """A threshold nothing reaches: only the number matters."""
    return Config(table, policy_with(threshold_usd=1e9), parse_text=yaml.safe_load)


@pytest.fixture(scope="module")
def strict(table) -> Config:
    """The bundled policy ($100 threshold), with YAML podSpecPatch readable like the CLI's."""
    return Config(table, policy_with(), parse_text=yaml.safe_load)
