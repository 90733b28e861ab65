"""What every answer of /mutate and /validate must be, whatever the body: shared by the
hypothesis fuzz (tests/test_hostile.py) and the atheris harness (tests/fuzz/fuzz_review.py).

- no HTTP 500 and no traceback;
- a request with a string uid gets HTTP 200 and an AdmissionReview `admission.k8s.io/v1`
  whose `response.uid` is that uid; a body with no uid to be found gets an HTTP 400 (413 when
  oversized) with a JSON `{"error": ...}`: the API server matches answers on the uid, and
  there is nothing to echo without one;
- `allowed` is a bool; a denial has an integer `status.code` (400, 403 or 413, never 500)
  and a one-line, printable `status.message`;
- warnings are one printable line each, within the API server's 256 characters;
- a patch is base64 JSONPatch that applies (`jsonpatch`) to the object as it was sent.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import jsonpatch
import orjson

from webhook.admission import recover_uid

__all__ = ["check_answer", "one_line"]


def _uid_of(body: bytes) -> str | None:
    """The uid the answer must carry: request.uid as the server's JSON parser reads it, or,
    for a body that does not parse, what can be recovered from its prefix."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return recover_uid(body)
    request = doc.get("request") if type(doc) is dict else None
    uid = request.get("uid") if type(request) is dict else None
    return uid if type(uid) is str and uid else None


def _object_of(body: bytes) -> Any:
    doc = orjson.loads(body)  # an answer with a patch: the body parsed
    request = doc.get("request") if type(doc) is dict else None
    return request.get("object") if type(request) is dict else None


def one_line(text: object, *, limit: int | None = None) -> None:
    """`text` is a string kubectl prints on one line as it is: no \\n, \\r, NUL, bidi
    override, zero-width or other format character that would break or disguise it."""
    assert type(text) is str
    assert text.isprintable(), f"not one printable line: {text!r}"
    if limit is not None:
        assert len(text) <= limit, f"{len(text)} characters: {text!r}"


def check_answer(
    status: int, payload: bytes, body: bytes, endpoint: str, *, oversized: bool = False
) -> dict[str, Any] | None:
    """The invariants every answer holds; the review's `response`, None for an HTTP error."""
    assert status != 500
    assert b"Traceback" not in payload
    uid = _uid_of(body)
    answer = json.loads(payload)
    if uid is None:
        assert status == (413 if oversized else 400), (status, payload[:300])
        assert set(answer) == {"error"}
        one_line(answer["error"])
        assert answer["error"].startswith("costgate cannot read this AdmissionReview")
        return None
    assert status == 200, (status, payload[:300])
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["kind"] == "AdmissionReview"
    response = answer["response"]
    assert response["uid"] == uid
    assert type(response["allowed"]) is bool
    if not response["allowed"]:
        assert type(response["status"]["code"]) is int
        assert response["status"]["code"] in (400, 403, 413)  # never 500: no internal error
        one_line(response["status"]["message"])
        assert "internal error" not in response["status"]["message"]
    for warning in response.get("warnings", ()):
        one_line(warning, limit=256)
    if "patch" in response:
        assert endpoint == "mutate" and response["allowed"]
        assert response["patchType"] == "JSONPatch"
        ops = json.loads(base64.b64decode(response["patch"], validate=True))
        assert type(ops) is list and ops
        obj = _object_of(body)
        assert type(obj) is dict
        jsonpatch.apply_patch(obj, ops)  # raises when a path does not resolve
    for key, value in response.get("auditAnnotations", {}).items():
        assert type(key) is str and type(value) is str
    return response
