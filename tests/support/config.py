"""The bundled pricing and policy as data, policies with fields replaced, and the environment
a child `costgate` process runs on its defaults with."""

from __future__ import annotations

import os
from typing import Any

import yaml

from tests.support.paths import REPO
from webhook.tables import parse_policy


def pricing_data() -> dict[str, Any]:
    """The repository's pricing table YAML, parsed but not validated."""
    return yaml.safe_load((REPO / "pricing" / "default.yaml").read_text())


def policy_data() -> dict[str, Any]:
    """The bundled policy's YAML, parsed but not validated."""
    return yaml.safe_load((REPO / "webhook" / "defaults" / "policy.yaml").read_text())


def policy_with(**overrides: Any):
    """The bundled policy's YAML with top-level fields replaced."""
    data = policy_data()
    data.update(overrides)
    return parse_policy(data, "test-policy")


def env_without_costgate() -> dict[str, str]:
    """This process's environment minus COSTGATE_* settings, for a child process that must
    run on the defaults whatever the caller's shell exports."""
    return {k: v for k, v in os.environ.items() if not k.startswith("COSTGATE_")}
