"""Bypass: a steps or DAG template's nodeSelector that never reaches its pods (issue #13,
item 13). Argo up to 3.5 gives a pod its own template's nodeSelector/affinity, else the
workflow's (argo-workflows #12568); from 3.6 on, the enclosing steps/DAG template's comes in
between. costgate priced such pods as pinned by the steps template, so on an Argo before 3.6
a GPU step that pins nothing was priced at the type its caller names, while the scheduler
could put it on any GPU.

Policy `argo_boundary_placement` says which Argo runs here: `safe` (the default, also when a
policy file omits it) prices each such pod at the dearer of the two placements, `inherited`
(Argo 3.6 on) and `not-inherited` (up to 3.5) at the one that Argo gives it. Each test goes
through the real `AdmissionService.handle`, and `costgate estimate` gives the same answers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.answers import answer
from tests.support.builders import H100, LABELS, T4, request
from tests.support.config import policy_data
from tests.support.services import served
from webhook.cli import main
from webhook.core.extract.workflow import extract_workflow
from webhook.core.holding import holding
from webhook.core.policy import NamespacePolicy
from webhook.service import AdmissionService
from webhook.tables import load_config, parse_policy

H100_USD = 6.88  # pricing/default.yaml: h100-80gb
T4_USD = 0.978  # pricing/default.yaml: t4
SSD = {"disk": "ssd"}  # a node label that names no GPU type


@pytest.fixture(scope="module")
def default() -> AdmissionService:
    return served()


def dearest_usd() -> float:
    """$/h of the dearest GPU an `nvidia.com/gpu` can be (an unpinned GPU's price)."""
    table = load_config().table
    return table.gpus[table.candidates("nvidia.com/gpu")[0]].usd_per_hour


def usd(response: dict[str, Any]) -> float:
    return float(response["auditAnnotations"]["estimated-cost-usd"])


def pinned_by_its_caller(
    boundary: dict[str, str] | None = H100,
    workflow_selector: dict[str, str] | None = None,
    **train: Any,
) -> dict[str, Any]:
    """A labelled workflow, 1h declared: steps template "main" with nodeSelector `boundary`
    runs "train" (1 GPU, no placement of its own); `workflow_selector` is spec.nodeSelector."""
    main_template: dict[str, Any] = {
        "name": "main",
        "steps": [[{"name": "t", "template": "train"}]],
    }
    if boundary is not None:
        main_template["nodeSelector"] = boundary
    spec: dict[str, Any] = {
        "entrypoint": "main",
        "templates": [
            main_template,
            {
                "name": "train",
                "container": {"image": "busybox", "resources": {"limits": {"nvidia.com/gpu": "1"}}},
                **train,
            },
        ],
    }
    if workflow_selector is not None:
        spec["nodeSelector"] = workflow_selector
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            "name": "wf",
            "namespace": "team-a",
            "labels": dict(LABELS),
            "annotations": {"costgate.io/max-runtime": "1h"},
        },
        "spec": spec,
    }


# --- safe, the default --------------------------------------------------------------------


def test_a_gpu_step_pinned_only_by_its_caller_is_priced_as_unpinned_by_default(
    default: AdmissionService,
) -> None:
    """The issue's workflow: the steps template pins H100, the GPU template nothing. Argo
    before 3.6 may put it on any GPU: the dearest, 1 × $27.04 × 1h (was 1 × h100, $6.88)."""
    response = answer(default, pinned_by_its_caller())
    assert response["allowed"]
    assert usd(response) == pytest.approx(round(dearest_usd(), 2))


def test_the_warning_names_the_template_its_caller_and_the_setting(
    default: AdmissionService,
) -> None:
    warnings = answer(default, pinned_by_its_caller()).get("warnings", [])
    [said] = [w for w in warnings if "argo_boundary_placement" in w]
    assert said == (
        'costgate: template "train" pins no node of its own and Argo before 3.6 does not give '
        'it the nodeSelector/affinity of "main" (argo-workflows #12568): priced at the dearer '
        '(policy argo_boundary_placement: safe); pin "train" itself'
    )


def test_unknown_gpu_deny_refuses_a_step_pinned_only_by_its_caller() -> None:
    response = answer(served(unknown_gpu="deny"), pinned_by_its_caller())
    assert (response["allowed"], response["auditAnnotations"]["reasons"]) == (
        False,
        "unknown-gpu-type",
    )


@pytest.mark.parametrize(
    ("boundary", "workflow_selector", "expected"),
    [
        pytest.param(H100, T4, H100_USD, id="caller h100 over workflow t4: h100"),
        pytest.param(T4, H100, H100_USD, id="caller t4 over workflow h100: h100"),
    ],
)
def test_safe_prices_the_dearer_of_the_two_placements(
    boundary: dict[str, str],
    workflow_selector: dict[str, str],
    expected: float,
    default: AdmissionService,
) -> None:
    response = answer(default, pinned_by_its_caller(boundary, workflow_selector))
    assert usd(response) == pytest.approx(round(expected, 2))


def test_a_template_that_pins_itself_is_priced_as_pinned_and_not_warned(
    default: AdmissionService,
) -> None:
    """Its own nodeSelector wins under every Argo: 1 × t4 × 1h = $0.98."""
    response = answer(default, pinned_by_its_caller(H100, nodeSelector=T4))
    assert usd(response) == pytest.approx(0.98)
    assert not any("argo_boundary_placement" in w for w in response.get("warnings", []))


