"""AdmissionReview v1 on the wire: bytes -> core Request, Decision -> bytes.

Parsing reads only the fields the core needs (no model validation of the whole Pod). A body
that is not a usable review raises ReviewError carrying the request uid when one can be
recovered, so the caller can still answer with a well-formed AdmissionReview.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import orjson

from .core import messages
from .core.patch import Mutation
from .core.types import Operation, Request
from .core.verdict import Decision

__all__ = [
    "ReviewError",
    "error_review",
    "mutate_review",
    "parse_review",
    "recover_uid",
    "validate_review",
]

API_VERSION = "admission.k8s.io/v1"
_OPERATIONS: dict[str, Operation] = {
    "CREATE": "CREATE",
    "UPDATE": "UPDATE",
    "DELETE": "DELETE",
    "CONNECT": "CONNECT",
}
_UID = re.compile(rb'"uid"\s*:\s*"([A-Za-z0-9._:-]{1,128})"')
_UID_SCAN_BYTES = 64 * 1024
# "large numbers of warnings may be truncated" (AdmissionResponse.warnings): the first ones
# are what kubectl shows; 10,000 of them (one per bad template) only make the answer huge
_MAX_WARNINGS = 16
_NO_EXTRA: Mapping[str, Sequence[str]] = MappingProxyType({})  # userInfo without extra
_STATUS_REASONS = {
    400: "BadRequest",
    403: "Forbidden",
    413: "RequestEntityTooLarge",
    500: "InternalError",
    503: "ServiceUnavailable",
}


class ReviewError(ValueError):
    """A body that is not a usable AdmissionReview; `uid` is set when it could be recovered."""

    def __init__(self, detail: str, uid: str | None, status: int = 400) -> None:
        super().__init__(detail)
        self.detail = detail
        self.uid = uid
        self.status = status


def recover_uid(body: bytes) -> str | None:
    """The request uid from raw bytes that do not parse (truncated, nested too deep, bad
    UTF-8). The API server writes `request.uid` first in the request, before the object."""
    match = _UID.search(body, 0, _UID_SCAN_BYTES)
    return match.group(1).decode("ascii") if match else None


def _str(value: object, path: str, uid: str) -> str:
    if value is None:
        return ""
    if type(value) is not str:
        raise ReviewError(messages.wrong_type(path, "str", value), uid)
    return value


def _strings_by_name(extra: object) -> bool:
    """Whether userInfo.extra is a map of lists of strings (most users carry one or two
    entries, e.g. a credential id: plain loops, on every review)."""
    if type(extra) is not dict:
        return False
    for values in extra.values():
        if type(values) is not list:
            return False
        for value in values:
            if type(value) is not str:
                return False
    return True


def parse_review(body: bytes) -> Request:
    """The core Request in an AdmissionReview body, or ReviewError."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ReviewError(f"the body is not JSON ({exc})", recover_uid(body)) from None
    if type(doc) is not dict:
        raise ReviewError("the body is not a JSON object", None)
    request = doc.get("request")
    if type(request) is not dict:
        raise ReviewError("it has no request object", None)
    uid = request.get("uid")
    if type(uid) is not str or not uid:
        raise ReviewError("request.uid is missing", None)
    if doc.get("apiVersion") != API_VERSION or doc.get("kind") != "AdmissionReview":
        raise ReviewError(
            f"expected apiVersion {API_VERSION} kind AdmissionReview, got "
            f"{messages.quote(doc.get('apiVersion'))} {messages.quote(doc.get('kind'))}",
            uid,
        )
    kind = request.get("kind")
    if type(kind) is not dict:
        raise ReviewError(messages.wrong_type("request.kind", "dict", kind), uid)
    operation = request.get("operation")
    if type(operation) is not str or operation not in _OPERATIONS:
        raise ReviewError(f"unknown operation {messages.quote(operation)}", uid)
    obj = request.get("object")
    old = request.get("oldObject")
    if operation in ("CREATE", "UPDATE") and type(obj) is not dict:
        raise ReviewError(f"a {operation} request needs request.object", uid)
    if old is not None and type(old) is not dict:
        raise ReviewError(messages.wrong_type("request.oldObject", "dict", old), uid)
    user = request.get("userInfo") or {}
    if type(user) is not dict:
        raise ReviewError(messages.wrong_type("request.userInfo", "dict", user), uid)
    groups = user.get("groups")
    if groups is None:
        groups = []
    elif type(groups) is not list or not set(map(type, groups)) <= {str}:
        raise ReviewError("request.userInfo.groups must be a list of strings", uid)
    extra = user.get("extra")
    if extra is None:
        extra = _NO_EXTRA
    elif not _strings_by_name(extra):
        raise ReviewError("request.userInfo.extra must map names to lists of strings", uid)
    dry_run = request.get("dryRun") or False
    if type(dry_run) is not bool:
        raise ReviewError(messages.wrong_type("request.dryRun", "bool", dry_run), uid)
    resource = request.get("resource") or {}
    if type(resource) is not dict:
        raise ReviewError(messages.wrong_type("request.resource", "dict", resource), uid)
    plural, resource_group = resource.get("resource") or "", resource.get("group") or ""
    sub_resource = request.get("subResource") or ""
    if type(plural) is not str or type(resource_group) is not str or type(sub_resource) is not str:
        raise ReviewError("request.resource and request.subResource must be strings", uid)
    if resource_group:
        plural = f"{resource_group}/{plural}"  # apps/deployments: as the kinds table names it
    group, kind_name = kind.get("group"), kind.get("kind")
    namespace, name, username = request.get("namespace"), request.get("name"), user.get("username")
    # _str only for a field missing (None: "") or of another type (an error)
    if type(group) is not str:
        group = _str(group, "request.kind.group", uid)
    if type(kind_name) is not str:
        kind_name = _str(kind_name, "request.kind.kind", uid)
    if type(namespace) is not str:
        namespace = _str(namespace, "request.namespace", uid)
    if type(name) is not str:
        name = _str(name, "request.name", uid)
    if type(username) is not str:
        username = _str(username, "request.userInfo.username", uid)
    # positional, in field order (pinned by tests/core/test_verdict.py): every review in the
    # cluster is parsed here
    return Request(
        uid,
        _OPERATIONS[operation],
        group,
        kind_name,
        namespace,
        name,
        obj if type(obj) is dict else {},
        old,
        username,
        tuple(groups),
        dry_run,
        extra,
        plural,
        sub_resource,
    )


