"""Every captured AdmissionReview gets the right answer from the service, both endpoints.

Expected costs are computed here from the pricing table and the manifests (in
tests/fixtures/admission/manifests), not copied from costgate's output.
"""

from __future__ import annotations

import pytest

from tests.support.answers import patched, response_of
from tests.support.captures import all_captures, capture, capture_bytes
from webhook.service import AdmissionService


@pytest.fixture(scope="module")
def service(config) -> AdmissionService:
    return AdmissionService(config)


def answer(service: AdmissionService, name: str) -> dict:
    endpoint = "mutate" if name.startswith("mutate-") else "validate"
    uid = capture(name)["request"]["uid"]
    return response_of(service.handle(capture_bytes(name), endpoint), uid)


def price(config, gpu: str) -> float:
    return config.table.gpus[gpu].usd_per_hour


def dearest(config) -> str:
    return config.table.candidates("nvidia.com/gpu")[0]


# Pods without GPUs, and updates that cannot raise a cost, are allowed untouched.
UNTOUCHED = [
    "pod-create-plain",
    "pod-run-deny",
    "pod-label-deny",
    "pod-create-deny-400",
    # a relabelled Workflow costs what it did; the workflow controller's status writes
    "workflow-update-label",
    "workflow-update-status-by-controller",
    # an UPDATE that keeps the labels, and a pod the workflow controller made for its Workflow
    "pod-update-label",
    "pod-apply-warn",
    "pod-create-by-workflow-controller",
]


@pytest.mark.parametrize("step", UNTOUCHED)
@pytest.mark.parametrize("endpoint", ["mutate", "validate"])
def test_untouched(step, endpoint, service) -> None:
    response = answer(service, f"{endpoint}-{step}")
    assert response["allowed"] is True
    assert "patch" not in response
    assert "warnings" not in response
    assert "status" not in response


# (step, GPUs, GPU type or None for unpinned, hours, reason codes at validate)
PRICED = [
    ("pod-create-gpu", 8, "h100-80gb", 24, ["over-threshold"]),
    ("pod-create-dryrun", 1, None, 2, []),  # existing activeDeadlineSeconds 7200 is kept
    ("pod-create-generatename", 2, None, 12, ["over-threshold"]),
    ("pod-create-apply", 2, "h100-80gb", 48, ["over-threshold"]),  # affinity In A100|H100
    ("pod-create-apply-ssa", 2, "h100-80gb", 48, ["over-threshold"]),
    ("pod-create-patched", 1, None, 12, ["over-threshold"]),
    ("pod-create-warn", 1, None, 12, ["over-threshold"]),
    ("pod-create-warn-dryrun", 1, None, 12, ["over-threshold"]),
    ("pod-create-deny", 8, None, 12, ["missing-labels", "over-threshold"]),
    ("pod-apply-deny", 8, None, 12, ["missing-labels", "over-threshold"]),
    ("pod-create-deny-stdin", 8, None, 12, ["missing-labels", "over-threshold"]),
    ("pod-create-deny-dryrun", 8, None, 12, ["missing-labels", "over-threshold"]),
    ("pod-create-deny-noreason", 1, None, 12, ["missing-labels", "over-threshold"]),
    # parallelism 4 of completions 8, one GPU each, for the default 12h Job deadline
    ("job-create-gpu", 4, None, 12, ["over-threshold"]),
    # DAG: the GPU step (4 × A100 80GB) is the busiest moment, for the declared 12h; the
    # per-step bound (10h × 3 attempts) is higher, so the peak bound wins.
    ("workflow-create-gpu-dag", 4, "a100-80gb", 12, ["over-threshold"]),
    # 4 items of 1 GPU, parallelism 2, activeDeadlineSeconds 4h
    ("workflow-create-withitems", 2, None, 4, ["over-threshold"]),
    ("workflow-create-deny", 2, None, 12, ["missing-labels", "over-threshold"]),
    # the CronWorkflow per month: nightly ("0 2 * * *", Forbid), 730/24 runs of 1 GPU for
    # its workflowSpec deadline of 2h, under the $2,000 monthly threshold
    ("cronworkflow-create", 1, None, 2 * 730 / 24, []),
]


