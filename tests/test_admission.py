"""The wire adapter (`parse_review`) and the service seam (`AdmissionService.handle`), no server.

Every body gets an answer: a well-formed AdmissionReview carrying the request's uid, or, when no
uid can be found, an HTTP 400 with a JSON error. Never an exception, never a traceback.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jsonpatch
import pytest

from tests.support.answers import patch_ops, response_of
from tests.support.captures import all_captures, capture, capture_bytes
from tests.support.config import policy_with
from webhook.admission import ReviewError, parse_review
from webhook.core.engine import Config
from webhook.service import AdmissionService, Endpoint

ENDPOINTS: tuple[Endpoint, ...] = ("mutate", "validate")
BASE = "validate-pod-create-gpu"
UID = capture(BASE)["request"]["uid"]
INVALID = "costgate cannot read this AdmissionReview"


@pytest.fixture(scope="module")
def service(config: Config) -> AdmissionService:
    return AdmissionService(config)


def _edited(edit: Callable[[dict[str, Any]], object]) -> Callable[[], bytes]:
    """A body builder: the GPU pod's captured review with one edit applied."""

    def build() -> bytes:
        doc = copy.deepcopy(capture(BASE))
        edit(doc)
        return json.dumps(doc).encode()

    return build


def _set(path: str, value: object) -> Callable[[], bytes]:
    """Set a dotted path (list indexes as numbers) in the captured review."""
    *parents, last = path.split(".")

    def edit(doc: dict[str, Any]) -> None:
        node: Any = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return _edited(edit)


def _drop(path: str) -> Callable[[], bytes]:
    *parents, last = path.split(".")

    def edit(doc: dict[str, Any]) -> None:
        node: Any = doc
        for key in parents:
            node = node[key]
        del node[last]

    return _edited(edit)


# --- reviews the wire adapter refuses ------------------------------------------------------------


@dataclass(frozen=True)
class Malformed:
    body: Callable[[], bytes]
    uid: str | None  # None: no uid can be found, the answer is an HTTP 400
    detail: str  # a fragment the message must contain


MALFORMED = [
    pytest.param(
        Malformed(_set("apiVersion", "admission.k8s.io/v1beta1"), UID, "admission.k8s.io/v1beta1"),
        id="a v1beta1 review is refused with its uid",
    ),
    pytest.param(
        Malformed(_set("kind", "ConversionReview"), UID, "ConversionReview"),
        id="a review of the wrong kind is refused with its uid",
    ),
    pytest.param(
        Malformed(_drop("request"), None, "request"),
        id="a review without a request gets an HTTP 400",
    ),
    pytest.param(
        Malformed(_set("request", "CREATE"), None, "request"),
        id="a request that is not an object gets an HTTP 400",
    ),
    pytest.param(
        Malformed(_drop("request.uid"), None, "request.uid"),
        id="a request without a uid gets an HTTP 400",
    ),
    pytest.param(
        Malformed(_set("request.uid", 42), None, "request.uid"),
        id="a uid that is not a string gets an HTTP 400",
    ),
    pytest.param(
        Malformed(_set("request.operation", "PATCH"), UID, '"PATCH"'),
        id="an unknown operation is refused with its uid",
    ),
    pytest.param(
        Malformed(_drop("request.object"), UID, "request.object"),
        id="a CREATE without an object is refused with its uid",
    ),
    pytest.param(
        Malformed(_set("request.object", "a pod"), UID, "request.object"),
        id="an object that is a string is refused with its uid",
    ),
    pytest.param(
        Malformed(_set("request.oldObject", []), UID, "request.oldObject"),
        id="an oldObject that is a list is refused with its uid",
    ),
    pytest.param(
        Malformed(_set("request.userInfo.groups", "system:masters"), UID, "userInfo.groups"),
        id="userInfo groups that are not a list are refused with the uid",
    ),
    pytest.param(
        Malformed(_set("request.dryRun", "yes"), UID, "request.dryRun"),
        id="a dryRun that is not a boolean is refused with its uid",
    ),
    pytest.param(
        Malformed(_set("request.kind", "Pod"), UID, "request.kind"),
        id="a request kind that is not an object is refused with its uid",
    ),
    pytest.param(
        Malformed(_set("request.namespace", 7), UID, "request.namespace"),
        id="a namespace that is not a string is refused with its uid",
    ),
    pytest.param(
        Malformed(lambda: capture_bytes(BASE)[:600], UID, "not JSON"),
        id="a truncated body is refused with the uid read from its prefix",
    ),
    pytest.param(
        Malformed(lambda: b"[]", None, "not a JSON object"),
        id="a JSON array gets an HTTP 400",
    ),
    pytest.param(
        Malformed(lambda: b"", None, "not JSON"),
        id="an empty body gets an HTTP 400",
    ),
]


