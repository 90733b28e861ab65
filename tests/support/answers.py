"""Reading the service's answers: the AdmissionReview `response`, its JSONPatch, and the object
as the API server stores it once the patch is applied."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import jsonpatch
import orjson

from tests.support.builders import review
from webhook.service import AdmissionService, Answer


def response_of(answer: Answer, uid: str) -> dict[str, Any]:
    """The `response` of a well-formed AdmissionReview answer for `uid` (asserted)."""
    assert answer.status == 200, answer.body[:300]
    doc = json.loads(answer.body)
    assert doc["apiVersion"] == "admission.k8s.io/v1"
    assert doc["kind"] == "AdmissionReview"
    response = doc["response"]
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


def answer(service: AdmissionService, obj: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """The `response` of /validate for `obj` sent in a fresh review (see builders.review)."""
    result = service.handle(review(obj, **kwargs), "validate")
    assert result.status == 200
    return orjson.loads(result.body)["response"]
