"""Getting past the gate before it is asked: GPUs the API server's filter never sends.

The shipped webhooks carry CEL `matchConditions` (`manifests/base/webhooks.yaml`) so that the
API server calls costgate for GPU workloads only. Whatever the filter does not send is never
priced, labelled or given a deadline, however well costgate would have judged it. A real API
server admitted pods requesting 8 × `nvidia.com/GRID_A100-40C` (vGPU),
`nvidia.com/GH100_H100_SXM5_80GB` (PCI passthrough) and `example.com/GPU` without labels and
without calling costgate: the filter tested `contains('gpu')`, case-sensitive.

The filter and costgate's classifier now apply one rule (`webhook.core.gpu_names`); these
tests evaluate the shipped CEL with cel-python (plus the Kubernetes `lowerAscii()`,
`support/cel.py`) against the classifier, name by name.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import cel
from tests.support.paths import REPO
from webhook.cli import main
from webhook.core.gpu_names import cel_test
from webhook.tables import TableError, load_config, parse_pricing

WEBHOOKS = REPO / "manifests" / "base" / "webhooks.yaml"
PRICING = REPO / "pricing" / "default.yaml"

# What a real API server created, unlabelled, without calling costgate.
ADMITTED_UNSEEN = [
    "nvidia.com/GRID_A100-40C",  # NVIDIA vGPU profile
    "nvidia.com/GH100_H100_SXM5_80GB",  # PCI passthrough (KubeVirt-style device plugins)
    "example.com/GPU",  # another vendor's, upper case
]


@functools.cache
def _requests_gpus() -> dict[str, str]:
    """The `requests-gpus` expression of every shipped webhook, by webhook name."""
    found = {}
    for doc in yaml.safe_load_all(WEBHOOKS.read_text()):
        for webhook in doc["webhooks"]:
            for condition in webhook.get("matchConditions", ()):
                if condition["name"] == "requests-gpus":
                    found[webhook["name"]] = condition["expression"]
    assert len(found) == 6, sorted(found)  # pods, jobs, cronjobs × mutate, validate
    return found


def _object(hook: str, containers: list[dict[str, Any]], init: bool = False) -> dict[str, Any]:
    """A `hook` object (a Pod, Job or CronJob) whose pod spec has these containers (or these
    init containers beside a CPU-only one)."""
    spec: dict[str, Any] = {"initContainers": containers} if init else {"containers": containers}
    if init:
        spec["containers"] = [{"name": "cpu", "image": "x", "resources": {"limits": {"cpu": "1"}}}]
    template = {"template": {"spec": spec}}
    wrapped = {"pods": spec, "jobs": template, "cronjobs": {"jobTemplate": {"spec": template}}}
    return {"metadata": {"name": "p", "namespace": "demo"}, "spec": wrapped[hook]}


def _containers(resource: str, count: str = "8", side: str = "limits") -> list[dict[str, Any]]:
    return [{"name": "main", "image": "x", "resources": {side: {resource: count}}}]


@functools.cache
def _is_gpu() -> Any:
    """costgate's classifier, as the bundled table applies it."""
    return load_config().table.is_gpu_resource


def _sent(resource: str) -> bool:
    """Whether the API server would call costgate for a pod requesting one `resource`."""
    expression = _requests_gpus()["pods.validate.costgate.io"]
    return cel.evaluate(expression, object=_object("pods", _containers(resource, "1")))


def _estimate(tmp_path: Path, capsys: pytest.CaptureFixture[str], obj: dict[str, Any]) -> Any:
    """`costgate estimate -o json` of one object: what costgate makes of it offline."""
    path = tmp_path / "object.yaml"
    path.write_text(yaml.safe_dump(obj))
    capsys.readouterr()
    main(["estimate", "-f", str(path), "-o", "json"])
    (row,) = json.loads(capsys.readouterr().out)
    return row


