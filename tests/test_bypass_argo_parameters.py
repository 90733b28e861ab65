"""Bypass: Argo parameters that hide GPUs (issue #13, item 3). Argo fills `{{...}}` in by
replacing text in each template before it builds the pod, so a resource name, a count or a
whole podSpecPatch can come from `spec.arguments`. Such workflows were admitted with no
labels, at $0 and with no deadline. Now the parameters known at admission are filled in
before pricing (`spec.arguments`, a WorkflowTemplate's arguments under the Workflow's, what
steps pass to their templates' inputs, input defaults), and what is still a `{{...}}` where
it can carry GPUs is refused (`invalid-gpu-request`) with the field and the parameter named.
A workflow whose GPUs cannot be counted still has its missing labels reported.

Each attack goes through the real `AdmissionService.handle` and through `costgate estimate`,
which must give the same answer.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.answers import answer, patch_ops
from tests.support.builders import H100, LABELS, review
from tests.support.paths import FIXTURES
from tests.support.services import served
from webhook.cli import main
from webhook.service import AdmissionService
from webhook.tables import load_config

H100_USD = 6.88  # pricing/default.yaml: h100-80gb
EIGHT_GPUS = '{"containers":[{"name":"main","resources":{"limits":{"nvidia.com/gpu":"8"}}}]}'


@pytest.fixture(scope="module")
def default() -> AdmissionService:
    return served()


def dearest_usd() -> float:
    """$/h of the dearest GPU an `nvidia.com/gpu` can be (an unpinned GPU's price)."""
    table = load_config().table
    return table.gpus[table.candidates("nvidia.com/gpu")[0]].usd_per_hour


def argo(
    templates: list[dict[str, Any]],
    parameters: list[dict[str, Any]] | None = None,
    *,
    labels: dict[str, str] | None = None,
    runtime: str | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A Workflow running `templates` from the first, with `parameters` as its arguments."""
    metadata: dict[str, Any] = {"name": "sneaky", "namespace": "team-a"}
    if labels is not None:
        metadata["labels"] = labels
    if runtime is not None:
        metadata["annotations"] = {"costgate.io/max-runtime": runtime}
    body: dict[str, Any] = {"entrypoint": templates[0]["name"], "templates": templates, **spec}
    if parameters is not None:
        body["arguments"] = {"parameters": parameters}
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": metadata,
        "spec": body,
    }


def busybox(**resources: Any) -> dict[str, Any]:
    return {"image": "busybox", "resources": resources} if resources else {"image": "busybox"}


def patched_from_parameter(value: dict[str, Any] | None = None) -> dict[str, Any]:
    """The issue's first workflow: no labels, a podSpecPatch that is all parameter, its
    value (default: 8 GPUs) in spec.arguments."""
    parameter = {"name": "patch", **({"value": EIGHT_GPUS} if value is None else value)}
    template = {
        "name": "main",
        "podSpecPatch": "{{workflow.parameters.patch}}",
        "container": busybox(),
    }
    return argo([template], [parameter])


def resource_key_from_parameter(value: dict[str, Any] | None = None) -> dict[str, Any]:
    """The issue's second workflow: no labels, a resource name that is a parameter."""
    parameter = {"name": "res", **({"value": "nvidia.com/gpu"} if value is None else value)}
    limits = {"{{workflow.parameters.res}}": "8"}
    return argo([{"name": "main", "container": busybox(limits=limits)}], [parameter])


def codes(response: dict[str, Any]) -> set[str]:
    reasons = response.get("auditAnnotations", {}).get("reasons", "")
    return set(reasons.split(",")) - {""}


def estimate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], *objs: dict[str, Any]
) -> tuple[int, list[dict[str, Any]]]:
    manifest = tmp_path / "wf.yaml"
    manifest.write_text(yaml.safe_dump_all(objs))
    code = main(["estimate", "-f", str(manifest), "-o", "json"])
    return code, json.loads(capsys.readouterr().out)


def reason_codes(row: dict[str, Any]) -> set[str]:
    return {r["code"] for r in row["reasons"]}


# --- the issue's two workflows, their parameters given ----------------------------------

ATTACKS = [
    pytest.param(patched_from_parameter, id="a podSpecPatch that is a parameter"),
    pytest.param(resource_key_from_parameter, id="a resource name that is a parameter"),
]


