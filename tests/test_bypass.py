"""Bypass attempts: each test is one way a user might get GPU spend past costgate, sent
through the real `AdmissionService.handle` (review bytes in, AdmissionReview out), built from
the reviews a real API server sent (tests/fixtures/admission) wherever one fits.

Where costgate leaves a door to the API server, the test says which rule of the API server
shuts it (kubernetes/kubernetes, pkg/apis/core/validation/validation.go unless named):

- a Pod's container resources cannot change after creation except through the `resize`
  subresource, which takes cpu and memory only ("only cpu and memory resources are
  mutable", KEP-1287); ephemeral containers may not carry resources at all
  (validateEphemeralContainers: "cannot be set for an Ephemeral Container"); a Pod's
  activeDeadlineSeconds may only shrink (ValidatePodUpdate: "must be less than or equal to
  previous value", "must not update from a positive integer to nil value"). costgate's
  webhook rules name `pods` only, so those subresources never reach it.
- a Job's parallelism and activeDeadlineSeconds are mutable at any time; the pod template of
  a suspended Job takes new node selectors (KEP-2926, stable in 1.27) and new resources,
  GPUs included (KEP-5440, beta in 1.36, the version of the captures); a CronJob's
  jobTemplate and a Workflow's spec are mutable. costgate prices those updates again.

The same attacks at the core's level are pinned elsewhere and not repeated here:

- forged or misused tokens: tests/test_approvals.py (payload edited after signing, alg none,
  HS256 with the public key, unknown key, a key signing for another approver, NaN max_usd,
  another namespace / experiment / workload name, expired, issued in the future, the clock
  skew boundary, approvers and max grant per namespace);
- spoofed owners at the extractor: tests/core/test_extract_pod.py
  (test_workload_class_needs_owner_and_its_controller), tests/core/test_jobs.py
  (test_a_person_claiming_a_job_owner_is_priced_like_any_pod), tests/core/test_workflows.py
  (test_a_person_creating_a_workflow_owned_pod_is_priced_like_any_pod), and the cache's rule
  that a stamped pod counts whatever owner it claims: tests/test_quotas.py
  (test_holding_counts_live_pods_and_skips_finished_and_controller_made);
- the effective-request arithmetic (sidecars, init containers, MIG): tests/core/
  test_extract_pod.py (test_effective_gpu_request); containerSet and podSpecPatch:
  tests/core/test_workflows.py (COSTS, test_a_podspecpatch_with_runtime_gpus_is_denied);
- updates: tests/core/test_workflows.py
  (test_an_update_raising_the_cost_past_the_threshold_is_denied,
  test_an_update_raising_only_the_deadline_is_lowered_back_or_denied),
  tests/core/test_decide.py (test_updates_cannot_strip_attribution);
- that the webhook configuration sends every GPU-named resource, in containers and init
  containers: tests/test_manifests.py (test_gpu_condition_on_every_gpu_resource_and_shape).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.answers import answer, patched, response_of
from tests.support.builders import gpu_pod
from tests.support.captures import capture
from tests.support.paths import REPO
from tests.support.services import served, service_for
from webhook.approvals import KeyPair, Keyring, keygen, mint
from webhook.core.holding import holding
from webhook.service import AdmissionService, Endpoint
from webhook.tables import load_config

POD = "validate-pod-create-gpu"  # 8 × h100-80gb, 24h declared, namespace demo: $1,320.96
JOB = "validate-job-create-gpu"  # parallelism 4 × 1 GPU, type not pinned
WORKFLOW = "validate-workflow-create-gpu-dag"  # a DAG step of 4 × a100-80gb: $164.68
ARGO_POD = "validate-pod-create-by-workflow-controller"  # made by system:serviceaccount:argo:argo
SWEEP = "validate-workflow-create-withitems"  # 4 trials, 2 at once, 1 GPU each, 4h: $216.32
H100 = 6.88
STAMP = "costgate.io/estimated-cost"
T4_SELECTOR = {"nvidia.com/gpu.product": "Tesla-T4"}  # $0.978/h
NOW = 1_800_000_000.0

Edit = Callable[[dict[str, Any]], object]


# --- helpers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def default() -> AdmissionService:
    return served()


def review(name: str, edit: Edit | None = None) -> dict[str, Any]:
    """A captured review, deep-copied, with `edit` applied to its object."""
    doc = copy.deepcopy(capture(name))
    if edit is not None:
        edit(doc["request"]["object"])
    return doc


def ask(svc: AdmissionService, doc: dict[str, Any], endpoint: Endpoint = "validate") -> dict:
    """The response for `doc`, checked to be a well-formed answer to its uid."""
    return response_of(svc.handle(json.dumps(doc).encode(), endpoint), doc["request"]["uid"])


def codes(response: dict[str, Any]) -> set[str]:
    reasons = response.get("auditAnnotations", {}).get("reasons", "")
    return set(reasons.split(",")) - {""}


def estimate(response: dict[str, Any]) -> str:
    return response["auditAnnotations"]["estimate"]


def stored(svc: AdmissionService, doc: dict[str, Any]) -> dict[str, Any]:
    """The object as the API server stores it after costgate admitted the CREATE."""
    response = ask(svc, doc)
    assert response["allowed"], response
    return patched(doc["request"]["object"], ask(svc, doc, "mutate"))


def update(doc: dict[str, Any], old: dict[str, Any], edit: Edit) -> dict[str, Any]:
    """An UPDATE review of `old` (as stored) with `edit` applied, from the CREATE review."""
    doc = copy.deepcopy(doc)
    new = copy.deepcopy(old)
    edit(new)
    doc["request"].update(operation="UPDATE", object=new, oldObject=copy.deepcopy(old))
    return doc


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return obj["spec"]["containers"]


def set_gpus(container: dict[str, Any], count: str | None, name: str = "nvidia.com/gpu") -> None:
    """Put `count` GPUs of resource `name` in a container's limits and requests (or none)."""
    resources = container.setdefault("resources", {})
    for side in ("limits", "requests"):
        amounts = {
            k: v
            for k, v in resources.get(side, {}).items()
            if "gpu" not in k.lower() and "mig" not in k
        }
        if count is not None:
            amounts[name] = count
        resources[side] = amounts