@pytest.mark.parametrize("resource", ADMITTED_UNSEEN)
def test_gpus_a_real_api_server_admitted_unseen_now_reach_costgate_and_are_refused(
    resource: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unlabelled pod asking for 8 GPUs under a name the old filter missed: every
    `requests-gpus` condition (pods, Jobs and CronJobs, mutating and validating, in limits
    or requests, containers or init containers) sends it, and costgate counts the 8 GPUs
    and refuses the missing labels, so the server and `costgate estimate` agree."""
    pod = _object("pods", _containers(resource))
    pod.update(apiVersion="v1", kind="Pod")
    row = _estimate(tmp_path, capsys, pod)
    assert (row["gpus"], row["allowed"]) == (8, False)
    assert "missing-labels" in {reason["code"] for reason in row["reasons"]}
    for name, expression in _requests_gpus().items():
        hook = name.split(".")[0]
        for side in ("limits", "requests"):
            for init in (False, True):
                obj = _object(hook, _containers(resource, side=side), init=init)
                assert cel.evaluate(expression, object=obj), (name, side, init)


def _names_worth_asking() -> list[str]:
    """Every name the pricing table lists, each branch of the rule with its edges, names
    that only look close, and case variants of all of them."""
    listed = list(yaml.safe_load(PRICING.read_text())["resources"])
    edges = [
        *ADMITTED_UNSEEN,
        "nvidia.com/gpu",
        "nvidia.com/vgpu",
        "nvidia.com/",  # a group and nothing else
        "nvidia.comx/thing",
        "xnvidia.com/thing",
        "amd.com/gpu",
        "amd.com/xilinx-fpga",
        "gpu.intel.com/i915",
        "gpu.intel.com/xe",
        "gpu.intel.com/millicores",  # a share of a GPU counted by whole GPUs: not counted
        "gpu.intel.com/memory.max",
        "gpu.intel.com/i915x",
        "example.com/mig-1g.5gb",
        "example.com/big-mig-1g",  # mig- not at the start
        "example.com/vgpu",
        "gpu.example.com/fpga",  # gpu in the group only
        "example.com/sub/gpu",  # a second slash
        "/gpu",
        "gpu",  # no group: the API server refuses such names anyway
        "cpu",
        "memory",
        "ephemeral-storage",
        "hugepages-2Mi",
        "example.com/fpga",
        "example.com/gp-u",
        "example.com/g\npu",
        "example.com/gpu\n",
        "gpu.intel.com/xe\n",  # Python's $ matches before a final newline; RE2's does not
        "example.com/\u212aGPU",  # a Kelvin sign, which str.lower() folds to k
        "example.com/G\u0130PU",
    ]
    names = listed + edges
    return sorted({variant for n in names for variant in (n, n.upper(), n.title())})


def test_the_filter_and_the_classifier_agree_on_every_name_worth_asking() -> None:
    """For each name, the shipped filter sends a pod requesting it exactly when costgate
    counts it as a GPU: nothing it would price is left unsent (and nothing else is sent)."""
    disagree = [n for n in _names_worth_asking() if _sent(n) != _is_gpu()(n)]
    assert disagree == []


_PIECES = st.sampled_from(
    [
        *("gpu", "GPU", "gPu", "mig-", "MIG-", "nvidia.com", "NVIDIA.COM", "amd.com", "Amd.Com"),
        *("gpu.intel.com", "i915", "xe", "XE", "/", "/", ".", "-", "_", "a", "Z", "9", "\n"),
        *("\u212a", "\u0130", "\u00e9"),  # Kelvin sign, dotted I, e acute: not ASCII
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, max_size=8).map("".join))
def test_the_filter_and_the_classifier_agree_on_any_name(name: str) -> None:
    """The same, for names built from the pieces the rule looks at."""
    assert _sent(name) == _is_gpu()(name)


def test_every_requests_gpus_condition_tests_names_with_the_one_rule() -> None:
    """Each of the six conditions tests every resource name (limits and requests of
    containers and init containers: four places) with `gpu_names.PATTERN`, pasted verbatim,
    and with nothing else."""
    rule = cel_test("r")
    for name, expression in _requests_gpus().items():
        assert expression.count(".exists(r, ") == 4, name
        assert expression.count(f".exists(r, {rule})") == 4, name


def test_a_pricing_table_listing_a_resource_the_filter_never_sends_is_refused() -> None:
    """A platform team prices Gaudi accelerators as `habana.ai/gaudi`: the API server would
    never send a pod requesting them, so they would run unpriced. The table is refused,
    naming the resource, instead of loading and silently pricing nothing."""
    data = yaml.safe_load(PRICING.read_text())
    data["resources"]["habana.ai/gaudi"] = {}
    next(iter(data["gpus"].values()))["resource"] = "habana.ai/gaudi"
    with pytest.raises(TableError, match=r"habana\.ai/gaudi is not a name the webhooks'"):
        parse_pricing(data, "pricing.yaml")
