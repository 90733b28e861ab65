"""GPU type resolution and line pricing against the bundled table."""

from __future__ import annotations

import pytest

from tests.support.builders import container, pod, request
from webhook.core.config import Config
from webhook.core.extract.pod import extract_pod
from webhook.core.pricing import price, resolve_types
from webhook.core.types import Placement


def affinity(*terms):
    return {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": k, "operator": op, "values": list(v)} for k, op, v in term
                            ]
                        }
                        for term in terms
                    ]
                }
            }
        }
    }


PRODUCT = "nvidia.com/gpu.product"
GKE = "cloud.google.com/gke-accelerator"
KARPENTER = "karpenter.k8s.aws/instance-gpu-name"
INSTANCE = "node.kubernetes.io/instance-type"

CASES = [
    ("GFD product name", {"nodeSelector": {PRODUCT: "NVIDIA-H100-80GB-HBM3"}}, None, "h100-80gb"),
    (
        "GFD name with a MIG suffix names the parent",
        {"nodeSelector": {PRODUCT: "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb"}},
        None,
        "a100-40gb",
    ),
    ("GFD shared suffix", {"nodeSelector": {PRODUCT: "Tesla-T4-SHARED"}}, None, "t4"),
    ("GKE accelerator", {"nodeSelector": {GKE: "nvidia-l4"}}, None, "l4"),
    (
        "Karpenter a100 is ambiguous: the dearer size",
        {"nodeSelector": {KARPENTER: "a100"}},
        None,
        "a100-80gb",
    ),
    (
        "AWS instance type through the catalogue",
        {"nodeSelector": {INSTANCE: "p4d.24xlarge"}},
        None,
        "a100-40gb",
    ),
    ("GCP machine type", {"nodeSelector": {INSTANCE: "g2-standard-4"}}, None, "l4"),
    ("Azure VM size", {"nodeSelector": {INSTANCE: "Standard_NC24ads_A100_v4"}}, None, "a100-80gb"),
    ("annotation alone", {}, "a10g", "a10g"),
    ("annotation may name an alias", {}, "NVIDIA-A10G", "a10g"),
    (
        "annotation cannot lower what the selector pins",
        {"nodeSelector": {PRODUCT: "NVIDIA-H100-80GB-HBM3"}},
        "t4",
        "h100-80gb",
    ),
    (
        "annotation can raise the price",
        {"nodeSelector": {GKE: "nvidia-l4"}},
        "h100-80gb",
        "h100-80gb",
    ),
    (
        "required affinity In: the dearest allowed type",
        affinity([(KARPENTER, "In", ["a10g", "l4", "l40s"])]),
        None,
        "l40s",
    ),
    (
        "ORed terms: the dearest of the union",
        affinity([(GKE, "In", ["nvidia-l4"])], [(GKE, "In", ["nvidia-tesla-t4"])]),
        None,
        "l4",
    ),
    (
        "ANDed expressions narrow a term",
        affinity([(KARPENTER, "In", ["a10g", "l40s"]), (GKE, "In", ["nvidia-l4", "nvidia-a10g"])]),
        None,
        None,
    ),  # contradictory: the scheduler finds no node; priced as unknown
    (
        "NotIn excludes types",
        affinity([(PRODUCT, "NotIn", ["NVIDIA-B200"]), (KARPENTER, "In", ["b200", "h100"])]),
        None,
        "h100-80gb",
    ),
    (
        "a term that pins nothing leaves the type open",
        affinity([(GKE, "In", ["nvidia-l4"])], [("kubernetes.io/os", "In", ["linux"])]),
        None,
        None,
    ),
    ("Exists pins nothing", affinity([(PRODUCT, "Exists", [])]), None, None),
    ("labels unrelated to GPUs pin nothing", {"nodeSelector": {"disk": "ssd"}}, None, None),
]


@pytest.mark.parametrize(
    ("spec", "annotation", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_gpu_type_resolution(spec, annotation, expected, table, policy) -> None:
    annotations = {"costgate.io/gpu-type": annotation} if annotation else None
    workload = extract_pod(request(pod(spec=spec, annotations=annotations)), Config(table, policy))
    assert workload is not None
    # the annotation as `gpu_type_annotation: trusted` reads it; what `checked` (the default)
    # does with an annotation alone: tests/test_bypass_gpu_type_default.py
    pricing = price(workload, table, hours=1, per_month=False, trust_annotation=True)
    line = pricing.estimate.lines[0]
    if expected is None:
        assert not line.resolved
        assert line.gpu_type == table.candidates("nvidia.com/gpu")[0]  # the dearest NVIDIA GPU
    else:
        assert line.resolved
        assert line.gpu_type == expected


def test_unknown_selector_values_are_reported(table) -> None:
    resolution = resolve_types(Placement(node_selector=((PRODUCT, "NVIDIA-Z9000"),)), table)
    assert resolution.unknown_labels == (f"{PRODUCT}=NVIDIA-Z9000",)
    assert not resolution.candidates


def test_unknown_annotation_is_reported(table) -> None:
    resolution = resolve_types(Placement(gpu_type_annotation="h1000"), table)
    assert resolution.unknown_annotation == "h1000"


def test_annotation_outpriced_by_selector_is_reported(table) -> None:
    resolution = resolve_types(
        Placement(gpu_type_annotation="t4", node_selector=((GKE, "nvidia-h100-80gb"),)), table
    )
    assert resolution.annotation_outpriced == ("t4", "h100-80gb")


def test_cost_is_price_times_gpus_times_hours(table, policy) -> None:
    obj = pod(
        gpus=8,
        annotations={"costgate.io/gpu-type": "h100-80gb"},
        spec={"nodeSelector": {PRODUCT: "NVIDIA-H100-80GB-HBM3"}},
    )
    workload = extract_pod(request(obj), Config(table, policy))
    assert workload is not None
    estimate = price(workload, table, hours=24, per_month=False).estimate
    assert estimate.usd == round(8 * table.gpus["h100-80gb"].usd_per_hour * 24, 2)


def test_mig_slices_are_priced_as_a_fraction_of_their_parent(table, policy) -> None:
    obj = pod(
        containers=[container(limits={"nvidia.com/mig-3g.40gb": "2"})],
        spec={"nodeSelector": {PRODUCT: "NVIDIA-A100-SXM4-80GB"}},
    )
    workload = extract_pod(request(obj), Config(table, policy))
    assert workload is not None
    line = price(workload, table, hours=1, per_month=False).estimate.lines[0]
    assert line.gpu_type == "a100-80gb"
    assert line.label == "a100-80gb/mig-3g.40gb"
    assert line.usd_per_hour == pytest.approx(table.gpus["a100-80gb"].usd_per_hour * 3 / 7)
    assert line.units == 2


def test_amd_gpus_never_price_as_nvidia(table, policy) -> None:
    workload = extract_pod(request(pod(resource="amd.com/gpu")), Config(table, policy))
    assert workload is not None
    line = price(workload, table, hours=1, per_month=False).estimate.lines[0]
    assert table.gpus[line.gpu_type].resource == "amd.com/gpu"


def test_an_unpriced_gpu_resource_prices_as_the_dearest_gpu(table, policy) -> None:
    workload = extract_pod(request(pod(resource="example.com/gpu")), Config(table, policy))
    assert workload is not None
    line = price(workload, table, hours=1, per_month=False).estimate.lines[0]
    assert not line.resolved
    assert line.gpu_type == table.most_expensive()