def test_a_podspecpatch_that_pins_the_type_pins_it_under_every_argo(
    default: AdmissionService,
) -> None:
    """The patch is applied after the placement, whichever Argo gave: t4, $0.98."""
    patch = json.dumps({"nodeSelector": T4})
    response = answer(default, pinned_by_its_caller(H100, podSpecPatch=patch))
    assert usd(response) == pytest.approx(0.98)


def test_a_podspecpatch_that_adds_a_non_gpu_label_does_not_pin_the_type(
    default: AdmissionService,
) -> None:
    """A patch merges into the nodeSelector: with the caller's it is {h100, ssd}, without
    it {ssd}, which pins no GPU. Safe takes the dearest."""
    patch = json.dumps({"nodeSelector": SSD})
    response = answer(default, pinned_by_its_caller(H100, podSpecPatch=patch))
    assert usd(response) == pytest.approx(round(dearest_usd(), 2))


def test_a_policy_file_without_the_setting_is_safe() -> None:
    data = policy_data()
    data.pop("argo_boundary_placement", None)
    assert parse_policy(data).default.argo_boundary_placement == "safe"
    assert NamespacePolicy().argo_boundary_placement == "safe"
    assert load_config().policy.default.argo_boundary_placement == "safe"


# --- the Argo version, stated ------------------------------------------------------------


def test_inherited_prices_the_callers_placement_as_argo_3_6_does() -> None:
    """1 × h100 × 1h = $6.88, no warning."""
    response = answer(served(argo_boundary_placement="inherited"), pinned_by_its_caller())
    assert usd(response) == pytest.approx(H100_USD)
    assert not any("argo_boundary_placement" in w for w in response.get("warnings", []))


def test_not_inherited_prices_the_workflows_placement_as_argo_3_5_does() -> None:
    """Caller h100, workflow t4: Argo 3.5 puts it on t4, $0.98."""
    service = served(argo_boundary_placement="not-inherited")
    response = answer(service, pinned_by_its_caller(H100, T4))
    assert usd(response) == pytest.approx(0.98)


def test_only_the_template_right_above_a_pod_is_its_boundary() -> None:
    """Argo 3.6 reads the boundary template of the pod's node: the steps template that runs
    it, not one further up. "outer" (h100) runs "inner" (no selector) which runs "train":
    the pod gets the workflow's t4, $0.98 (the caller's caller's h100 was priced before)."""
    obj = pinned_by_its_caller(None, T4)
    templates = obj["spec"]["templates"]
    templates[0]["name"] = "inner"
    templates.insert(
        0, {"name": "outer", "nodeSelector": H100, "steps": [[{"name": "i", "template": "inner"}]]}
    )
    obj["spec"]["entrypoint"] = "outer"
    response = answer(served(argo_boundary_placement="inherited"), obj)
    assert usd(response) == pytest.approx(0.98)


def test_a_namespace_can_state_its_own_argo() -> None:
    service = served(namespaces={"team-a": {"argo_boundary_placement": "inherited"}})
    assert usd(answer(service, pinned_by_its_caller())) == pytest.approx(H100_USD)
    obj = pinned_by_its_caller()
    obj["metadata"]["namespace"] = "team-b"
    assert usd(answer(service, obj)) == pytest.approx(round(dearest_usd(), 2))


def test_an_unknown_setting_is_refused_at_load() -> None:
    with pytest.raises(Exception, match="argo_boundary_placement"):
        parse_policy({**policy_data(), "argo_boundary_placement": "3.5"})


def test_the_quota_cache_holds_what_safe_priced() -> None:
    """What an admitted workflow holds (quotas) is the type it was priced at."""
    held = holding("argoproj.io", "Workflow", pinned_by_its_caller(H100, T4), load_config())
    assert held is not None
    assert dict(held.gpus_by_type) == {"h100-80gb": 1.0}


def test_the_walk_keeps_one_shape_per_placement() -> None:
    """A GPU template called from an h100 steps template and from a t4 one is two pod
    shapes, each with the placement it gets without its caller as the alternative."""
    obj = pinned_by_its_caller(H100)
    templates = obj["spec"]["templates"]
    templates[0]["steps"].append([{"name": "t2", "template": "cheap"}])
    templates.append(
        {"name": "cheap", "nodeSelector": T4, "steps": [[{"name": "t", "template": "train"}]]}
    )
    config = load_config()
    workload = extract_workflow(request(obj), config)
    assert workload is not None
    assert len(workload.pods) == 2
    assert all(shape.alternative is not None for shape in workload.pods)


# --- costgate estimate agrees ----------------------------------------------------------------


@pytest.mark.parametrize("setting", [None, "inherited", "not-inherited"])
def test_costgate_estimate_prices_the_boundary_as_the_server_does(
    setting: str | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    obj = pinned_by_its_caller(H100, T4)
    manifest = tmp_path / "wf.yaml"
    manifest.write_text(yaml.safe_dump(obj))
    args = ["estimate", "-f", str(manifest), "-o", "json"]
    service = served()
    if setting is not None:
        policy = tmp_path / "policy.yaml"
        policy.write_text(yaml.safe_dump({**policy_data(), "argo_boundary_placement": setting}))
        args += ["--policy", str(policy)]
        service = served(argo_boundary_placement=setting)
    main(args)
    [row] = json.loads(capsys.readouterr().out)
    server = answer(service, obj)
    assert row["cost_usd"] == usd(server)
    assert row["cost_usd"] == (0.98 if setting == "not-inherited" else H100_USD)