def priced_at(response: dict[str, Any], gpus: int, hours: int = 24) -> bool:
    """Whether the response prices `gpus` H100s for `hours`, as the POD capture is priced."""
    usd = gpus * H100 * hours
    return estimate(response).startswith(f"${usd:,.2f} ({gpus} × h100-80gb")


# --- 1. spoofed controller ownerReferences -------------------------------------------------


def _owner(api_version: str, kind: str) -> dict[str, Any]:
    """An ownerReference to nothing: a made-up name and uid (an owner cannot live in another
    namespace: the garbage collector treats such a reference as absent)."""
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": "whatever",
        "uid": "00000000-0000-0000-0000-000000000000",
        "controller": True,
        "blockOwnerDeletion": True,
    }


TRUSTED_KINDS = [
    ("batch/v1", "Job"),
    ("batch/v1", "CronJob"),
    ("apps/v1", "ReplicaSet"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "DaemonSet"),
    ("argoproj.io/v1alpha1", "Workflow"),
    ("argoproj.io/v1alpha1", "CronWorkflow"),
]


@pytest.mark.parametrize(("api_version", "kind"), TRUSTED_KINDS, ids=[k for _, k in TRUSTED_KINDS])
def test_spoofed_controller_owner_reference_is_priced_like_any_pod(
    api_version: str, kind: str, default: AdmissionService
) -> None:
    """A user writes a controller ownerReference to a kind costgate trusts, hoping the pod
    passes as one its controller made for an object already priced (or as a serving pod).
    An ownerReference proves nothing, even from a cluster admin: the pod must still need
    its labels, be priced as a batch pod for its own runtime, and meet the cost gate."""

    def spoof(pod: dict[str, Any]) -> None:
        pod["metadata"]["ownerReferences"] = [_owner(api_version, kind)]
        pod["metadata"]["labels"] = {}

    response = ask(default, review(POD, spoof))
    assert not response["allowed"]
    assert codes(response) == {"missing-labels", "over-threshold"}
    assert priced_at(response, 8)  # 24h as declared: not the serving per-month price either
    assert "priced-with" not in response["auditAnnotations"]


LOOKALIKES = [
    # (username, groups, owner kind): none of them is a trusted controller's account
    ("system:serviceaccount:demo:job-controller", [], "Job"),  # an SA the user can make
    ("system:serviceaccount:demo:argo", [], "Workflow"),
    ("system:serviceaccount:kube-system:job-controller ", [], "Job"),
    ("System:ServiceAccount:kube-system:job-controller", [], "Job"),
    ("job-controller", [], "Job"),
    ("system:serviceaccount:argo:argo-server", [], "Workflow"),  # submits, does not make pods
    ("alice", ["system:serviceaccounts:kube-system", "system:kube-controller-manager"], "Job"),
    ("system:serviceaccount:kube-system:job-controller", [], "Workflow"),  # not its kind
    ("system:serviceaccount:argo:argo", [], "ReplicaSet"),
]


@pytest.mark.parametrize(
    ("username", "groups", "kind"),
    LOOKALIKES,
    ids=[
        "an SA named job-controller in the user's namespace",
        "an SA named argo in the user's namespace",
        "a trailing space",
        "other case",
        "the bare name",
        "the Argo server's account",
        "controller group names in groups",
        "the job controller vouching for a Workflow pod",
        "the workflow controller vouching for a ReplicaSet pod",
    ],
)
def test_lookalike_controller_accounts_are_not_trusted(
    username: str, groups: list[str], kind: str, default: AdmissionService
) -> None:
    """userInfo is written by the API server from authentication, not by the user; but a user
    can hold accounts whose names look like a controller's (a service account of the same
    name in their own namespace) or groups that say so. Only the exact username of the
    controller of that owner kind vouches for a pod: the workflow controller's pod is priced
    again when anyone else creates it."""
    api_version = {k: v for v, k in TRUSTED_KINDS}[kind]
    doc = review(
        ARGO_POD, lambda pod: pod["metadata"].update(ownerReferences=[_owner(api_version, kind)])
    )
    doc["request"]["userInfo"] = {"username": username, "groups": groups}
    response = ask(default, doc)
    assert not response["allowed"]
    assert codes(response) == {"missing-labels", "over-threshold"}
    assert "priced-with" not in response["auditAnnotations"]


def test_argo_pod_created_by_a_user_is_priced(default: AdmissionService) -> None:
    """A user copies what the workflow controller writes on its pods, the
    `workflows.argoproj.io/workflow` label and a Workflow ownerReference, and creates the pod
    themselves. The captured controller-made pod is waved through as priced with its
    Workflow; the same pod from the user must be attributed and priced."""
    made = ask(default, review(ARGO_POD))
    assert made["allowed"] and made["auditAnnotations"]["priced-with"] == "owner"
    doc = review(ARGO_POD)
    doc["request"]["userInfo"] = capture(POD)["request"]["userInfo"]  # kubernetes-admin
    response = ask(default, doc)
    assert not response["allowed"]
    assert codes(response) == {"missing-labels", "over-threshold"}


def _cache_counts(obj: dict[str, Any], kind: str = "Pod", group: str = "") -> bool:
    """Whether the cluster watch cache counts `obj` against quotas (ClusterState's record)."""
    return holding(group, kind, obj, load_config()) is not None