@pytest.mark.parametrize(
    ("step", "gpus", "gpu", "hours", "reasons"), PRICED, ids=[p[0] for p in PRICED]
)
def test_validate_prices_and_decides(step, gpus, gpu, hours, reasons, service, config) -> None:
    response = answer(service, f"validate-{step}")
    cost = round(gpus * price(config, gpu or dearest(config)) * hours, 2)
    audit = response["auditAnnotations"]
    assert audit["estimated-cost-usd"] == f"{cost:.2f}"
    assert audit.get("reasons", "") == ",".join(reasons)
    assert response["allowed"] is (not reasons)
    if reasons:
        assert response["status"]["code"] == 403
        assert response["status"]["reason"] == "Forbidden"
        assert f"${cost:,.2f}" in response["status"]["message"]
    else:
        per = "/month" if step.startswith("cron") else ""
        assert response["warnings"][0].startswith(f"costgate: estimated cost ${cost:,.2f}{per} (")
    assert all(len(w) <= 256 for w in response.get("warnings", ()))


def test_validate_sidecar_pod_prices_gpus_and_the_mig_slice(service, config) -> None:
    response = answer(service, "validate-pod-create-sidecar-init")
    # 4 whole GPUs (the init container alone beats 1 + 2) and one 1g.10gb slice, for 90m.
    mig = 1 / 7 * price(config, "h100-80gb")  # dearest parent of mig-1g.10gb
    cost = round((4 * price(config, dearest(config)) + mig) * 1.5, 2)
    assert response["auditAnnotations"]["estimated-cost-usd"] == f"{cost:.2f}"


def test_the_denial_reads_like_the_design(service, config) -> None:
    response = answer(service, "validate-pod-create-gpu")
    h100 = price(config, "h100-80gb")
    assert response["status"]["message"] == (
        f"estimated cost ${8 * h100 * 24:,.2f} (8 × h100-80gb at ${h100:.2f}/h × 24h) exceeds "
        'the $100.00 limit for namespace "demo"; ask an approver for a token '
        "(costgate approve ...) and set annotation costgate.io/approval"
    )


def test_invalid_quantity_is_denied_by_the_mutating_webhook(service) -> None:
    # Only the mutating webhook sees this one: the API server rejects the object after it.
    response = answer(service, "mutate-pod-create-invalid-quantity")
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    assert response["status"]["message"] == (
        'invalid GPU request: container "main" asks for nvidia.com/gpu "500m"; '
        "GPU counts must be whole numbers"
    )


def _patched(name: str, response: dict) -> dict:
    assert "patch" in response
    return patched(capture(name)["request"]["object"], response)


def test_mutate_allowed_pod_sets_deadline_and_stamp_on_the_captured_object(service) -> None:
    # gpu-dryrun has no annotations at all: the patch must create the map.
    response = answer(service, "mutate-pod-create-dryrun")
    assert response["allowed"] is True
    original = capture("mutate-pod-create-dryrun")["request"]["object"]
    assert "annotations" not in original["metadata"]
    patched = _patched("mutate-pod-create-dryrun", response)
    assert patched["spec"]["activeDeadlineSeconds"] == 7200  # kept: smaller than the default
    stamp = patched["metadata"]["annotations"]["costgate.io/estimated-cost"]
    validated = answer(service, "validate-pod-create-dryrun")
    assert stamp == validated["auditAnnotations"]["estimated-cost-usd"]
    # nothing else changed
    del patched["metadata"]["annotations"]
    assert patched == original


@pytest.mark.parametrize(
    "step",
    ["pod-create-gpu", "pod-create-generatename", "pod-create-deny", "pod-create-apply"],
)
def test_mutate_leaves_policy_denials_to_the_validating_webhook(step, service) -> None:
    response = answer(service, f"mutate-{step}")
    assert response["allowed"] is True
    assert "patch" not in response and "warnings" not in response


def test_all_captures_are_covered() -> None:
    covered = (
        set(UNTOUCHED)
        | {p[0] for p in PRICED}
        | {"pod-create-sidecar-init", "pod-create-invalid-quantity"}
    )
    steps = {name.split("-", 1)[1] for name in all_captures()}
    assert steps <= covered, steps - covered


def test_mutate_cronworkflow_attributes_the_workflows_and_pods_it_makes(service) -> None:
    response = answer(service, "mutate-cronworkflow-create")
    patched = _patched("mutate-cronworkflow-create", response)
    labels = {"owner": "hank", "experiment": "nightly-eval"}
    assert patched["spec"]["workflowSpec"]["podMetadata"]["labels"] == labels
    assert patched["spec"]["workflowMetadata"]["labels"] == labels
    assert patched["spec"]["workflowSpec"]["activeDeadlineSeconds"] == 7200  # kept
    stamp = patched["metadata"]["annotations"]["costgate.io/estimated-cost"]
    assert (
        stamp
        == answer(service, "validate-cronworkflow-create")["auditAnnotations"]["estimated-cost-usd"]
    )