@pytest.mark.parametrize("case", MALFORMED)
def test_parse_review_refuses_malformed_reviews_keeping_the_uid(case: Malformed) -> None:
    with pytest.raises(ReviewError) as caught:
        parse_review(case.body())
    assert caught.value.uid == case.uid
    assert caught.value.status == 400
    assert case.detail in caught.value.detail


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_reviews_get_a_well_formed_answer(
    service: AdmissionService, case: Malformed, endpoint: Endpoint
) -> None:
    answer = service.handle(case.body(), endpoint)
    if case.uid is None:
        assert answer.status == 400
        error = json.loads(answer.body)
        assert set(error) == {"error"}
        assert error["error"].startswith(INVALID)
        assert case.detail in error["error"]
    else:
        response = response_of(answer, case.uid)
        assert response["allowed"] is False
        assert response["status"]["code"] == 400
        assert response["status"]["reason"] == "BadRequest"
        assert response["status"]["message"].startswith(INVALID)
        assert case.detail in response["status"]["message"]
        assert "patch" not in response
    assert answer.outcome == "invalid"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_an_operation_that_is_not_a_string_is_refused_with_the_uid(
    service: AdmissionService, endpoint: Endpoint
) -> None:
    answer = service.handle(_set("request.operation", ["CREATE"])(), endpoint)
    response = response_of(answer, UID)
    assert response["allowed"] is False
    assert response["status"]["code"] == 400


# --- objects the core cannot read ----------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    ("body", "path"),
    [
        pytest.param(
            _set("request.object.spec.containers", "trainer"),
            "spec.containers",
            id="containers that are a string are named in the denial",
        ),
        pytest.param(
            _set("request.object.spec.containers.0.resources.limits", [{"nvidia.com/gpu": 8}]),
            "spec.containers[0].resources.limits",
            id="a container's limits that are a list are named in the denial",
        ),
        pytest.param(
            _set("request.object.spec.containers.0", "trainer"),
            "spec.containers[0]",
            id="a container that is not an object is named in the denial",
        ),
        pytest.param(
            _set("request.object.metadata.labels", ["owner=alice"]),
            "metadata.labels",
            id="labels that are a list are named in the denial",
        ),
        pytest.param(
            _set("request.object.spec.activeDeadlineSeconds", "10"),
            "spec.activeDeadlineSeconds",
            id="a deadline that is a string is named in the denial",
        ),
        pytest.param(
            _set("request.object.spec.nodeSelector", ["nvidia.com/gpu.product"]),
            "spec.nodeSelector",
            id="a nodeSelector that is a list is named in the denial",
        ),
        pytest.param(
            _set("request.object.spec", []),
            "spec",
            id="a spec that is a list is named in the denial",
        ),
    ],
)
def test_objects_with_wrong_types_are_denied_naming_the_field(
    service: AdmissionService, body: Callable[[], bytes], path: str, endpoint: Endpoint
) -> None:
    data = body()
    parse_review(data)  # the review itself is fine: the core finds the problem
    response = response_of(service.handle(data, endpoint), UID)
    assert response["allowed"] is False
    assert response["status"]["code"] == 400
    assert response["status"]["reason"] == "BadRequest"
    assert f"field {path} must be" in response["status"]["message"]
    assert "patch" not in response


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_delete_without_an_object_is_allowed(
    service: AdmissionService, endpoint: Endpoint
) -> None:
    def to_delete(doc: dict[str, Any]) -> None:
        doc["request"]["operation"] = "DELETE"
        doc["request"]["oldObject"] = doc["request"].pop("object")
        doc["request"]["object"] = None

    response = response_of(service.handle(_edited(to_delete)(), endpoint), UID)
    assert response["allowed"] is True
    assert "patch" not in response


# --- what parse_review reads ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("validate-pod-create-gpu", id="a pod creation is read field by field"),
        pytest.param("validate-pod-create-dryrun", id="a server-side dry run is read as one"),
        pytest.param("mutate-pod-create-generatename", id="a pod with no name yet is read"),
        pytest.param("validate-pod-update-label", id="an update is read with its old object"),
        pytest.param(
            "validate-pod-create-by-workflow-controller",
            id="a service account's request is read with its user",
        ),
        pytest.param("validate-job-create-gpu", id="a Job is read with its API group"),
    ],
)
def test_parse_review_reads_what_the_api_server_sent(name: str) -> None:
    raw = capture(name)["request"]
    request = parse_review(capture_bytes(name))
    assert request.uid == raw["uid"]
    assert request.operation == raw["operation"]
    assert request.group == raw["kind"]["group"]
    assert request.kind == raw["kind"]["kind"]
    assert request.namespace == raw["namespace"]
    assert request.name == raw.get("name", "")
    assert request.obj == raw["object"]
    assert request.old_obj == raw.get("oldObject")
    assert request.username == raw["userInfo"]["username"]
    assert request.groups == tuple(raw["userInfo"]["groups"])
    assert request.dry_run is raw.get("dryRun", False)