@pytest.mark.parametrize(
    ("edit", "counted_as_sent"),
    [
        pytest.param("remove", False, id="removed: the cache would stop counting the pod"),
        pytest.param("zero", True, id="rewritten to 0.00: still counted, the stamp is wrong"),
    ],
)
def test_spoofed_owner_pod_cannot_leave_the_quota_by_dropping_its_stamp(
    edit: str, counted_as_sent: bool
) -> None:
    """A user creates a GPU pod with a made-up Job ownerReference. costgate prices it and
    stamps `costgate.io/estimated-cost`, the mark by which the watch cache counts a pod whose
    owner is a trusted kind. The user then removes (or rewrites) the stamp with an UPDATE,
    hoping the cache takes the pod for the Job controller's and stops counting it against
    the quotas. The update must not drop it: the mutating webhook puts the stamp back."""
    create = review(
        POD, lambda pod: pod["metadata"].update(ownerReferences=[_owner("batch/v1", "Job")])
    )
    svc = served(threshold_usd=5000)
    pod = stored(svc, create)
    assert pod["metadata"]["annotations"][STAMP] == "1320.96" and _cache_counts(pod)

    def unstamp(obj: dict[str, Any]) -> None:
        if edit == "remove":
            del obj["metadata"]["annotations"][STAMP]
        else:
            obj["metadata"]["annotations"][STAMP] = "0.00"

    doc = update(create, pod, unstamp)
    assert _cache_counts(doc["request"]["object"]) is counted_as_sent  # what it would hide
    assert ask(svc, doc)["allowed"]
    after = patched(doc["request"]["object"], ask(svc, doc, "mutate"))
    assert after["metadata"]["annotations"][STAMP] == "1320.96"
    assert _cache_counts(after)


def test_jobs_and_workflows_a_cron_object_starts_still_count_against_quotas() -> None:
    """The real cronjob (or workflow) controller creates a Job (a Workflow) for its
    CronJob (CronWorkflow): it is not priced again, rightly, but it was not counted by the
    watch cache either, so wrapping a GPU Job in a CronJob kept every run out of the
    namespace's GPU quota. Only pods count with their owner; a Job or Workflow counts itself."""
    job = capture(JOB)["request"]["object"]
    job["metadata"]["ownerReferences"] = [_owner("batch/v1", "CronJob")]
    job["spec"]["activeDeadlineSeconds"] = 3600
    assert _cache_counts(job, "Job", "batch")
    workflow = capture(WORKFLOW)["request"]["object"]
    workflow["metadata"]["ownerReferences"] = [_owner("argoproj.io/v1alpha1", "CronWorkflow")]
    assert _cache_counts(workflow, "Workflow", "argoproj.io")
    # ... and their pods still count once, with them
    pod = capture(ARGO_POD)["request"]["object"]
    assert not _cache_counts(pod)
    pod["metadata"]["ownerReferences"] = [_owner("batch/v1", "Job")]
    assert not _cache_counts(pod)


# --- 2. GPUs hidden where the pod still gets them --------------------------------------


def _cpu_main(pod: dict[str, Any]) -> dict[str, Any]:
    """The capture's 8-GPU container, with the main container left without GPUs."""
    gpu = copy.deepcopy(containers(pod)[0])
    set_gpus(containers(pod)[0], None)
    gpu["name"] = "hidden"
    return gpu


def _in_init(pod: dict[str, Any]) -> None:
    pod["spec"]["initContainers"] = [_cpu_main(pod)]


def _in_sidecar(pod: dict[str, Any]) -> None:
    sidecar = copy.deepcopy(containers(pod)[0])
    sidecar.update(name="sidecar", restartPolicy="Always")
    pod["spec"]["initContainers"] = [sidecar]


def _limits_only(pod: dict[str, Any]) -> None:
    del containers(pod)[0]["resources"]["requests"]["nvidia.com/gpu"]


def _requests_only(pod: dict[str, Any]) -> None:
    # the API server refuses it ("Limit must be set for non overcommitable resources")
    del containers(pod)[0]["resources"]["limits"]["nvidia.com/gpu"]


def _request_above_limit(pod: dict[str, Any]) -> None:
    # the API server refuses it too (extended resources: request must equal limit)
    containers(pod)[0]["resources"]["limits"]["nvidia.com/gpu"] = "1"


HIDDEN = [
    ("a plain init container", _in_init, 8),
    ("a native sidecar, which runs next to the main container", _in_sidecar, 16),
    ("limits only", _limits_only, 8),
    ("requests only", _requests_only, 8),
    ("a request above the limit", _request_above_limit, 8),
]


@pytest.mark.parametrize(("edit", "gpus"), [h[1:] for h in HIDDEN], ids=[h[0] for h in HIDDEN])
def test_gpus_hidden_in_init_containers_sidecars_or_one_side_of_resources_are_priced(
    edit: Edit, gpus: int, default: AdmissionService
) -> None:
    """A user moves the GPUs out of the main container (into an init container, a native
    sidecar init container with `restartPolicy: Always`) or writes them on one side of
    `resources` only. The pod gets the devices all the same: costgate counts them as the
    scheduler does (max(limit, request); sidecars add to the main containers)."""
    response = ask(default, review(POD, edit))
    assert not response["allowed"] and codes(response) == {"over-threshold"}
    assert priced_at(response, gpus)


def test_ephemeral_containers_hold_no_gpus(default: AdmissionService) -> None:
    """A user puts GPU limits on an ephemeral container, at creation or later through the
    `ephemeralcontainers` subresource. The API server refuses resources on ephemeral
    containers (and ephemeral containers on create), and the webhook rules do not send the
    subresource: costgate neither counts them nor lets them hide the pod's real GPUs."""
    for hook in yaml.safe_load_all((REPO / "manifests" / "base" / "webhooks.yaml").read_text()):
        for webhook in hook["webhooks"]:
            for rule in webhook["rules"]:
                if rule["apiGroups"] == [""]:
                    assert rule["resources"] == ["pods"]  # no pods/ephemeralcontainers, pods/*

    def debug(pod: dict[str, Any]) -> None:
        ephemeral = {"name": "debug", "image": "busybox", "targetContainerName": "trainer"}
        set_gpus(ephemeral, "8")
        pod["spec"]["ephemeralContainers"] = [ephemeral]

    response = ask(default, review(POD, debug))
    assert not response["allowed"] and priced_at(response, 8)
    svc = served(threshold_usd=5000)
    doc = update(review(POD), stored(svc, review(POD)), debug)
    doc["request"]["subResource"] = "ephemeralcontainers"
    for endpoint in ("mutate", "validate"):
        answer_ = ask(svc, doc, endpoint)
        assert answer_["allowed"] and "patch" not in answer_


