"""Shared test fixtures: the captured AdmissionReviews, the bundled tables, and reading
the service's answers."""

from __future__ import annotations

import base64
import copy
import json
import os
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml

from webhook.admission import parse_review
from webhook.core.engine import Config
from webhook.core.types import Request
from webhook.service import Answer
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


def gpu_product_affinity(*products: str) -> dict[str, Any]:
    """A pod `affinity` that requires a node whose nvidia.com/gpu.product is one of these."""
    expression = {"key": "nvidia.com/gpu.product", "operator": "In", "values": list(products)}
    terms = [{"matchExpressions": [expression]}]
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}
        }
    }


def env_without_costgate() -> dict[str, str]:
    """This process's environment minus COSTGATE_* settings, for a child process that must
    run on the defaults whatever the caller's shell exports."""
    return {k: v for k, v in os.environ.items() if not k.startswith("COSTGATE_")}


def response_of(answer: Answer, uid: str) -> dict[str, Any]:
    """The `response` of a well-formed AdmissionReview answer for `uid` (asserted)."""
    assert answer.status == 200, answer.body[:300]
    review = json.loads(answer.body)
    assert review["apiVersion"] == "admission.k8s.io/v1"
    assert review["kind"] == "AdmissionReview"
    response = review["response"]
    assert response["uid"] == uid
    assert type(response["allowed"]) is bool
    return response


def patch_ops(response: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSONPatch operations of a mutating answer."""
    assert response["patchType"] == "JSONPatch"
    return json.loads(base64.b64decode(response["patch"]))


def patched(obj: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    """A copy of `obj` with the answer's patch applied, as the API server would (an answer
    without a patch leaves it as it was)."""
    if "patch" not in response:
        return copy.deepcopy(obj)
    return jsonpatch.apply_patch(obj, patch_ops(response))