@pytest.mark.parametrize("build", ATTACKS)
def test_a_parameter_that_carries_8_gpus_is_priced_and_the_labels_are_required(
    build: Any, default: AdmissionService
) -> None:
    """8 unpinned GPUs for the default 12h at the dearest type, above the $100 threshold,
    and no labels: both reasons (was: allowed, $0, no labels asked for)."""
    response = answer(default, build())
    assert not response["allowed"]
    assert codes(response) == {"missing-labels", "over-threshold"}
    expected = round(8 * dearest_usd() * 12, 2)
    assert float(response["auditAnnotations"]["estimated-cost-usd"]) == pytest.approx(expected)


@pytest.mark.parametrize("build", ATTACKS)
def test_costgate_estimate_prices_the_parameter_as_the_server_does(
    build: Any, default: AdmissionService, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    obj = build()
    code, [row] = estimate(tmp_path, capsys, obj)
    server = answer(default, obj)
    assert code == 1
    assert (row["gpus"], reason_codes(row)) == (8, codes(server))
    assert row["cost_usd"] == float(server["auditAnnotations"]["estimated-cost-usd"])


def test_the_mutating_webhook_injects_the_deadline_into_the_priced_workflow(
    default: AdmissionService,
) -> None:
    """It was GPU-free, so nothing was injected: the GPU ran with no deadline. 1 × t4 at
    $0.978/h × 12h = $11.74, under the threshold, so admitted with the default deadline."""
    one_t4 = {
        "nodeSelector": {"nvidia.com/gpu.product": "Tesla-T4"},
        "containers": [{"name": "main", "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
    }
    obj = patched_from_parameter({"value": json.dumps(one_t4)})
    obj["metadata"]["labels"] = dict(LABELS)
    result = default.handle(review(obj), "mutate")
    ops = patch_ops(json.loads(result.body)["response"])
    assert {"op": "add", "path": "/spec/activeDeadlineSeconds", "value": 43200} in ops


# --- parameters known only when the workflow runs ---------------------------------------

UNKNOWN = [
    pytest.param({"valueFrom": {"configMapKeyRef": {"name": "gpus", "key": "n"}}}, id="valueFrom"),
    pytest.param({}, id="no value"),
    pytest.param({"value": "{{workflow.creationTimestamp}}"}, id="a value Argo fills in later"),
]


@pytest.mark.parametrize("value", UNKNOWN)
def test_a_podspecpatch_parameter_known_only_at_run_time_is_refused_naming_it(
    value: dict[str, Any], default: AdmissionService
) -> None:
    response = answer(default, patched_from_parameter(value))
    assert not response["allowed"]
    assert codes(response) == {"invalid-gpu-request", "missing-labels"}
    assert (
        "spec.templates[0].podSpecPatch cannot be read at admission: Argo fills in "
        '"{{workflow.parameters.patch}}" only when it runs the workflow, so the GPUs it may '
        'set cannot be priced; give parameter "patch" a value in spec.arguments.parameters'
    ) in response["status"]["message"]


@pytest.mark.parametrize("value", UNKNOWN)
def test_a_resource_name_known_only_at_run_time_is_refused_naming_it(
    value: dict[str, Any], default: AdmissionService
) -> None:
    response = answer(default, resource_key_from_parameter(value))
    assert codes(response) == {"invalid-gpu-request", "missing-labels"}
    message = response["status"]["message"]
    assert (
        'spec.templates[0]: container "main" asks for resources '
        '"limits: {{workflow.parameters.res}}: 8", which Argo fills in'
    ) in message
    assert 'give parameter "res" a value in spec.arguments.parameters' in message


def test_costgate_estimate_refuses_an_unknown_parameter_in_the_servers_words(
    default: AdmissionService, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    obj = resource_key_from_parameter({})
    code, [row] = estimate(tmp_path, capsys, obj)
    server = answer(default, obj)
    assert code == 1
    assert reason_codes(row) == codes(server) == {"invalid-gpu-request", "missing-labels"}
    assert row["reasons"][0]["message"] in server["status"]["message"]


def test_an_expression_in_a_resource_name_is_refused(default: AdmissionService) -> None:
    limits = {"{{=sprig.lower('NVIDIA.COM/GPU')}}": "8"}
    obj = argo([{"name": "main", "container": busybox(limits=limits)}], labels=dict(LABELS))
    response = answer(default, obj)
    assert codes(response) == {"invalid-gpu-request"}


def test_a_step_item_in_a_gpu_count_is_not_free(default: AdmissionService) -> None:
    """{{item}} is known only per loop iteration: the count cannot be bounded here."""
    obj = argo(
        [
            {"name": "main", "steps": [[sweep := {"name": "s", "template": "train"}]]},
            {
                "name": "train",
                "inputs": {"parameters": [{"name": "n"}]},
                "container": busybox(limits={"nvidia.com/gpu": "{{inputs.parameters.n}}"}),
            },
        ],
        labels=dict(LABELS),
    )
    sweep.update(withItems=[1, 8], arguments={"parameters": [{"name": "n", "value": "{{item}}"}]})
    response = answer(default, obj)
    assert (response["allowed"], codes(response)) == (False, {"invalid-gpu-request"})


# --- what is known is filled in, as Argo does --------------------------------------------


def train(limits: dict[str, str], **inputs: Any) -> dict[str, Any]:
    """An H100 template taking `gpus` as an input (with `inputs` as its declaration)."""
    return {
        "name": "train",
        "inputs": {"parameters": [{"name": "gpus", **inputs}]},
        "nodeSelector": H100,
        "container": busybox(limits=limits),
    }


GPUS_INPUT = {"nvidia.com/gpu": "{{inputs.parameters.gpus}}"}


def test_a_step_passes_a_workflow_parameter_into_a_templates_gpu_count(
    default: AdmissionService,
) -> None:
    """2 × h100 at $6.88/h × 1h = $13.76 (was: an unreadable quantity, denied)."""
    step = {
        "name": "t",
        "template": "train",
        "arguments": {"parameters": [{"name": "gpus", "value": "{{workflow.parameters.n}}"}]},
    }
    obj = argo(
        [{"name": "main", "steps": [[step]]}, train(GPUS_INPUT)],
        [{"name": "n", "value": "2"}],
        labels=dict(LABELS),
        runtime="1h",
    )
    response = answer(default, obj)
    assert response["allowed"], response.get("status")
    assert response["auditAnnotations"]["estimated-cost-usd"] == "13.76"


def test_an_input_default_fills_in_what_no_step_passes(default: AdmissionService) -> None:
    """3 × h100 × 1h = $20.64."""
    obj = argo(
        [{"name": "main", "steps": [[{"name": "t", "template": "train"}]]}, train(GPUS_INPUT)],
        labels=dict(LABELS),
        runtime="1h",
    )
    obj["spec"]["templates"][1]["inputs"]["parameters"][0]["default"] = "3"
    response = answer(default, obj)
    assert response["auditAnnotations"]["estimated-cost-usd"] == "20.64"


def test_the_entrypoint_takes_the_workflow_arguments_as_its_inputs(
    default: AdmissionService,
) -> None:
    """As argo submit -p gpus=4 writes them: 4 × h100 × 1h = $27.52."""
    obj = argo(
        [train(GPUS_INPUT)], [{"name": "gpus", "value": "4"}], labels=dict(LABELS), runtime="1h"
    )
    response = answer(default, obj)
    assert response["auditAnnotations"]["estimated-cost-usd"] == "27.52"


def test_one_template_called_with_different_inputs_is_priced_per_call(
    default: AdmissionService,
) -> None:
    """The walk is memoised per template: the inputs are part of the key. 1 then 8 GPUs,
    one after the other: the peak is 8 × h100 × 1h = $55.04 (not 1 × $6.88 twice)."""

    def step(name: str, gpus: str) -> list[dict[str, Any]]:
        arguments = {"parameters": [{"name": "gpus", "value": gpus}]}
        return [{"name": name, "template": "train", "arguments": arguments}]

    obj = argo(
        [{"name": "main", "steps": [step("small", "1"), step("big", "8")]}, train(GPUS_INPUT)],
        labels=dict(LABELS),
        runtime="1h",
    )
    response = answer(default, obj)
    assert response["auditAnnotations"]["estimated-cost-usd"] == "55.04"


def test_a_gpu_type_selector_from_a_parameter_pins_the_type(default: AdmissionService) -> None:
    """nodeSelector product from a parameter: t4 at $0.978/h × 1h = $0.98."""
    template = {
        "name": "main",
        "nodeSelector": {"nvidia.com/gpu.product": "{{workflow.parameters.gpu}}"},
        "container": busybox(limits={"nvidia.com/gpu": "1"}),
    }
    obj = argo([template], [{"name": "gpu", "value": "Tesla-T4"}], labels=dict(LABELS))
    obj["metadata"]["annotations"] = {"costgate.io/max-runtime": "1h"}
    response = answer(default, obj)
    assert response["auditAnnotations"]["estimated-cost-usd"] == "0.98"


def test_a_gpu_type_selector_known_only_at_run_time_is_priced_as_the_dearest(
    default: AdmissionService,
) -> None:
    """Not refused: the type is what the unknown_gpu rule is for (the dearest it could be,
    or a denial where the policy says so); the count is known."""
    template = {
        "name": "main",
        "nodeSelector": {"nvidia.com/gpu.product": "{{workflow.parameters.gpu}}"},
        "container": busybox(limits={"nvidia.com/gpu": "1"}),
    }
    obj = argo([template], [{"name": "gpu"}], labels=dict(LABELS), runtime="1h")
    response = answer(default, obj)
    assert response["allowed"]
    usd = float(response["auditAnnotations"]["estimated-cost-usd"])
    assert usd == pytest.approx(round(dearest_usd(), 2))
    denied = answer(served(unknown_gpu="deny"), obj)
    assert codes(denied) == {"unknown-gpu-type"}


def test_a_workflow_template_refs_arguments_are_overridden_by_the_workflows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The template's patch asks for 1 GPU; the Workflow that runs it passes 8."""
    one_gpu = EIGHT_GPUS.replace('"8"', '"1"')
    template = patched_from_parameter({"value": one_gpu})
    template["kind"] = "WorkflowTemplate"
    template["metadata"] = {"name": "tmpl", "namespace": "team-a", "labels": dict(LABELS)}
    run = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "run", "namespace": "team-a", "labels": dict(LABELS)},
        "spec": {
            "workflowTemplateRef": {"name": "tmpl"},
            "arguments": {"parameters": [{"name": "patch", "value": EIGHT_GPUS}]},
        },
    }
    code, rows = estimate(tmp_path, capsys, template, run)
    assert [row["gpus"] for row in rows] == [1, 8]
    assert code == 1 and reason_codes(rows[1]) == {"over-threshold"}


def test_workflow_metadata_in_a_patch_is_filled_in(default: AdmissionService) -> None:
    """Known parameters that carry no GPU leave the patch readable: allowed, no warning
    about the patch."""
    patch = '{"containers":[{"name":"main","env":[{"name":"W","value":"{{workflow.name}}"}]}]}'
    template = {"name": "main", "nodeSelector": H100, "podSpecPatch": patch}
    template["container"] = busybox(limits={"nvidia.com/gpu": "1"})
    obj = argo([template], labels=dict(LABELS), runtime="1h")
    del obj["metadata"]["name"]
    obj["metadata"]["generateName"] = "sneaky-"
    response = answer(default, obj)
    assert response["allowed"]
    assert not any("podSpecPatch" in w for w in response.get("warnings", []))


def test_argo_examples_with_parameters_still_pass(default: AdmissionService) -> None:
    """pod-spec-patch.yaml fills its cpu limit from spec.arguments: readable, no GPU."""
    with (FIXTURES / "argo-examples" / "pod-spec-patch-wf-tmpl.yaml").open() as stream:
        obj = yaml.safe_load(stream)
    obj = copy.deepcopy(obj)
    obj["metadata"]["namespace"] = "team-a"
    response = answer(default, obj)
    assert response["allowed"] and not response.get("warnings")


def test_a_template_called_with_many_inputs_is_refused_once(default: AdmissionService) -> None:
    """The template is read once per distinct input; its problem is one reason, not ten."""
    steps = [
        [
            {
                "name": f"s{i}",
                "template": "t",
                "arguments": {"parameters": [{"name": "m", "value": str(i)}]},
            }
        ]
        for i in range(10)
    ]
    template = {
        "name": "t",
        "inputs": {"parameters": [{"name": "m"}]},
        "podSpecPatch": "{{workflow.parameters.patch}}",
        "container": {"image": "busybox", "args": ["{{inputs.parameters.m}}"]},
    }
    obj = argo(
        [{"name": "main", "steps": steps}, template], [{"name": "patch"}], labels=dict(LABELS)
    )
    response = answer(default, obj)
    assert response["status"]["message"].count("podSpecPatch cannot be read") == 1
