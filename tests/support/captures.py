"""The AdmissionReviews captured from a real kube-apiserver (tests/fixtures/admission)."""

from __future__ import annotations

import json
from typing import Any

from tests.support.paths import ADMISSION
from webhook.admission import parse_review
from webhook.core.types import Request


def capture(name: str) -> dict[str, Any]:
    """A captured AdmissionReview body, e.g. capture("validate-pod-create-gpu")."""
    return json.loads((ADMISSION / f"{name}.json").read_text())


def capture_bytes(name: str) -> bytes:
    return (ADMISSION / f"{name}.json").read_bytes()


def capture_request(name: str) -> Request:
    return parse_review(capture_bytes(name))


def all_captures() -> list[str]:
    return sorted(p.stem for p in ADMISSION.glob("*.json"))