def _only_in(where: str) -> Edit:
    def edit(pod: dict[str, Any]) -> None:
        set_gpus(containers(pod)[0], None)
        if where == "overhead":
            pod["spec"]["overhead"] = {"nvidia.com/gpu": "8"}
        else:  # pod-level resources
            pod["spec"]["resources"] = {"limits": {"nvidia.com/gpu": "8", "cpu": "32"}}

    return edit


@pytest.mark.parametrize("where", ["overhead", "pod-level resources"])
def test_gpus_named_outside_container_resources_are_not_priced_here(
    where: str, default: AdmissionService
) -> None:
    """A user names GPUs where costgate does not look. Decided and documented:

    - `spec.overhead` is set by the RuntimeClass admission plugin from a RuntimeClass a
      cluster admin wrote; a pod that sets its own is rejected ("Pod Overhead set without
      corresponding RuntimeClass defined Overhead"), and no device plugin hands a device to
      overhead;
    - pod-level `spec.resources` (1.32+) is for cpu, memory and hugepages only
      (component-helpers `supportedPodLevelResources`): a GPU there gets no device.

    So such a pod is not priced here; what it names in its containers' resources still is.
    (DRA `resourceClaims` are priced: tests/test_bypass_dra.py.)"""
    alone = ask(default, review(POD, _only_in(where)))
    assert alone["allowed"] and "auditAnnotations" not in alone

    def beside(pod: dict[str, Any]) -> None:
        gpus = copy.deepcopy(containers(pod)[0]["resources"])
        _only_in(where)(pod)
        containers(pod)[0]["resources"].update(limits=gpus["limits"], requests=gpus["requests"])

    response = ask(default, review(POD, beside))
    assert not response["allowed"] and priced_at(response, 8)


def _job_sidecar(job: dict[str, Any]) -> None:
    spec = job["spec"]["template"]["spec"]
    sidecar = copy.deepcopy(spec["containers"][0])
    sidecar.update(name="sidecar", restartPolicy="Always")
    set_gpus(spec["containers"][0], None)
    spec["initContainers"] = [sidecar]


def _as_cronjob(doc: dict[str, Any], edit: Edit | None = None) -> dict[str, Any]:
    """The Job capture's review, turned into a CronJob CREATE running that Job nightly."""
    doc = copy.deepcopy(doc)
    job = doc["request"]["object"]
    if edit is not None:
        edit(job)
    cron = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {**job["metadata"], "name": "nightly"},
        "spec": {"schedule": "0 2 * * *", "jobTemplate": {"spec": job["spec"]}},
    }
    request = doc["request"]
    request.update(name="nightly", object=cron)
    for key in ("kind", "requestKind"):
        request[key] = {"group": "batch", "version": "v1", "kind": "CronJob"}
    for key in ("resource", "requestResource"):
        request[key] = {"group": "batch", "version": "v1", "resource": "cronjobs"}
    return doc


def test_gpus_hidden_in_job_and_cronjob_template_sidecars_are_priced(
    default: AdmissionService,
) -> None:
    """A user moves a Job's GPUs into a sidecar init container of its pod template, or wraps
    the Job in a CronJob: each pod still holds its GPU, and the Job (each CronJob run) is
    priced the same: 4 pods at once × 1 GPU (not pinned: the dearest) × 12h (the CronJob:
    per run, within its monthly price)."""
    plain = ask(default, review(JOB))
    expected = f"${4 * 27.04 * 12:,.2f} (4 × gb200"
    assert estimate(plain).startswith(expected)
    for doc in (review(JOB, _job_sidecar), _as_cronjob(review(JOB), _job_sidecar)):
        response = ask(default, doc)
        assert not response["allowed"] and codes(response) == {"over-threshold"}
        assert expected in estimate(response), doc["request"]["kind"]


def _argo(edit: Callable[[dict[str, Any]], object]) -> Edit:
    """An edit of the `gpu-train` template of the Workflow capture (or of its spec when the
    edit takes the spec: a workflow-level podSpecPatch)."""

    def apply(workflow: dict[str, Any]) -> None:
        template = _train(workflow)
        set_gpus(template["container"], None)
        edit({"template": template, "spec": workflow["spec"]})

    return apply


def _gpu_container(name: str) -> dict[str, Any]:
    container = {"name": name, "image": "nvcr.io/nvidia/pytorch:24.05-py3"}
    set_gpus(container, "4")
    return container


def _script(t: dict[str, Any]) -> None:
    del t["template"]["container"]
    t["template"]["script"] = {**_gpu_container("main"), "source": "train()"}


def _container_set(t: dict[str, Any]) -> None:
    del t["template"]["container"]
    t["template"]["containerSet"] = {
        "containers": [{"name": "a", "image": "x"}, _gpu_container("b")]
    }


ARGO_HIDING = [
    ("a script template", _script),
    ("a template sidecar", lambda t: t["template"].update(sidecars=[_gpu_container("helper")])),
    (
        "a template init container",
        lambda t: t["template"].update(initContainers=[_gpu_container("warm")]),
    ),
    ("the second container of a containerSet", _container_set),
    (
        "a YAML podSpecPatch",
        lambda t: t["template"].update(
            podSpecPatch="containers:\n- name: main\n"
            "  resources:\n    limits:\n      nvidia.com/gpu: 4\n"
        ),
    ),
    (
        "a workflow-level podSpecPatch",
        lambda t: t["spec"].update(
            podSpecPatch='{"containers":[{"name":"main","resources":{"limits":{"nvidia.com/gpu":"4"}}}]}'
        ),
    ),
]


