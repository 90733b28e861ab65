"""Reading a Pod: effective GPU request, placement, class, and what cannot be read."""

from __future__ import annotations

import pytest

from tests.support.builders import container, pod, request
from tests.support.captures import capture_request
from webhook.core.config import Config
from webhook.core.extract.pod import extract_pod
from webhook.core.extract.podspec import ObjectError
from webhook.core.types import GpuRequest


def gpus_of(obj, table, policy, **kw) -> tuple[GpuRequest, ...] | None:
    workload = extract_pod(request(obj, **kw), Config(table, policy))
    return None if workload is None else workload.pods[0].gpus


GPU = "nvidia.com/gpu"
MIG = "nvidia.com/mig-1g.10gb"

CASES = [
    ("limits only", pod(gpus=2), {GPU: 2}),
    (
        "the larger of limit and request",
        pod(containers=[container(limits={GPU: "2"}, requests={GPU: "4"})]),
        {GPU: 4},
    ),
    (
        "containers add up",
        pod(containers=[container("a", limits={GPU: "1"}), container("b", limits={GPU: "2"})]),
        {GPU: 3},
    ),
    (
        "a plain init container larger than the containers wins",
        pod(containers=[container(limits={GPU: "1"})], init=[container("warm", limits={GPU: "4"})]),
        {GPU: 4},
    ),
    (
        "plain init containers do not add up with each other",
        pod(
            containers=[container(limits={GPU: "1"})],
            init=[container("i1", limits={GPU: "2"}), container("i2", limits={GPU: "3"})],
        ),
        {GPU: 3},
    ),
    (
        "a sidecar init container adds to the containers",
        pod(
            containers=[container(limits={GPU: "2"})],
            init=[container("side", limits={GPU: "1"}, restartPolicy="Always")],
        ),
        {GPU: 3},
    ),
    (
        "a plain init container after a sidecar runs next to it",
        pod(
            containers=[container(limits={GPU: "1"})],
            init=[
                container("side", limits={GPU: "2"}, restartPolicy="Always"),
                container("warm", limits={GPU: "3"}),
            ],
        ),
        {GPU: 5},
    ),
    (
        "MIG slices are their own resource",
        pod(containers=[container(limits={GPU: "1", MIG: "2"})]),
        {GPU: 1, MIG: 2},
    ),
    ("AMD GPUs count", pod(gpus=2, resource="amd.com/gpu"), {"amd.com/gpu": 2}),
    (
        "an unpriced GPU-like resource still counts",
        pod(gpus=1, resource="example.com/gpu"),
        {"example.com/gpu": 1},
    ),
    ("exponent notation is a whole number", pod(gpus="1e1"), {GPU: 10}),
    ("zero GPUs is no GPU workload", pod(gpus=0), None),
    (
        "CPU and memory are not GPUs",
        pod(containers=[container(limits={"cpu": "2", "memory": "1Gi"})]),
        None,
    ),
    (
        "EFA and hugepages are not GPUs",
        pod(containers=[container(limits={"vpc.amazonaws.com/efa": "1", "hugepages-2Mi": "1Gi"})]),
        None,
    ),
]


