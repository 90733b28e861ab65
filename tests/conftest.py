"""Shared test fixtures: the captured AdmissionReviews and the bundled tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from webhook.admission import parse_review
from webhook.core.engine import Config
from webhook.core.types import Request
from webhook.tables import load_policy, load_pricing, parse_policy

FIXTURES = Path(__file__).parent / "fixtures"
ADMISSION = FIXTURES / "admission"
REPO = Path(__file__).parent.parent


def capture(name: str) -> dict[str, Any]:
    """A captured AdmissionReview body, e.g. capture("validate-pod-create-gpu")."""
    return json.loads((ADMISSION / f"{name}.json").read_text())


def capture_bytes(name: str) -> bytes:
    return (ADMISSION / f"{name}.json").read_bytes()


def capture_request(name: str) -> Request:
    return parse_review(capture_bytes(name))


def all_captures() -> list[str]:
    return sorted(p.stem for p in ADMISSION.glob("*.json"))


@pytest.fixture(scope="session")
def table():
    return load_pricing()


@pytest.fixture(scope="session")
def policy():
    return load_policy()


@pytest.fixture(scope="session")
def config(table, policy) -> Config:
    return Config(table=table, policy=policy)


def policy_with(**overrides: Any):
    """The bundled policy's YAML with top-level fields replaced."""
    import yaml

    data = yaml.safe_load((REPO / "webhook" / "defaults" / "policy.yaml").read_text())
    data.update(overrides)
    return parse_policy(data, "test-policy")