@pytest.mark.parametrize("edit", [a[1] for a in ARGO_HIDING], ids=[a[0] for a in ARGO_HIDING])
def test_gpus_hidden_in_argo_templates_are_priced(edit: Edit, default: AdmissionService) -> None:
    """A user takes the GPUs out of the training template's `container` and asks for them
    where Argo still gives them to the pod: a script, a sidecar or init container of the
    template, a containerSet, a podSpecPatch (the template's or the workflow's). The
    Workflow costs at least what the captured one does, 4 × a100-80gb for the step (a
    workflow-level patch gives every pod of the DAG its GPUs), and is held at the gate."""
    baseline = ask(default, review(WORKFLOW))["auditAnnotations"]["estimated-cost-usd"]
    response = ask(default, review(WORKFLOW, _argo(edit)))
    assert not response["allowed"] and codes(response) == {"over-threshold"}
    assert float(response["auditAnnotations"]["estimated-cost-usd"]) >= float(baseline)


# --- 3. GPUs under a resource name the table does not price ---------------------------------

PRICED = ["nvidia.com/gpu.shared", "amd.com/gpu", "nvidia.com/mig-1g.10gb"]
UNPRICED = [
    "gpu.intel.com/i915",  # Intel's device plugin: "gpu" only in the domain
    "gpu.intel.com/xe",
    "NVIDIA.com/gpu",
    "nvidia.com/GPU",
    "example.com/gpu",
    "example.com/GPU",
    "nvidia.com/mig-9g.99gb",
]


def _one_gpu_for_an_hour(resource: str) -> Edit:
    def edit(pod: dict[str, Any]) -> None:
        set_gpus(containers(pod)[0], "1", resource)
        pod["metadata"]["annotations"]["costgate.io/max-runtime"] = "1h"

    return edit


@pytest.mark.parametrize("resource", PRICED + UNPRICED)
def test_a_gpu_under_an_unpriced_resource_name_is_not_free(
    resource: str, default: AdmissionService
) -> None:
    """A user asks for a GPU under a resource name costgate's table does not list (another
    vendor's, a case variant, an unknown MIG profile), hoping it reads as a CPU-only pod
    and passes at $0. Every GPU-like name is priced: listed names at their price, the others
    as the dearest GPU in the table, with a warning saying so (or denied as
    unknown-gpu-type where the policy says `unknown_gpu: deny`)."""
    doc = review(POD, _one_gpu_for_an_hour(resource))
    response = ask(default, doc)
    assert response["allowed"]
    usd = float(response["auditAnnotations"]["estimated-cost-usd"])
    assert usd > 0
    if resource in UNPRICED:
        table = load_config().table
        assert usd == table.gpus[table.most_expensive()].usd_per_hour
        assert any("the dearest it could be" in w for w in response["warnings"])
        strict = ask(served(unknown_gpu="deny"), doc)
        assert not strict["allowed"] and codes(strict) == {"unknown-gpu-type"}


def _t4_by_annotation_only(pod: dict[str, Any]) -> None:
    """8 GPUs that may land on any GPU node, declared t4 by the annotation alone."""
    pod["spec"].pop("nodeSelector", None)
    pod["spec"].pop("affinity", None)
    pod["metadata"]["annotations"]["costgate.io/gpu-type"] = "t4"
    pod["metadata"]["annotations"]["costgate.io/max-runtime"] = "1h"


def test_a_gpu_type_annotation_alone_lowers_the_price_only_where_the_policy_trusts_it() -> None:
    """A user writes `costgate.io/gpu-type: t4` on 8 GPUs with no node selector: the pod may
    run on H100s, priced as T4s. By default (`gpu_type_annotation: checked`) the annotation
    alone pins nothing: the unknown-gpu rule prices the pod as the dearest GPU (over the
    threshold: denied) or denies it, and the message says which nodeSelector makes the
    declaration count. Only a policy that opts into `trusted` takes the user's word ($7.82,
    admitted). With a nodeSelector that keeps the pod on T4 nodes, the T4 price stands in
    both modes."""
    doc = review(POD, _t4_by_annotation_only)
    checked = ask(served(), doc)
    assert not checked["allowed"]
    assert codes(checked) == {"over-threshold"}
    table = load_config().table
    dearest = table.gpus[table.most_expensive()]
    assert float(checked["auditAnnotations"]["estimated-cost-usd"]) == round(
        8 * dearest.usd_per_hour, 2
    )
    assert any(
        "costgate.io/gpu-type=t4 alone does not keep the pod on t4 nodes" in w
        and f"priced as {dearest.id}" in w
        for w in checked["warnings"]
    )
    strict = ask(served(unknown_gpu="deny"), doc)
    assert codes(strict) == {"unknown-gpu-type"}
    assert "pin t4 with a GPU nodeSelector" in strict["status"]["message"]

    trusted = ask(served(gpu_type_annotation="trusted"), doc)
    assert trusted["allowed"]
    assert float(trusted["auditAnnotations"]["estimated-cost-usd"]) == round(8 * 0.978, 2)

    pinned = review(
        POD, lambda pod: (_t4_by_annotation_only(pod), pod["spec"].update(nodeSelector=T4_SELECTOR))
    )
    for svc in (served(unknown_gpu="deny"), served(gpu_type_annotation="trusted")):
        answer = ask(svc, pinned)
        assert answer["allowed"], answer
        assert float(answer["auditAnnotations"]["estimated-cost-usd"]) == round(8 * 0.978, 2)


# --- 4. approvals used beyond what they approve ------------------------------------------


def approver(name: str, root: Path) -> tuple[KeyPair, AdmissionService]:
    """(`costgate keygen NAME`'s key pair, a service holding its public key, at time NOW)."""
    pair = keygen(name, root / "private")
    (root / "public").mkdir()
    (root / "public" / pair.public_path.name).write_bytes(pair.public_path.read_bytes())
    config = load_config(verify_approval=Keyring(root / "public").verify)
    return pair, AdmissionService(config, clock=lambda: NOW)


@pytest.fixture(scope="module")
def carol(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, AdmissionService]:
    """(approver carol's private key, a service holding her public key)."""
    pair, svc = approver("carol", tmp_path_factory.mktemp("approvers"))
    return pair.private_path, svc


def _approved(token: str, edit: Edit | None = None) -> Edit:
    def apply(obj: dict[str, Any]) -> None:
        obj["metadata"]["annotations"]["costgate.io/approval"] = token
        if edit is not None:
            edit(obj)

    return apply