def _review(response: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}
    )


def _status(code: int, message: str, default: str) -> dict[str, Any]:
    return {"code": code, "reason": _STATUS_REASONS.get(code, default), "message": message}


def _warnings(warnings: Sequence[str]) -> list[str]:
    shown = list(warnings[:_MAX_WARNINGS])
    if len(warnings) > _MAX_WARNINGS:
        shown.append(messages.more_warnings(len(warnings) - _MAX_WARNINGS))
    return shown


def validate_review(uid: str, decision: Decision) -> bytes:
    """The validating webhook's answer: allowed or denied, with warnings and audit
    annotations."""
    response: dict[str, Any] = {"uid": uid, "allowed": decision.allowed}
    if not decision.allowed:
        response["status"] = _status(decision.status_code, decision.denial, "Forbidden")
    if decision.warnings:
        response["warnings"] = _warnings(decision.warnings)
    if decision.audit:
        response["auditAnnotations"] = dict(decision.audit)
    return _review(response)


def mutate_review(uid: str, mutation: Mutation) -> bytes:
    """The mutating webhook's answer: its JSONPatch, or the refusal of an object it cannot
    read. Warnings and audit annotations are the validating webhook's to give, once."""
    refusal = mutation.refusal
    if refusal is not None:
        response: dict[str, Any] = {
            "uid": uid,
            "allowed": False,
            "status": _status(refusal.status_code, refusal.denial, "Forbidden"),
        }
        if refusal.warnings:
            response["warnings"] = _warnings(refusal.warnings)
        return _review(response)
    response = {"uid": uid, "allowed": True}
    if mutation.ops:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(orjson.dumps(mutation.ops)).decode("ascii")
    return _review(response)


def error_review(uid: str, message: str, *, status: int, allowed: bool = False) -> bytes:
    """An answer for a request that could not be evaluated (unreadable, or an internal error)."""
    response: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if allowed:
        response["warnings"] = [messages.warning(message)]
    else:
        response["status"] = _status(status, message, "BadRequest")
    return _review(response)