# --- internal errors -----------------------------------------------------------------------------


class _BrokenTable:
    """A pricing table whose every lookup fails, as a table backed by a broken store would."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"price store unreachable while reading {name} (secret=hunter2)")


def _broken_service(on_internal_error: str) -> AdmissionService:
    policy = policy_with(on_internal_error=on_internal_error)
    return AdmissionService(lambda: Config(table=_BrokenTable(), policy=policy))  # type: ignore[arg-type]


_REQUEST_ID = re.compile(r"request id ([0-9a-f]{6,})")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_an_internal_error_is_denied_with_a_request_id_and_no_traceback(
    endpoint: Endpoint, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="costgate.service"):
        answer = _broken_service("deny").handle(capture_bytes(BASE), endpoint)

    response = response_of(answer, UID)
    assert response["allowed"] is False
    assert response["status"]["code"] == 500
    assert response["status"]["reason"] == "InternalError"
    message = response["status"]["message"]
    assert "internal error" in message
    found = _REQUEST_ID.search(message)
    assert found, message
    body = answer.body.decode()
    for leak in ("Traceback", "RuntimeError", "hunter2", "price store", ".py"):
        assert leak not in body
    assert answer.outcome == "error"
    # the operator can find the request id, with the exception, in the logs
    logged = [r for r in caplog.records if getattr(r, "request_id", None) == found.group(1)]
    assert len(logged) == 1
    assert logged[0].exc_info is not None
    assert getattr(logged[0], "uid", None) == UID


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_an_internal_error_is_allowed_with_a_warning_when_the_policy_says_so(
    endpoint: Endpoint, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.CRITICAL, logger="costgate.service"):
        answer = _broken_service("allow").handle(capture_bytes(BASE), endpoint)

    response = response_of(answer, UID)
    assert response["allowed"] is True
    assert "status" not in response
    assert "patch" not in response
    [warning] = response["warnings"]
    assert warning.startswith("costgate: ")
    assert "internal error" in warning
    assert _REQUEST_ID.search(warning)
    assert "hunter2" not in answer.body.decode()


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_pod_without_gpus_never_reaches_the_broken_table(endpoint: Endpoint) -> None:
    name = f"{endpoint}-pod-create-plain"
    response = response_of(
        _broken_service("deny").handle(capture_bytes(name), endpoint),
        capture(name)["request"]["uid"],
    )
    assert response["allowed"] is True


def test_a_config_provider_that_fails_still_gets_an_answer() -> None:
    def provider() -> Config:
        raise RuntimeError("config reload failed")

    response = response_of(AdmissionService(provider).handle(capture_bytes(BASE), "validate"), UID)
    assert response["allowed"] is False
    assert response["status"]["code"] == 500


# --- unicode digits: a crash instead of a denial -------------------------------------------------


def _superscript_runtime_edit(doc: dict[str, Any]) -> None:
    doc["request"]["object"]["metadata"]["annotations"]["costgate.io/max-runtime"] = "²"


def _superscript_gpus_edit(doc: dict[str, Any]) -> None:
    resources = doc["request"]["object"]["spec"]["containers"][0]["resources"]
    resources["limits"]["nvidia.com/gpu"] = "²"
    resources["requests"]["nvidia.com/gpu"] = "²"


_superscript_runtime = _edited(_superscript_runtime_edit)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    ("body", "named"),
    [
        pytest.param(
            _superscript_runtime,
            "costgate.io/max-runtime",
            id="a superscript digit as max runtime is an invalid-runtime denial",
        ),
        pytest.param(
            _edited(_superscript_gpus_edit),
            "nvidia.com/gpu",
            id="a superscript digit as GPU count is an invalid-gpu-request denial",
        ),
    ],
)
def test_unicode_digits_are_a_clear_denial_not_an_internal_error(
    service: AdmissionService,
    body: Callable[[], bytes],
    named: str,
    endpoint: Endpoint,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.CRITICAL, logger="costgate.service"):
        response = response_of(service.handle(body(), endpoint), UID)
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    assert named in response["status"]["message"]


def test_a_superscript_max_runtime_does_not_bypass_the_cost_gate(
    table: Any, caplog: pytest.LogCaptureFixture
) -> None:
    service = AdmissionService(Config(table=table, policy=policy_with(on_internal_error="allow")))
    with caplog.at_level(logging.CRITICAL, logger="costgate.service"):
        response = response_of(service.handle(_superscript_runtime(), "validate"), UID)
    assert response["allowed"] is False


# --- every captured review -----------------------------------------------------------------------


# What costgate answers each captured review, on the bundled policy. The captures were made
# against other webhooks' answers, so a name says what the API server did then, not what
# costgate says: e.g. the "deny-400" and "label-deny" pods are ones costgate admits.
_DENIED_ON_VALIDATE = [
    "job-create-gpu",
    "pod-apply-deny",
    "pod-create-apply",
    "pod-create-apply-ssa",
    "pod-create-deny",
    "pod-create-deny-dryrun",
    "pod-create-deny-noreason",
    "pod-create-deny-stdin",
    "pod-create-generatename",
    "pod-create-gpu",
    "pod-create-patched",
    "pod-create-sidecar-init",
    "pod-create-warn",
    "pod-create-warn-dryrun",
    "workflow-create-deny",
    "workflow-create-gpu-dag",
    "workflow-create-withitems",
]
DENIED = sorted(
    {(f"{side}-{case}", "validate") for side in ENDPOINTS for case in _DENIED_ON_VALIDATE}
    # an invalid quantity is denied by both webhooks
    | {("mutate-pod-create-invalid-quantity", endpoint) for endpoint in ENDPOINTS}
)
# allowed, with a JSONPatch: the deadline and labels costgate writes
PATCHED = sorted(
    (f"{side}-{case}", "mutate")
    for side in ENDPOINTS
    for case in ("cronworkflow-create", "pod-create-dryrun")
)
# allowed as they are: every other capture on either endpoint
ALLOWED = sorted(
    {(name, endpoint) for name in all_captures() for endpoint in ENDPOINTS}
    - set(DENIED)
    - set(PATCHED)
)


def _captured_answer(service: AdmissionService, name: str, endpoint: Endpoint) -> dict[str, Any]:
    """The response to a captured review: a well-formed answer to its uid whose warnings
    are costgate's and fit in the API server's 256 characters."""
    response = response_of(
        service.handle(capture_bytes(name), endpoint), capture(name)["request"]["uid"]
    )
    for warning in response.get("warnings", ()):
        assert warning.startswith("costgate: ")
        assert len(warning) <= 256  # the API server may truncate longer warnings
    return response


def _ids(cases: list[tuple[str, str]]) -> list[str]:
    return [f"{name}-{endpoint}" for name, endpoint in cases]


@pytest.mark.parametrize(("name", "endpoint"), ALLOWED, ids=_ids(ALLOWED))
def test_captured_reviews_costgate_allows_are_answered_without_a_status_or_patch(
    service: AdmissionService, name: str, endpoint: Endpoint
) -> None:
    response = _captured_answer(service, name, endpoint)
    assert response["allowed"] is True
    assert "status" not in response
    assert "patch" not in response and "patchType" not in response


@pytest.mark.parametrize(("name", "endpoint"), DENIED, ids=_ids(DENIED))
def test_captured_reviews_costgate_denies_get_a_403_with_a_one_line_message(
    service: AdmissionService, name: str, endpoint: Endpoint
) -> None:
    response = _captured_answer(service, name, endpoint)
    assert response["allowed"] is False
    status = response["status"]
    assert status["code"] == 403  # real traffic never makes an internal error or a 400
    assert status["reason"] == "Forbidden"
    assert status["message"]
    assert "\n" not in status["message"]
    assert "patch" not in response and "patchType" not in response


@pytest.mark.parametrize(("name", "endpoint"), PATCHED, ids=_ids(PATCHED))
def test_captured_reviews_costgate_patches_get_a_patch_that_applies(
    service: AdmissionService, name: str, endpoint: Endpoint
) -> None:
    response = _captured_answer(service, name, endpoint)
    assert response["allowed"] is True
    assert "status" not in response
    ops = patch_ops(response)  # a JSONPatch
    assert ops, "an empty patch should not be sent"
    # the patch applies to the object exactly as the API server holds it
    jsonpatch.apply_patch(capture(name)["request"]["object"], ops)


def test_a_review_without_user_groups_is_read() -> None:
    body = capture("validate-pod-create-gpu")
    del body["request"]["userInfo"]["groups"]
    request = parse_review(json.dumps(body).encode())
    assert request.groups == ()
    assert request.username == "kubernetes-admin"