def _approval(key: Path, **claims: Any) -> str:
    claims = {"namespace": "demo", "max_usd": 1500.0, "expires_in": 3600, "now": NOW, **claims}
    return mint(key, **claims)


BIGGER = [
    ("more GPUs", lambda pod: set_gpus(containers(pod)[0], "16")),
    (
        "a longer runtime",
        lambda pod: pod["metadata"]["annotations"].update({"costgate.io/max-runtime": "48h"}),
    ),
    (
        "a dearer GPU type",
        lambda pod: pod["metadata"]["annotations"].update({"costgate.io/gpu-type": "b300"}),
    ),
]


@pytest.mark.parametrize("edit", [b[1] for b in BIGGER], ids=[b[0] for b in BIGGER])
def test_an_approval_does_not_cover_a_bigger_workload(edit: Edit, carol) -> None:
    """A user gets an approval for the workload as reviewed (8 × H100 for 24h, up to $1,500)
    and then submits more: more GPUs, a longer runtime, a dearer GPU type. The approval
    caps the cost, not the shape: anything priced above its maximum is refused."""
    key, svc = carol
    token = _approval(key, experiment="llm-pretrain-42")
    assert ask(svc, review(POD, _approved(token)))["allowed"]
    response = ask(svc, review(POD, _approved(token, edit)))
    assert not response["allowed"] and codes(response) == {"invalid-approval"}
    assert 'above the $1,500.00 approved by "carol"' in response["status"]["message"]


def test_an_approval_copied_from_an_approved_object_covers_only_what_it_names(carol) -> None:
    """An approved Workflow carries its token, and costgate copies it into the pods the
    Workflow makes, where anyone who reads pods sees it. A user copies it onto their own pod:
    it covers only its namespace and experiment, up to its maximum. Within those it is an
    approval of the experiment's spend, whoever submits it (by design: per-workload tokens
    are bound by name instead)."""
    key, svc = carol
    token = _approval(key, experiment="llm-finetune-9", max_usd=500.0)
    workflow = review(WORKFLOW, _approved(token))
    assert ask(svc, workflow)["allowed"]
    copied = patched(workflow["request"]["object"], ask(svc, workflow, "mutate"))
    leaked = copied["spec"]["podMetadata"]["annotations"]["costgate.io/approval"]
    assert leaked == token

    def same_experiment(pod: dict[str, Any]) -> None:
        pod["metadata"]["labels"].update(owner="mallory", experiment="llm-finetune-9")
        pod["metadata"]["annotations"]["costgate.io/max-runtime"] = "8h"  # $440.32

    other_experiment = ask(svc, review(POD, _approved(leaked)))
    assert codes(other_experiment) == {"invalid-approval"}
    assert 'is for experiment "llm-finetune-9"' in other_experiment["status"]["message"]
    other_namespace = review(POD, _approved(leaked, same_experiment))
    other_namespace["request"]["namespace"] = "other"
    other_namespace["request"]["object"]["metadata"]["namespace"] = "other"
    response = ask(svc, other_namespace)
    assert codes(response) == {"invalid-approval"}
    assert 'is for namespace "demo", not "other"' in response["status"]["message"]
    bigger = review(POD, _approved(leaked, same_experiment))
    bigger["request"]["object"]["metadata"]["annotations"]["costgate.io/max-runtime"] = "24h"
    assert codes(ask(svc, bigger)) == {"invalid-approval"}
    assert ask(svc, review(POD, _approved(leaked, same_experiment)))["allowed"]


SELF_APPROVALS = [
    # (case, the requester the API server authenticated, the pod's owner label)
    ("submitted by the approver", "alice", "bob"),
    ("submitted by the approver's OIDC name", "oidc:alice@example.com", "bob"),
    ("owned by the approver, submitted by a colleague", "bob", "alice"),
]


@pytest.mark.parametrize(
    ("requester", "owner"),
    [c[1:] for c in SELF_APPROVALS],
    ids=[c[0] for c in SELF_APPROVALS],
)
def test_an_approver_cannot_approve_their_own_workload(
    requester: str, owner: str, tmp_path: Path
) -> None:
    """An approver holds a key and mints a token for a workload they submit, or one that
    names them its owner. The requester comes from request.userInfo, which the API server
    sets from authentication, so it cannot be forged; the owner label is the workload's own
    claim. Either way the approval is refused (`invalid-approval`): nobody approves their
    own spend. The same token on a colleague's workload, submitted by that colleague, is
    accepted, so the refusal is about the person, not the token."""
    pair, svc = approver("alice", tmp_path)
    token = _approval(pair.private_path, experiment="llm-pretrain-42")

    def as_(user: str, owner_label: str) -> dict[str, Any]:
        doc = review(
            POD,
            _approved(token, lambda pod: pod["metadata"]["labels"].update({"owner": owner_label})),
        )
        doc["request"]["userInfo"] = {"username": user, "groups": ["system:authenticated"]}
        return ask(svc, doc)

    refused = as_(requester, owner)
    assert not refused["allowed"]
    assert codes(refused) == {"invalid-approval"}
    assert (
        "nobody approves their own workload: ask another approver" in refused["status"]["message"]
    )
    accepted = as_("dave", "dave")
    assert accepted["allowed"], accepted["status"]["message"]
    assert accepted["auditAnnotations"]["approval-key-id"] == pair.key_id


# --- 5. attribution labels that look right ------------------------------------------------

LOOKALIKE_LABELS = [
    ("a trailing space", {"owner": "alice "}),
    ("a leading space", {"owner": " alice"}),
    ("only a space", {"owner": " "}),
    ("an empty experiment", {"experiment": ""}),
    ("a Cyrillic a", {"owner": "\u0430lice"}),
    ("fullwidth letters", {"owner": "\uff41\uff4c\uff49\uff43\uff45"}),
    ("a zero-width space", {"owner": "alice\u200b"}),
    ("a trailing newline", {"owner": "alice\n"}),
    ("64 characters", {"owner": "a" * 64}),
    ("a number", {"owner": 5}),
]