@pytest.mark.parametrize(("obj", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_effective_gpu_request(obj, expected, table, policy) -> None:
    found = gpus_of(obj, table, policy)
    if expected is None:
        assert found is None
    else:
        assert found is not None
        assert {g.resource: g.units for g in found} == expected


def test_the_captured_sidecar_pod_reads_as_the_scheduler_would(table, policy) -> None:
    # init "warm-up" 4 GPUs alone; then containers 1 + 2 GPUs beside a MIG sidecar.
    workload = extract_pod(
        capture_request("validate-pod-create-sidecar-init"), Config(table, policy)
    )
    assert workload is not None
    assert {g.resource: g.units for g in workload.pods[0].gpus} == {GPU: 4, MIG: 1}


@pytest.mark.parametrize(
    "value",
    ["500m", "-1", "one", "1.5", "0.5"],
    ids=["milli-GPUs", "negative", "not a number", "a fraction", "a decimal below one"],
)
def test_invalid_gpu_quantities_are_reasons_not_crashes(value, table, policy) -> None:
    obj = pod(containers=[container(limits={GPU: value}, requests={GPU: value})])
    workload = extract_pod(request(obj), Config(table, policy))
    assert workload is not None
    assert [r.code for r in workload.problems] == ["invalid-gpu-request"]  # reported once
    assert f'"{value}"' in workload.problems[0].message
    assert '"main"' in workload.problems[0].message


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        ({"containers": "main"}, "spec.containers"),
        (
            {"containers": [{"name": "m", "resources": {"limits": [1]}}]},
            "spec.containers[0].resources.limits",
        ),
        ({"containers": ["x"]}, "spec.containers[0]"),
        ({"nodeSelector": ["a"]}, "spec.nodeSelector"),
        ({"activeDeadlineSeconds": "10"}, "spec.activeDeadlineSeconds"),
    ],
    ids=[
        "containers not a list",
        "limits not an object",
        "a container not an object",
        "nodeSelector not an object",
        "deadline a string",
    ],
)
def test_wrong_types_name_the_field(spec, path, table, policy) -> None:
    obj = pod(spec=spec)
    with pytest.raises(ObjectError) as caught:
        extract_pod(request(obj), Config(table, policy))
    assert caught.value.reason.code == "invalid-request"
    assert f"field {path} must be" in caught.value.reason.message


def test_placement_reads_annotation_selector_and_required_affinity(table, policy) -> None:
    workload = extract_pod(capture_request("validate-pod-create-apply"), Config(table, policy))
    assert workload is not None
    placement = workload.pods[0].placement
    assert placement.required_terms == (
        (("nvidia.com/gpu.product", "In", ("NVIDIA-A100-SXM4-80GB", "NVIDIA-H100-80GB-HBM3")),),
    )
    gpu = extract_pod(capture_request("validate-pod-create-gpu"), Config(table, policy))
    assert gpu is not None
    assert gpu.pods[0].placement.gpu_type_annotation == "h100-80gb"
    assert gpu.pods[0].placement.node_selector == (
        ("nvidia.com/gpu.product", "NVIDIA-H100-80GB-HBM3"),
    )


RS_OWNER = {
    "apiVersion": "apps/v1",
    "kind": "ReplicaSet",
    "name": "srv-1",
    "uid": "u",
    "controller": True,
}
WF_OWNER = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "Workflow",
    "name": "wf",
    "uid": "u",
    "controller": True,
}
RS_SA = "system:serviceaccount:kube-system:replicaset-controller"
ARGO_SA = "system:serviceaccount:argo:argo"


@pytest.mark.parametrize(
    ("owner", "username", "expected"),
    [
        (None, "alice", "batch"),
        (RS_OWNER, RS_SA, "serving"),
        (RS_OWNER, "alice", "batch"),
        (WF_OWNER, ARGO_SA, "controlled"),
        (WF_OWNER, "alice", "batch"),
        ({**WF_OWNER, "controller": False}, ARGO_SA, "batch"),
        (WF_OWNER, RS_SA, "batch"),
    ],
    ids=[
        "a bare pod is batch",
        "a ReplicaSet's pod created by its controller is serving",
        "a person copying a ReplicaSet ownerReference gets batch",
        "a Workflow's pod created by the workflow controller was priced with it",
        "a person copying a Workflow ownerReference is priced like any pod",
        "a non-controller ownerReference does not count",
        "another controller's account does not vouch for a Workflow pod",
    ],
)
def test_workload_class_needs_owner_and_its_controller(
    owner, username, expected, table, policy
) -> None:
    workload = extract_pod(request(pod(owner=owner), username=username), Config(table, policy))
    assert workload is not None
    assert workload.workload_class == expected


def test_generate_name_pods_have_a_display_name(table, policy) -> None:
    workload = extract_pod(capture_request("mutate-pod-create-generatename"), Config(table, policy))
    assert workload is not None
    assert workload.name == ""
    assert workload.display_name == "gpu-job-*"
