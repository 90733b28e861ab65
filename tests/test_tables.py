"""The bundled pricing table and policy, and refusing bad files with file and field named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.support.config import policy_data, pricing_data
from tests.support.paths import REPO
from webhook.tables import TableError, load_policy, load_pricing, parse_policy, parse_pricing

REQUIRED_GPUS = [
    "b200",
    "h200",
    "h100-80gb",
    "h100-pcie",
    "a100-40gb",
    "a100-80gb",
    "l40s",
    "l4",
    "a10g",
    "a10",
    "t4",
    "v100-16gb",
    "mi300x",
]


def test_the_bundled_link_points_at_the_repository_table() -> None:
    bundled = REPO / "webhook" / "defaults" / "pricing.yaml"
    assert bundled.resolve() == (REPO / "pricing" / "default.yaml").resolve()


@pytest.mark.parametrize("gpu", REQUIRED_GPUS)
def test_the_table_prices_the_common_gpus_with_source_and_date(gpu, table) -> None:
    entry = table.gpus[gpu]
    assert entry.usd_per_hour > 0
    assert entry.source
    assert re.fullmatch(r"20\d\d-\d\d-\d\d", entry.as_of)


@pytest.mark.parametrize(
    ("key", "value", "gpu"),
    [
        ("nvidia.com/gpu.product", "NVIDIA-H100-80GB-HBM3", "h100-80gb"),
        ("nvidia.com/gpu.product", "NVIDIA-A100-SXM4-80GB", "a100-80gb"),
        ("nvidia.com/gpu.product", "Tesla-T4", "t4"),
        ("cloud.google.com/gke-accelerator", "nvidia-tesla-a100", "a100-40gb"),
        ("cloud.google.com/gke-accelerator", "nvidia-h200-141gb", "h200"),
        ("karpenter.k8s.aws/instance-gpu-name", "l40s", "l40s"),
        ("node.kubernetes.io/instance-type", "p5.48xlarge", "h100-80gb"),
        ("node.kubernetes.io/instance-type", "a3-highgpu-8g", "h100-80gb"),
        ("node.kubernetes.io/instance-type", "Standard_ND96isr_H100_v5", "h100-80gb"),
        ("node.kubernetes.io/instance-type", "g5.xlarge", "a10g"),
    ],
)
def test_labels_and_instance_types_name_gpus(key, value, gpu, table) -> None:
    assert gpu in table.types_for_label(key, value)


@pytest.mark.parametrize("cloud_prefix", ["p5", "a3-", "Standard_N"])
def test_instance_catalogue_covers_each_cloud(cloud_prefix, table) -> None:
    assert any(name.startswith(cloud_prefix) for name in table.instance_types)


def test_mig_profiles_are_fractions_of_their_parents(table) -> None:
    rule = table.resources["nvidia.com/mig-1g.10gb"]
    assert rule.fraction == pytest.approx(1 / 7)
    assert "a100-80gb" in rule.of


def _edit(data: dict, path: str, value) -> dict:
    node = data
    *parents, last = path.split(".")
    for key in parents:
        node = node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return data


_DELETE = object()

BAD_PRICING = [
    ("gpus.h100-80gb.usd_per_hour", -1, "gpus.h100-80gb.usd_per_hour"),
    ("gpus.h100-80gb.usd_per_hour", "cheap", "gpus.h100-80gb.usd_per_hour"),
    ("gpus.h100-80gb.source", _DELETE, "gpus.h100-80gb.source"),
    ("gpus.h100-80gb.as_of", "last week", "gpus.h100-80gb.as_of"),
    ("gpus.h100-80gb.resource", "nvidia.com/nope", "gpus.h100-80gb.resource"),
    ("gpus.h100-80gb.colour", "green", "gpus.h100-80gb.colour"),
    ("resources.nvidia.com/mig-1g.10gb", {"fraction": "9/7"}, "fraction"),
    ("currency", "EUR", "currency"),
    ("version", 2, "version"),
]


@pytest.mark.parametrize(
    ("path", "value", "named"), BAD_PRICING, ids=[f"{p} = {v!r}"[:50] for p, v, _ in BAD_PRICING]
)
def test_bad_pricing_is_refused_naming_file_and_field(path, value, named, tmp_path) -> None:
    data = pricing_data()
    if path.startswith("resources."):
        data["resources"][path.removeprefix("resources.")] = value
    else:
        _edit(data, path, value)
    file = tmp_path / "prices.yaml"
    file.write_text(yaml.safe_dump(data))
    with pytest.raises(TableError) as caught:
        load_pricing(file)
    assert str(caught.value).startswith(f"{file}: ")
    assert named in str(caught.value)


def test_dangling_references_are_refused() -> None:
    data = pricing_data()
    data["instance_types"]["p5.48xlarge"]["gpu"] = "h999"
    with pytest.raises(TableError, match=r"instance_types.p5.48xlarge.gpu: unknown GPU h999"):
        parse_pricing(data, "t.yaml")


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("threshold_usd", -5, "threshold_usd"),
        ("default_runtime", "forever", "default_runtime"),
        ("max_runtime", "1h", "default_runtime exceeds max_runtime"),
        ("mode", "audit", "mode"),
        ("unknown_gpu", "cheapest", "unknown_gpu"),
        ("required_labels", ["Not A Label!"], "required_labels"),
        ("namespaces", {"x": {"threshold": 5}}, "namespaces.x.threshold"),
        ("typo_field", 1, "typo_field"),
    ],
)
def test_bad_policy_is_refused_naming_file_and_field(field, value, named) -> None:
    data = policy_data()
    data[field] = value
    with pytest.raises(TableError) as caught:
        parse_policy(data, "policy.yaml")
    assert str(caught.value).startswith("policy.yaml: ")
    assert named in str(caught.value)


@pytest.mark.parametrize(
    ("load", "what"),
    [(load_policy, "policy"), (load_pricing, "pricing")],
    ids=["policy", "pricing"],
)
def test_missing_and_unparseable_files(load, what, tmp_path: Path) -> None:
    absent = tmp_path / "absent.yaml"
    with pytest.raises(TableError, match=f"cannot read the {what} file") as caught:
        load(absent)
    assert str(caught.value).startswith(f"{absent}: ")
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: [1\n")
    with pytest.raises(TableError, match="not valid YAML") as caught:
        load(broken)
    assert str(caught.value).startswith(f"{broken}: ")
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("version: 1\n# déjà\n".encode("latin-1"))
    with pytest.raises(TableError, match=r"not UTF-8 text \(byte 14\)") as caught:
        load(latin1)
    assert str(caught.value).startswith(f"{latin1}: ")


def test_a_namespace_whose_default_runtime_exceeds_its_max_is_refused() -> None:
    data = policy_data()
    data["namespaces"] = {"ml": {"max_runtime": "1h"}}  # inherits the 12h default_runtime
    with pytest.raises(
        TableError, match=r"^policy.yaml: namespaces.ml: default_runtime exceeds max_runtime$"
    ):
        parse_policy(data, "policy.yaml")


def test_namespace_overrides_inherit_the_rest(policy) -> None:
    data = policy_data()
    data["namespaces"] = {"ml-research": {"threshold_usd": 500, "mode": "warn"}}
    parsed = parse_policy(data, "p")
    research = parsed.for_namespace("ml-research")
    assert research.threshold_usd == 500 and research.mode == "warn"
    assert research.default_runtime_seconds == policy.default.default_runtime_seconds
    assert parsed.for_namespace("other") == policy.default


def test_the_bundled_policy_has_the_documented_defaults(policy) -> None:
    default = policy.default
    assert default.required_labels == ("owner", "experiment")
    assert default.default_runtime_seconds == 12 * 3600
    assert default.max_runtime_seconds == 7 * 86400
    assert default.threshold_usd == 100
    assert default.unknown_gpu == "most-expensive"
    assert default.mode == "enforce"
    assert "kube-system" in policy.exempt_namespaces


def test_an_unknown_approver_group_is_refused() -> None:
    data = policy_data()
    data["namespaces"] = {"ml": {"approvers": ["group:leads"]}}
    with pytest.raises(TableError, match=r"namespaces.ml: approvers: unknown group 'leads'"):
        parse_policy(data, "policy.yaml")