@pytest.mark.parametrize(
    "labels", [c[1] for c in LOOKALIKE_LABELS], ids=[c[0] for c in LOOKALIKE_LABELS]
)
def test_attribution_label_values_that_only_look_valid_are_refused(
    labels: dict[str, Any], default: AdmissionService
) -> None:
    """A user writes an owner or experiment that reads like a real one but is not a valid
    label value (the API server would refuse most of these itself): costgate must not be
    fooled into attributing or budgeting the pod under it, whatever the API server does."""
    response = ask(default, review(POD, lambda pod: pod["metadata"]["labels"].update(labels)))
    assert not response["allowed"] and "missing-labels" in codes(response)


MISPLACED = [
    ("in annotations", lambda meta: meta["annotations"].update(meta.pop("labels"))),
    (
        "under another prefix",
        lambda meta: meta.update(labels={f"example.com/{k}": v for k, v in meta["labels"].items()}),
    ),
    (
        "under costgate's prefix",
        lambda meta: meta.update(labels={f"costgate.io/{k}": v for k, v in meta["labels"].items()}),
    ),
    (
        "with capitalised keys",
        lambda meta: meta.update(labels={k.title(): v for k, v in meta["labels"].items()}),
    ),
]


@pytest.mark.parametrize("move", [m[1] for m in MISPLACED], ids=[m[0] for m in MISPLACED])
def test_attribution_labels_anywhere_but_the_labels_are_missing(
    move: Callable[[dict[str, Any]], object], default: AdmissionService
) -> None:
    """A user puts owner and experiment where a person reading the YAML sees them, but not
    as the labels: in annotations, under another prefix, with other keys."""
    response = ask(default, review(POD, lambda pod: move(pod["metadata"])))
    assert not response["allowed"] and "missing-labels" in codes(response)


def test_owner_quota_cannot_be_split_across_lookalike_owners() -> None:
    """A user at their owner quota submits more under `owner: "alice "` (or a lookalike),
    hoping for a second, empty bucket. Such a pod is refused for its labels and holds
    nothing; `alice` stays at her quota. (Distinct valid values, `Alice` or `bob`, are other
    owners: owner labels are declared, not authenticated.)"""
    svc, state = service_for(owner_quota={"max_gpus": 8})
    assert answer(svc, gpu_pod(8, name="a"))["allowed"]
    for lookalike in ("alice ", "\u0430lice", "alice\u200b"):
        response = answer(svc, gpu_pod(1, owner=lookalike, name="b"))
        assert not response["allowed"] and codes(response) == {"missing-labels"}
        assert state.owner_totals("team-a", lookalike).gpus == 0
    response = answer(svc, gpu_pod(1, name="c"))
    assert not response["allowed"] and codes(response) == {"over-quota"}
    assert state.owner_totals("team-a", "alice").gpus == 8


# --- 6. updates that raise the cost where the API allows them --------------------------------


def _t4_job(job: dict[str, Any]) -> None:
    """The Job capture pinned to T4s: 4 pods × 1 × t4 × 12h = $46.94, under the gate."""
    job["spec"]["template"]["spec"]["nodeSelector"] = dict(T4_SELECTOR)


def _suspended_t4_job(job: dict[str, Any]) -> None:
    _t4_job(job)
    job["spec"]["suspend"] = True


def _template(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]


JOB_RAISES = [
    # parallelism is mutable on any Job: 16 at once ($187.78)
    ("more pods at once", _t4_job, lambda j: j["spec"].update(parallelism=16, completions=16)),
    # KEP-5440: a suspended Job's template resources (GPUs included): 4 × 4 GPUs ($187.78)
    (
        "more GPUs per pod while suspended",
        _suspended_t4_job,
        lambda j: set_gpus(_template(j)["containers"][0], "4"),
    ),
    # KEP-2926: a suspended Job's node selector: 4 × h100 ($330.24)
    (
        "a dearer GPU type while suspended",
        _suspended_t4_job,
        lambda j: _template(j).update(
            nodeSelector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
        ),
    ),
    # a longer declared runtime with the deadline taken away: 7 days ($657.22)
    (
        "a longer runtime and no deadline",
        _t4_job,
        lambda j: (
            j["metadata"].setdefault("annotations", {}).update({"costgate.io/max-runtime": "7d"}),
            j["spec"].pop("activeDeadlineSeconds"),
        ),
    ),
]


@pytest.mark.parametrize(
    ("create", "change"), [r[1:] for r in JOB_RAISES], ids=[r[0] for r in JOB_RAISES]
)
def test_an_update_raising_a_jobs_cost_is_priced_again(
    create: Edit, change: Edit, default: AdmissionService
) -> None:
    """A user gets a cheap Job admitted, then raises what it costs with an UPDATE the API
    server accepts. costgate prices the Job again and holds the update to the gate."""
    doc = review(JOB, create)
    job = stored(default, doc)
    response = ask(default, update(doc, job, change))
    assert not response["allowed"] and codes(response) == {"over-threshold"}


def test_an_update_raising_a_cronjobs_job_template_is_priced_again(
    default: AdmissionService,
) -> None:
    """A CronJob's jobTemplate is mutable: a user admitted with 1 T4 per pod raises it to 4,
    for every run to come."""
    doc = _as_cronjob(review(JOB), _t4_job)
    cron = stored(default, doc)

    def change(c: dict[str, Any]) -> None:
        set_gpus(c["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0], "4")

    response = ask(default, update(doc, cron, change))
    assert not response["allowed"] and codes(response) == {"over-threshold"}


DEADLINE_CHANGES: dict[str, Edit] = {
    "removed": lambda spec: spec.pop("activeDeadlineSeconds"),
    "raised past the declaration": lambda spec: spec.update(activeDeadlineSeconds=30 * 86400),
}
RAISED_DECLARATION = "costgate.io/max-runtime raised to 7d, the deadline kept"


def _raise_declaration(obj: dict[str, Any]) -> None:
    obj["metadata"].setdefault("annotations", {}).update({"costgate.io/max-runtime": "7d"})


def _deadline_spec(obj: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    for key in path:
        obj = obj[key]
    return obj


DEADLINES = {
    "Job": (lambda: review(JOB, _t4_job), ("spec",)),
    "CronJob": (lambda: _as_cronjob(review(JOB), _t4_job), ("spec", "jobTemplate", "spec")),
    "Workflow": (lambda: review(SWEEP), ("spec",)),
}


def _deadline_update(kind: str, change: str) -> tuple[AdmissionService, dict[str, Any], int]:
    """(service, UPDATE review, deadline as stored): a `kind` admitted under a $300 threshold,
    then updated with `change` to its activeDeadlineSeconds or its declared runtime."""
    make, path = DEADLINES[kind]
    svc = served(threshold_usd=300)
    doc = make()
    obj = stored(svc, doc)
    kept = _deadline_spec(obj, path)["activeDeadlineSeconds"]
    assert 0 < kept <= 12 * 3600
    if change == RAISED_DECLARATION:
        return svc, update(doc, obj, _raise_declaration), kept
    edit = DEADLINE_CHANGES[change]
    return svc, update(doc, obj, lambda o: edit(_deadline_spec(o, path))), kept


@pytest.mark.parametrize(
    ("kind", "change"),
    [
        *[(kind, change) for kind in ("Job", "CronJob") for change in DEADLINE_CHANGES],
        *[(kind, RAISED_DECLARATION) for kind in DEADLINES],
    ],
)
def test_an_update_removing_or_raising_the_deadline_gets_it_back(kind: str, change: str) -> None:
    """activeDeadlineSeconds is mutable on Jobs, CronJobs' job templates and Workflows: a
    user removes it, raises it past the declaration, or raises the declaration
    (`costgate.io/max-runtime`) while keeping it. The dead-man's switch must stay: a Job's
    or CronJob's update is admitted and the mutating webhook puts the deadline back; a raised
    declaration alone moves nothing, on any of the three."""
    svc, changed, kept = _deadline_update(kind, change)
    response = ask(svc, changed)
    assert response["allowed"] and codes(response) == set()
    after = patched(changed["request"]["object"], ask(svc, changed, "mutate"))
    assert _deadline_spec(after, DEADLINES[kind][1])["activeDeadlineSeconds"] == kept


@pytest.mark.parametrize("change", list(DEADLINE_CHANGES))
def test_an_update_removing_or_raising_a_workflows_deadline_is_priced_again(change: str) -> None:
    """A Workflow runs until its deadline or its declared runtime, whichever comes first;
    without the deadline (or past it) the longer run is priced again and held at the gate."""
    svc, changed, _ = _deadline_update("Workflow", change)
    response = ask(svc, changed)
    assert not response["allowed"]
    assert codes(response) == {"over-threshold"}


def _train(workflow: dict[str, Any]) -> dict[str, Any]:
    """The GPU template of the Workflow capture."""
    return next(t for t in workflow["spec"]["templates"] if t["name"] == "gpu-train")


def _patched_to_16_gpus(workflow: dict[str, Any]) -> None:
    patch = {"containers": [{"name": "main", "resources": {"limits": {"nvidia.com/gpu": "16"}}}]}
    _train(workflow)["podSpecPatch"] = json.dumps(patch)


WORKFLOW_RAISES = [
    # 2 of 4 sweep trials at once ($216.32) -> all 4 ($432.64)
    ("more parallelism", SWEEP, lambda wf: wf["spec"].update(parallelism=4)),
    # a podSpecPatch added to the running DAG's training step: 4 -> 16 GPUs ($658.56)
    ("a podSpecPatch with more GPUs", WORKFLOW, _patched_to_16_gpus),
]


@pytest.mark.parametrize(
    ("name", "change"), [r[1:] for r in WORKFLOW_RAISES], ids=[r[0] for r in WORKFLOW_RAISES]
)
def test_an_update_raising_a_running_workflows_cost_is_priced_again(
    name: str, change: Edit
) -> None:
    """A Workflow's spec can be edited while it runs (parallelism, podSpecPatch): a user
    admitted under the gate raises what the rest of the run may spend."""
    svc = served(threshold_usd=300)
    doc = review(name)
    workflow = stored(svc, doc)
    response = ask(svc, update(doc, workflow, change))
    assert not response["allowed"] and codes(response) == {"over-threshold"}


@pytest.mark.parametrize("name", ["validate-pod-update-label", "validate-workflow-update-label"])
@pytest.mark.parametrize("label", ["owner", "experiment"])
def test_an_update_removing_attribution_is_denied(
    name: str, label: str, default: AdmissionService
) -> None:
    """A user relabels a running GPU pod or Workflow (the captured `kubectl label` updates)
    and drops its owner or experiment, so that its spend is attributed to nobody."""
    response = ask(default, review(name, lambda obj: obj["metadata"]["labels"].pop(label)))
    assert not response["allowed"]
    assert f"is missing required label {label} " in response["status"]["message"]


def test_a_pod_update_raising_its_declared_runtime_does_not_raise_its_deadline() -> None:
    """A Pod's GPUs cannot change after creation and its deadline can only shrink (see the
    module docstring), but its annotations can: a user raises `costgate.io/max-runtime`.
    Nothing follows from it: the deadline costgate set stays, the stamp stays, and the
    cache goes on pricing the pod by that deadline."""
    svc = served(threshold_usd=5000)
    pod = stored(svc, review(POD))
    assert pod["spec"]["activeDeadlineSeconds"] == 24 * 3600
    doc = update(
        review(POD),
        pod,
        lambda p: p["metadata"]["annotations"].update({"costgate.io/max-runtime": "7d"}),
    )
    assert ask(svc, doc)["allowed"]
    after = patched(doc["request"]["object"], ask(svc, doc, "mutate"))
    assert after["spec"]["activeDeadlineSeconds"] == 24 * 3600
    usage = holding("", "Pod", after, load_config())
    assert usage is not None and usage.usd == pytest.approx(8 * H100 * 24)
