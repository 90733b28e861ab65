"""Argo Workflows, CronWorkflows and WorkflowTemplates through the core's entry point.

Every expected cost is worked out by hand from the workflow's shape and the pricing table's
$/h (the arithmetic is in a comment next to each case), never by calling costgate's pricing.
Without a costgate.io/max-runtime annotation a workflow runs for the default 12h.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jsonpatch
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.builders import LABELS, container, pod, request
from tests.support.config import policy_with
from webhook.core.engine import Config, evaluate
from webhook.core.patch import patch_ops
from webhook.estimate import estimate_rows

A100, H100, T4 = "a100-80gb", "h100-80gb", "t4"
PRODUCT = "nvidia.com/gpu.product"
NODE_LABEL = {A100: "NVIDIA-A100-SXM4-80GB", H100: "NVIDIA-H100-80GB-HBM3", T4: "Tesla-T4"}
ARGO_SA = "system:serviceaccount:argo:argo"
DAY = 12  # hours: the policy's default runtime
GPU = "nvidia.com/gpu"


# --- builders --------------------------------------------------------------------------------


def on(gpu_type: str) -> dict[str, str]:
    """The nodeSelector that pins a GPU type (NVIDIA GPU feature discovery label)."""
    return {PRODUCT: NODE_LABEL[gpu_type]}


def gpu(name: str, gpus: int, gpu_type: str | None = A100, **extra: Any) -> dict[str, Any]:
    """A container template asking for `gpus` GPUs, pinned to `gpu_type` (None: unpinned)."""
    template: dict[str, Any] = {
        "name": name,
        "container": container(limits={GPU: str(gpus)} if gpus else {}),
    }
    if gpu_type is not None:
        template["nodeSelector"] = on(gpu_type)
    template.update(extra)
    return template


def steps(name: str, *groups: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"name": name, "steps": [list(group) for group in groups], **extra}


def dag(name: str, *tasks: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "dag": {"tasks": list(tasks)}, **extra}


def call(name: str, template: str, **extra: Any) -> dict[str, Any]:
    """A step or DAG task invoking `template`."""
    return {"name": name, "template": template, **extra}


def workflow(
    *templates: dict[str, Any],
    entrypoint: str = "main",
    spec: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    name: str = "train",
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": "team-a",
        "labels": dict(LABELS) if labels is None else labels,
    }
    if annotations is not None:
        metadata["annotations"] = annotations
    body = {"entrypoint": entrypoint, "templates": list(templates), **(spec or {})}
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": metadata,
        "spec": body,
    }


def cron(wf: dict[str, Any], workflow_metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"schedule": "0 2 * * *", "workflowSpec": wf["spec"]}
    if workflow_metadata is not None:
        spec["workflowMetadata"] = workflow_metadata
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "CronWorkflow",
        "metadata": {**wf["metadata"], "name": "nightly"},
        "spec": spec,
    }


def owned_by(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    """`obj` with a controller ownerReference to an Argo object of `kind`."""
    obj = copy.deepcopy(obj)
    obj["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": kind,
            "name": "owner",
            "uid": "u",
            "controller": True,
        }
    ]
    return obj


def codes(decision) -> list[str]:
    return [r.code for r in decision.reasons]


def patched(decision, obj: dict[str, Any]) -> dict[str, Any]:
    """The object as the API server stores it after the mutating webhook's JSONPatch."""
    return jsonpatch.apply_patch(copy.deepcopy(obj), patch_ops(decision, obj))


# --- configs ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wide(table) -> Config:
    """A threshold nothing reaches: only the number matters."""
    return Config(table, policy_with(threshold_usd=1e9), parse_text=yaml.safe_load)


@pytest.fixture(scope="module")
def strict(table) -> Config:
    """The bundled policy ($100 threshold), with YAML podSpecPatch readable like the CLI's."""
    return Config(table, policy_with(), parse_text=yaml.safe_load)


def rate(config: Config) -> Callable[[str], float]:
    return lambda gpu_type: config.table.gpus[gpu_type].usd_per_hour


def money(usd: float) -> str:
    return f"${usd:,.2f}"


# --- what GPU workflows cost -----------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    obj: dict[str, Any]
    expected: Callable[[Callable[[str], float]], float]  # $/h of a GPU type -> USD
    basis: str


COSTS = [
    # peak: (3 items × 2 × a100 + 1 × h100) × 12h; no template deadline, so no per-step bound
    Case(
        "a DAG runs its fanned-out tasks and its other tasks at once",
        workflow(
            dag("main", call("sweep", "train", withItems=[1, 2, 3]), call("score", "eval")),
            gpu("train", 2),
            gpu("eval", 1, H100),
        ),
        lambda p: (3 * 2 * p(A100) + 1 * p(H100)) * DAY,
        "peak",
    ),
    # step groups run one after another, a group's steps at once:
    # inner = max(2 items × 2 × a100, 1 × h100); main = max(t4, inner + 2 × a100, t4);
    # peak: main × 12h
    Case(
        "nested steps: groups one after another, the steps of a group together",
        workflow(
            steps(
                "main",
                [call("prep", "small")],
                [call("inner", "inner"), call("other", "pair")],
                [call("eval", "small")],
            ),
            steps("inner", [call("g", "pair", withItems=["a", "b"])], [call("h", "big")]),
            gpu("small", 1, T4),
            gpu("pair", 2),
            gpu("big", 1, H100),
        ),
        lambda p: max(p(T4), max(2 * 2 * p(A100), p(H100)) + 2 * p(A100)) * DAY,
        "peak",
    ),
    # per-step: 4 items × 3 attempts × 4 × a100 × 2h = 96 a100-hours;
    # peak: 4 items × 4 × a100 × 12h = 192 a100-hours; min is per-step
    Case(
        "retries multiply the runs of a step with a deadline",
        workflow(
            steps("main", [call("t", "train", withItems=[1, 2, 3, 4])]),
            gpu("train", 4, activeDeadlineSeconds=7200, retryStrategy={"limit": 2}),
        ),
        lambda p: min(4 * 3 * 4 * p(A100) * 2, 4 * 4 * p(A100) * DAY),
        "steps",
    ),
    # no template deadline: retries run one after another, so peak 2 items × 1 × h100 × 12h
    Case(
        "retries without a step deadline add no concurrency",
        workflow(
            steps("main", [call("t", "train", withItems=[1, 2])]),
            gpu("train", 1, H100, retryStrategy={"limit": "3"}),
        ),
        lambda p: 2 * 1 * p(H100) * DAY,
        "peak",
    ),
    # retryStrategy without limit retries without end: per-step unbounded; peak 1 × a100 × 12h
    Case(
        "a retryStrategy without a limit falls back on the peak bound",
        workflow(gpu("main", 1, activeDeadlineSeconds=3600, retryStrategy={})),
        lambda p: 1 * p(A100) * DAY,
        "peak",
    ),
    # peak: min(10 items × 2 × a100, spec.parallelism 3 × 2 × a100) × 12h = 6 a100 × 12h
    Case(
        "workflow parallelism caps the pods running at once",
        workflow(
            steps("main", [call("t", "train", withItems=list(range(10)))]),
            gpu("train", 2),
            spec={"parallelism": 3},
        ),
        lambda p: 3 * 2 * p(A100) * DAY,
        "peak",
    ),
    # peak: min(6 items × 1 × h100, template parallelism 2 × 1 × h100) × 12h
    Case(
        "template parallelism caps the pods of its own steps",
        workflow(
            steps("main", [call("t", "train", withItems=list(range(6)))], parallelism=2),
            gpu("train", 1, H100),
        ),
        lambda p: 2 * 1 * p(H100) * DAY,
        "peak",
    ),
    # one pod: (2 + 1 + 0) × a100 × 12h
    Case(
        "a containerSet pod sums its containers' GPUs",
        workflow(
            {
                "name": "main",
                "nodeSelector": on(A100),
                "containerSet": {
                    "containers": [
                        container("a", limits={"nvidia.com/gpu": "2"}),
                        container("b", requests={"nvidia.com/gpu": "1"}),
                        container("c", limits={"cpu": "1"}),
                    ]
                },
            }
        ),
        lambda p: (2 + 1) * p(A100) * DAY,
        "peak",
    ),
    # the JSON patch gives container "main" 2 GPUs: 2 × a100 × 12h
    Case(
        "a JSON podSpecPatch sets the GPUs of container main",
        workflow(
            gpu(
                "main",
                0,
                podSpecPatch=json.dumps(
                    {"containers": [{"name": "main", "resources": {"limits": {GPU: "2"}}}]}
                ),
            )
        ),
        lambda p: 2 * p(A100) * DAY,
        "peak",
    ),
    # the YAML patch gives container "main" 3 GPUs: 3 × a100 × 12h
    Case(
        "a YAML podSpecPatch sets the GPUs of container main",
        workflow(
            gpu(
                "main",
                0,
                podSpecPatch=(
                    "containers:\n"
                    "  - name: main\n"
                    "    resources:\n"
                    "      limits:\n"
                    "        nvidia.com/gpu: 3\n"
                ),
            )
        ),
        lambda p: 3 * p(A100) * DAY,
        "peak",
    ),
    # spec.podSpecPatch reaches every pod: steps a (1 × a100) then b (1 × h100);
    # peak: max(a100, h100) × 12h
    Case(
        "a workflow-level podSpecPatch gives every pod its GPUs",
        workflow(
            steps("main", [call("a", "a")], [call("b", "b")]),
            gpu("a", 0),
            gpu("b", 0, H100),
            spec={
                "podSpecPatch": '{"containers":[{"name":"main","resources":'
                '{"limits":{"nvidia.com/gpu":"1"}}}]}'
            },
        ),
        lambda p: max(p(A100), p(H100)) * DAY,
        "peak",
    ),
    # templateDefaults give every template a 1h deadline, which "b" overrides with 2h:
    # per-step: 3 items × 2 × a100 × 1h + 1 × h100 × 2h; peak: max(3 × 2 × a100, h100) × 12h
    Case(
        "templateDefaults give templates deadlines a template can override",
        workflow(
            steps("main", [call("a", "a", withItems=[1, 2, 3])], [call("b", "b")]),
            gpu("a", 2),
            gpu("b", 1, H100, activeDeadlineSeconds=7200),
            spec={"templateDefaults": {"activeDeadlineSeconds": 3600}},
        ),
        lambda p: min(3 * 2 * p(A100) * 1 + 1 * p(H100) * 2, max(3 * 2 * p(A100), p(H100)) * DAY),
        "steps",
    ),
    # per-step: 5 items × 1 × h100 × 30m (timeout); peak: 5 × h100 × 12h
    Case(
        "withSequence count fans out, and a timeout is a step deadline",
        workflow(
            steps("main", [call("t", "train", withSequence={"count": "5"})]),
            gpu("train", 1, H100, timeout="30m"),
        ),
        lambda p: min(5 * 1 * p(H100) * 0.5, 5 * p(H100) * DAY),
        "steps",
    ),
    # 2..6 is 5 items: peak 5 × 1 × h100 × 12h
    Case(
        "withSequence start and end fan out end - start + 1 items",
        workflow(
            steps("main", [call("t", "train", withSequence={"start": "2", "end": "6"})]),
            gpu("train", 1, H100),
        ),
        lambda p: 5 * p(H100) * DAY,
        "peak",
    ),
    # 6 down to 2 is also 5 items (Argo counts down when end < start)
    Case(
        "withSequence counting down fans out as many items",
        workflow(
            steps("main", [call("t", "train", withSequence={"start": 6, "end": 2})]),
            gpu("train", 1, H100),
        ),
        lambda p: 5 * p(H100) * DAY,
        "peak",
    ),
    # withParam with costgate.io/max-fanout 8: peak 8 × 1 × a100 × 12h
    Case(
        "withParam fans out to the declared costgate.io/max-fanout",
        workflow(
            steps("main", [call("t", "train", withParam="{{inputs.parameters.list}}")]),
            gpu("train", 1),
            annotations={"costgate.io/max-fanout": "8"},
        ),
        lambda p: 8 * p(A100) * DAY,
        "peak",
    ),
    # withParam unbounded, spec.parallelism 4: peak 4 × 2 × a100 × 12h
    Case(
        "workflow parallelism bounds an undeclared withParam",
        workflow(
            steps("main", [call("t", "train", withParam="{{steps.list.outputs.result}}")]),
            gpu("train", 2),
            spec={"parallelism": 4},
        ),
        lambda p: 4 * 2 * p(A100) * DAY,
        "peak",
    ),
    # max-fanout 3 below spec.parallelism 4: min(3 × 2, 4 × 2) × a100 × 12h
    Case(
        "a declared fan-out below the parallelism is the bound",
        workflow(
            steps("main", [call("t", "train", withParam="{{steps.list.outputs.result}}")]),
            gpu("train", 2),
            spec={"parallelism": 4},
            annotations={"costgate.io/max-fanout": "3"},
        ),
        lambda p: 3 * 2 * p(A100) * DAY,
        "peak",
    ),
    # unbounded recursion, spec.parallelism 2: peak 2 pods × 2 × a100 × 12h
    Case(
        "workflow parallelism bounds a recursive steps template",
        workflow(
            steps("main", [call("t", "train")], [call("again", "main", when="{{x}} == 1")]),
            gpu("train", 2),
            spec={"parallelism": 2},
        ),
        lambda p: 2 * 2 * p(A100) * DAY,
        "peak",
    ),
    # per-step: 4 × a100 × 2h + 1 × a100 × 1h = 9 a100-hours; peak: (4 + 1) × a100 × 12h
    Case(
        "an onExit handler with GPUs adds its own step",
        workflow(
            gpu("main", 4, activeDeadlineSeconds=7200),
            gpu("cleanup", 1, activeDeadlineSeconds=3600),
            spec={"onExit": "cleanup"},
        ),
        lambda p: min(4 * p(A100) * 2 + 1 * p(A100) * 1, (4 + 1) * p(A100) * DAY),
        "steps",
    ),
    # the handler outlives the 12h deadline for its own 2h: peak 4 × a100 × 12h + 1 × a100 × 2h
    Case(
        "an onExit handler is priced for its own deadline after the workflow's",
        workflow(
            gpu("main", 4),
            gpu("cleanup", 1, activeDeadlineSeconds=7200),
            spec={"onExit": "cleanup"},
        ),
        lambda p: 4 * p(A100) * DAY + 1 * p(A100) * 2,
        "peak",
    ),
    # a step's own exit handler runs for that step: peak (2 + 1) × a100 × 12h
    Case(
        "a step-level onExit handler counts with its step",
        workflow(
            steps("main", [call("t", "train", onExit="notify")]),
            gpu("train", 2),
            gpu("notify", 1),
        ),
        lambda p: (2 + 1) * p(A100) * DAY,
        "peak",
    ),
    # a lifecycle hook's pod, like an exit handler's: peak (2 + 4) × a100 × 12h
    Case(
        "a step's lifecycle hook counts with its step",
        workflow(
            steps("main", [call("t", "train", hooks={"exit": {"template": "notify"}})]),
            gpu("train", 2),
            gpu("notify", 4),
        ),
        lambda p: (2 + 4) * p(A100) * DAY,
        "peak",
    ),
    # a workflow-level hook runs alongside the workflow: peak (1 + 2) × a100 × 12h
    Case(
        "a workflow-level lifecycle hook counts in the peak",
        workflow(
            gpu("main", 1),
            gpu("watch", 2),
            spec={"hooks": {"running": {"template": "watch", "expression": "x == 1"}}},
        ),
        lambda p: (1 + 2) * p(A100) * DAY,
        "peak",
    ),
    # spec.nodeSelector pins t4; template "b" overrides it with h100: peak (t4 + h100) × 12h
    Case(
        "a template nodeSelector overrides the workflow's",
        workflow(
            dag("main", call("a", "a"), call("b", "b")),
            gpu("a", 1, None),
            gpu("b", 1, H100),
            spec={"nodeSelector": on(T4)},
        ),
        lambda p: (p(T4) + p(H100)) * DAY,
        "peak",
    ),
    # costgate.io/max-runtime 3h is the workflow deadline: per-step 1 × a100 × min(5h, 3h)
    # + 1 × a100 × 1h = 4 a100-hours (6 if the 5h counted in full); peak 2 × a100 × 3h
    Case(
        "a step deadline beyond the workflow's counts only up to the workflow's",
        workflow(
            dag("main", call("long", "long"), call("short", "short")),
            gpu("long", 1, activeDeadlineSeconds=5 * 3600),
            gpu("short", 1, activeDeadlineSeconds=3600),
            annotations={"costgate.io/max-runtime": "3h"},
        ),
        lambda p: min(1 * p(A100) * 3 + 1 * p(A100) * 1, 2 * p(A100) * 3),
        "steps",
    ),
]


@pytest.mark.parametrize("case", COSTS, ids=[c.id for c in COSTS])
def test_workflow_cost(case: Case, wide: Config) -> None:
    decision = evaluate(request(case.obj), config=wide)
    assert decision.allowed and codes(decision) == []
    assert decision.estimate is not None
    assert decision.estimate.usd == pytest.approx(case.expected(rate(wide)), abs=0.005)
    assert decision.estimate.basis == case.basis


def test_the_nodeselector_override_prices_each_template_on_its_own_type(wide: Config) -> None:
    case = next(c for c in COSTS if c.id == "a template nodeSelector overrides the workflow's")
    decision = evaluate(request(case.obj), config=wide)
    assert {(line.shape, line.gpu_type) for line in decision.estimate.lines} == {
        ("a", T4),
        ("b", H100),
    }


def test_a_steps_template_nodeselector_reaches_its_pods(wide: Config) -> None:
    # workflowpod.go addSchedulingConstraints: template, else boundary template, else workflow.
    # "train" runs inside "main" (h100), not on the workflow's t4: peak 1 × h100 × 12h
    obj = workflow(
        steps("main", [call("t", "train")], nodeSelector=on(H100)),
        gpu("train", 1, None),
        spec={"nodeSelector": on(T4)},
    )
    decision = evaluate(request(obj), config=wide)
    assert decision.estimate.usd == pytest.approx(rate(wide)(H100) * DAY, abs=0.005)


def test_a_per_step_estimate_says_runs_and_hours_per_template(wide: Config) -> None:
    case = next(c for c in COSTS if c.id == "retries multiply the runs of a step with a deadline")
    decision = evaluate(request(case.obj), config=wide)
    a100 = rate(wide)(A100)
    expected = (
        f"{money(4 * 3 * 4 * a100 * 2)} (train: 4 × a100-80gb at {money(a100)}/h × 2h × 12 runs)"
    )
    assert decision.warnings[0] == f"costgate: estimated cost {expected}"
    assert decision.audit["estimate"] == expected


def test_a_peak_estimate_says_the_most_at_once_and_each_template(wide: Config) -> None:
    case = next(c for c in COSTS if c.id.startswith("a DAG runs its fanned-out tasks"))
    decision = evaluate(request(case.obj), config=wide)
    p = rate(wide)
    peak = 3 * 2 * p(A100) + p(H100)
    assert decision.audit["estimate"] == (
        f"{money(peak * DAY)} (up to {money(peak)}/h at once × 12h; "
        f"train: 2 × a100-80gb at {money(p(A100))}/h, eval: 1 × h100-80gb at {money(p(H100))}/h)"
    )


def test_a_long_estimate_warning_counts_the_gpus_at_once(wide: Config) -> None:
    case = next(c for c in COSTS if c.id.startswith("a DAG runs its fanned-out tasks"))
    decision = evaluate(request(case.obj), config=wide)
    assert "(breakdown in audit annotations)" in decision.warnings[0]
    assert "7 GPUs" in decision.warnings[0]  # 3 items × 2 × a100 + 1 × h100


def test_an_expensive_workflow_is_denied_with_its_breakdown(strict: Config) -> None:
    case = next(c for c in COSTS if c.id == "retries multiply the runs of a step with a deadline")
    decision = evaluate(request(case.obj), config=strict)
    a100 = rate(strict)(A100)
    assert not decision.allowed
    assert codes(decision) == ["over-threshold"]
    cost = 4 * 3 * 4 * a100 * 2  # 4 items × 3 attempts × 4 GPUs × 2h
    assert decision.reasons[0].message.startswith(
        f"estimated cost {money(cost)} (train: 4 × a100-80gb at {money(a100)}/h × 2h × 12 runs)"
        " exceeds the $100.00 limit"
    )


def test_a_step_with_no_items_runs_nothing(wide: Config) -> None:
    # the empty loop's 8 × h100 never run: peak 1 × a100 × 12h
    obj = workflow(
        steps("main", [call("none", "big", withItems=[]), call("one", "small")]),
        gpu("big", 8, H100),
        gpu("small", 1),
    )
    decision = evaluate(request(obj), config=wide)
    assert decision.estimate.usd == pytest.approx(rate(wide)(A100) * DAY, abs=0.005)


# --- what cannot be bounded ------------------------------------------------------------------


UNBOUNDED = [
    (
        "a withParam loop with no declared fan-out and no parallelism",
        workflow(
            steps("main", [call("t", "train", withParam="{{steps.list.outputs.result}}")]),
            gpu("train", 1),
        ),
    ),
    (
        "a steps template calling itself with no parallelism",
        workflow(steps("main", [call("t", "train")], [call("again", "main")]), gpu("train", 1)),
    ),
    (
        "a recursion through another template",
        workflow(
            steps("main", [call("t", "train"), call("deeper", "loop")]),
            steps("loop", [call("back", "main")]),
            gpu("train", 1),
        ),
    ),
]


@pytest.mark.parametrize("obj", [c[1] for c in UNBOUNDED], ids=[c[0] for c in UNBOUNDED])
def test_unbounded_workflows_are_denied(obj, wide: Config) -> None:
    decision = evaluate(request(obj), config=wide)
    assert not decision.allowed
    assert codes(decision) == ["invalid-gpu-request"]
    assert "no bound on its cost" in decision.reasons[0].message
    assert "spec.parallelism" in decision.reasons[0].message
    assert decision.estimate is None


def test_a_max_fanout_that_is_not_a_number_is_denied(wide: Config) -> None:
    obj = workflow(
        steps("main", [call("t", "train", withParam="{{x}}")]),
        gpu("train", 1),
        annotations={"costgate.io/max-fanout": "lots"},
    )
    decision = evaluate(request(obj), config=wide)
    assert codes(decision) == ["invalid-gpu-request"]
    assert "costgate.io/max-fanout" in decision.reasons[0].message


def test_a_podspecpatch_with_runtime_gpus_is_denied(wide: Config) -> None:
    obj = workflow(
        gpu(
            "main",
            0,
            podSpecPatch='{"containers":[{"name":"main","resources":'
            '{"limits":{"nvidia.com/gpu": {{inputs.parameters.gpus}} }}}]}',
        )
    )
    decision = evaluate(request(obj), config=wide)
    assert not decision.allowed
    assert codes(decision) == ["invalid-gpu-request"]
    assert "podSpecPatch" in decision.reasons[0].message


def test_template_parallelism_does_not_bound_a_recursion(wide: Config) -> None:
    # Each invocation of "main" may run 2 children: its GPU pod and the next "main", whose
    # own parallelism budget is separate, so the GPU pods at once grow with the depth.
    obj = workflow(
        steps("main", [call("t", "train"), call("again", "main")], parallelism=2),
        gpu("train", 1),
    )
    decision = evaluate(request(obj), config=wide)
    assert codes(decision) == ["invalid-gpu-request"]


def test_template_parallelism_over_nested_dags_counts_whole_children(wide: Config) -> None:
    # Argo's parallelism-nested-dag example: A (parallelism 2) runs 5 B DAGs, at most 2 at
    # once; each B runs 3 independent 1 × a100 tasks. At once: 2 B × 3 pods = 6 × a100.
    obj = workflow(
        dag("main", *[call(f"b{i}", "B") for i in range(5)], parallelism=2),
        dag("B", *[call(f"c{i}", "one") for i in range(3)]),
        gpu("one", 1),
    )
    decision = evaluate(request(obj), config=wide)
    assert decision.estimate.usd >= round(2 * 3 * rate(wide)(A100) * DAY, 2)


def test_template_defaults_with_a_container_keep_steps_templates_steps(wide: Config) -> None:
    # peak: 4 × a100 × 12h, whatever env the defaults give every container
    obj = workflow(
        steps("main", [call("t", "train")]),
        gpu("train", 4),
        spec={"templateDefaults": {"container": {"env": [{"name": "LOG", "value": "1"}]}}},
    )
    decision = evaluate(request(obj), config=wide)
    assert decision.estimate is not None
    assert decision.estimate.usd == pytest.approx(4 * rate(wide)(A100) * DAY, abs=0.005)


def test_an_exit_handler_runs_past_the_workflow_deadline(wide: Config) -> None:
    # The handler may start when the 12h workflow deadline fires and then run its own 48h:
    # at least 4 × a100 × 12h + 1 × a100 × 48h can be spent.
    obj = workflow(
        gpu("main", 4),
        gpu("cleanup", 1, activeDeadlineSeconds=48 * 3600),
        spec={"onExit": "cleanup"},
    )
    decision = evaluate(request(obj), config=wide)
    a100 = rate(wide)(A100)
    assert decision.estimate.usd >= round(4 * a100 * DAY + 1 * a100 * 48, 2)


# --- templates in other objects --------------------------------------------------------------


def workflow_template(name: str, spec: dict[str, Any], *, cluster: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": dict(LABELS)}
    if not cluster:
        metadata["namespace"] = "team-a"
    kind = "ClusterWorkflowTemplate" if cluster else "WorkflowTemplate"
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": kind, "metadata": metadata, "spec": spec}


SWEEP = workflow_template(
    "sweep",
    {
        "entrypoint": "main",
        "templates": [steps("main", [call("t", "train", withItems=[1, 2, 3])]), gpu("train", 2)],
    },
)


def submit(spec: dict[str, Any], name: str = "run") -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name, "namespace": "team-a", "labels": dict(LABELS)},
        "spec": spec,
    }


def test_a_workflow_template_ref_is_priced_from_the_template_given_alongside(wide) -> None:
    # peak: 3 items × 2 × a100 × 12h; with the Workflow's own parallelism 1: 1 × 2 × a100 × 12h
    plain = submit({"workflowTemplateRef": {"name": "sweep"}}, "plain")
    capped = submit({"workflowTemplateRef": {"name": "sweep"}, "parallelism": 1}, "capped")
    rows = {row["name"]: row for row in estimate_rows([SWEEP, plain, capped], config=wide)}
    a100 = rate(wide)(A100)
    assert rows["plain"]["allowed"] and rows["plain"]["reasons"] == []
    assert rows["plain"]["cost_usd"] == pytest.approx(3 * 2 * a100 * DAY, abs=0.005)
    assert rows["capped"]["cost_usd"] == pytest.approx(1 * 2 * a100 * DAY, abs=0.005)
    assert rows["sweep"]["allowed"] and rows["sweep"]["kind"] == "WorkflowTemplate"


def test_a_workflow_template_ref_not_given_is_template_not_found(wide) -> None:
    rows = estimate_rows([submit({"workflowTemplateRef": {"name": "sweep"}})], config=wide)
    assert not rows[0]["allowed"]
    assert [r["code"] for r in rows[0]["reasons"]] == ["template-not-found"]


def test_a_template_ref_to_a_cluster_workflow_template(wide) -> None:
    # The namespaced "gpu-lib" (8 × h100) must not be taken for the cluster-scoped one.
    # per-step: 2 items × 2 × h100 × 3h (timeout) = 12 h100-hours; peak 2 × 2 × h100 × 12h
    cluster_lib = workflow_template(
        "gpu-lib", {"templates": [gpu("train", 2, H100, timeout="3h")]}, cluster=True
    )
    namespaced_lib = workflow_template("gpu-lib", {"templates": [gpu("train", 8, H100)]})
    run = submit(
        {
            "entrypoint": "main",
            "templates": [
                steps(
                    "main",
                    [
                        {
                            "name": "t",
                            "templateRef": {
                                "name": "gpu-lib",
                                "template": "train",
                                "clusterScope": True,
                            },
                            "withItems": ["a", "b"],
                        }
                    ],
                )
            ],
        }
    )
    rows = estimate_rows([namespaced_lib, cluster_lib, run], config=wide)
    row = rows[-1]
    h100 = rate(wide)(H100)
    assert row["allowed"] and row["reasons"] == []
    assert row["cost_usd"] == pytest.approx(min(2 * 2 * h100 * 3, 2 * 2 * h100 * DAY), abs=0.005)
    assert "train: 2 × h100-80gb" in row["warnings"][0]


def test_a_hook_calling_a_template_of_a_workflow_template_is_priced(wide) -> None:
    # like the same hook with `template:`: peak (1 + 4) × a100 × 12h
    lib = workflow_template("lib", {"templates": [gpu("notify", 4)]})
    hook = {"exit": {"templateRef": {"name": "lib", "template": "notify"}}}
    run = workflow(steps("main", [call("t", "train", hooks=hook)]), gpu("train", 1))
    row = estimate_rows([lib, run], config=wide)[-1]
    assert row["cost_usd"] == pytest.approx((1 + 4) * rate(wide)(A100) * DAY, abs=0.005)


def test_a_template_ref_not_given_is_template_not_found(wide) -> None:
    run = workflow(
        steps("main", [{"name": "t", "templateRef": {"name": "lib", "template": "train"}}])
    )
    decision = evaluate(request(run), config=wide)
    assert not decision.allowed
    assert codes(decision) == ["template-not-found"]


def test_a_workflow_template_deadline_is_kept_under_a_workflow_template_ref(table) -> None:
    template = workflow_template(
        "short", {"entrypoint": "g", "activeDeadlineSeconds": 3600, "templates": [gpu("g", 1)]}
    )
    specs = {("team-a", "short", False): template["spec"]}
    config = Config(
        table,
        policy_with(threshold_usd=1e9),
        lookup=lambda ns, name, cluster: specs.get((ns, name, cluster)),
    )
    run = submit({"workflowTemplateRef": {"name": "short"}})
    decision = evaluate(request(run), config=config)
    # The template stops the run after 1h; the Workflow's own field would win over it.
    assert decision.runtime_seconds == 3600
    assert patched(decision, run)["spec"].get("activeDeadlineSeconds", 3600) <= 3600


# --- what the mutating webhook writes --------------------------------------------------------


def test_a_workflow_gets_the_default_deadline_and_its_labels_in_pod_metadata(wide) -> None:
    obj = workflow(gpu("main", 1))
    decision = evaluate(request(obj), config=wide)
    expected = copy.deepcopy(obj)
    expected["spec"]["activeDeadlineSeconds"] = 12 * 3600
    expected["spec"]["podMetadata"] = {"labels": LABELS}
    expected["metadata"]["annotations"] = {"costgate.io/estimated-cost": decision.stamp}
    assert patched(decision, obj) == expected
    assert decision.stamp == f"{rate(wide)(A100) * DAY:.2f}"


def test_a_smaller_workflow_deadline_is_kept(wide) -> None:
    obj = workflow(gpu("main", 1), spec={"activeDeadlineSeconds": 1800})
    decision = evaluate(request(obj), config=wide)
    assert decision.runtime_seconds == 1800
    assert patched(decision, obj)["spec"]["activeDeadlineSeconds"] == 1800
    assert decision.estimate.usd == pytest.approx(rate(wide)(A100) * 0.5, abs=0.005)


def test_a_larger_workflow_deadline_is_lowered_to_the_declared_runtime(wide) -> None:
    obj = workflow(
        gpu("main", 1),
        spec={"activeDeadlineSeconds": 86400},
        annotations={"costgate.io/max-runtime": "3h"},
    )
    decision = evaluate(request(obj), config=wide)
    assert patched(decision, obj)["spec"]["activeDeadlineSeconds"] == 3 * 3600


def test_existing_pod_metadata_keeps_its_labels_and_gains_attribution(wide) -> None:
    annotations = {
        "costgate.io/max-runtime": "2h",
        "costgate.io/gpu-type": A100,
        "costgate.io/estimated-cost": "1.00",  # the stamp is the workflow's, not its pods'
        "team.example/notes": "not costgate's",
    }
    obj = workflow(
        gpu("main", 1),
        annotations=annotations,
        labels={**LABELS, "tier": "gold"},
        spec={"podMetadata": {"labels": {"app": "trainer", "owner": "someone-else"}}},
    )
    decision = evaluate(request(obj), config=wide)
    expected = copy.deepcopy(obj)
    expected["spec"]["activeDeadlineSeconds"] = 7200
    expected["spec"]["podMetadata"] = {
        "labels": {"app": "trainer", **LABELS},  # only the required labels are copied
        "annotations": {"costgate.io/max-runtime": "2h", "costgate.io/gpu-type": A100},
    }
    expected["metadata"]["annotations"]["costgate.io/estimated-cost"] = decision.stamp
    assert decision.stamp == f"{rate(wide)(A100) * 2:.2f}"
    assert patched(decision, obj) == expected


def test_absent_pod_metadata_gets_both_labels_and_costgate_annotations(wide) -> None:
    # Two `add /spec/podMetadata` ops (labels, then annotations) would keep only the last.
    obj = workflow(gpu("main", 1), annotations={"costgate.io/max-runtime": "3h"})
    decision = evaluate(request(obj), config=wide)
    expected = copy.deepcopy(obj)
    expected["spec"]["activeDeadlineSeconds"] = 3 * 3600
    expected["spec"]["podMetadata"] = {
        "labels": LABELS,
        "annotations": {"costgate.io/max-runtime": "3h"},
    }
    expected["metadata"]["annotations"]["costgate.io/estimated-cost"] = decision.stamp
    assert patched(decision, obj) == expected


def test_a_cronworkflow_gets_its_deadline_and_labels_in_the_workflows_it_makes(wide) -> None:
    # workflowMetadata present (with a label of its own), podMetadata present: no op replaces
    obj = cron(
        workflow(
            gpu("main", 2),
            annotations={"costgate.io/max-runtime": "6h"},
            spec={"podMetadata": {"labels": {"app": "eval"}}},
        ),
        workflow_metadata={"labels": {"schedule": "nightly"}},
    )
    decision = evaluate(request(obj), config=wide)
    assert decision.allowed
    # one run: 2 × a100 × 6h
    assert decision.estimate.usd == pytest.approx(2 * rate(wide)(A100) * 6, abs=0.005)
    expected = copy.deepcopy(obj)
    expected["spec"]["workflowSpec"]["activeDeadlineSeconds"] = 6 * 3600
    expected["spec"]["workflowSpec"]["podMetadata"] = {
        "labels": {"app": "eval", **LABELS},
        "annotations": {"costgate.io/max-runtime": "6h"},
    }
    expected["spec"]["workflowMetadata"] = {
        "labels": {"schedule": "nightly", **LABELS},
        "annotations": {"costgate.io/max-runtime": "6h"},
    }
    expected["metadata"]["annotations"]["costgate.io/estimated-cost"] = decision.stamp
    assert patched(decision, obj) == expected


def test_a_cronworkflow_without_metadata_templates_gets_its_labels(wide) -> None:
    obj = cron(workflow(gpu("main", 1)))
    decision = evaluate(request(obj), config=wide)
    expected = copy.deepcopy(obj)
    expected["spec"]["workflowSpec"]["activeDeadlineSeconds"] = 12 * 3600
    expected["spec"]["workflowSpec"]["podMetadata"] = {"labels": LABELS}
    expected["spec"]["workflowMetadata"] = {"labels": LABELS}
    expected["metadata"]["annotations"] = {"costgate.io/estimated-cost": decision.stamp}
    assert patched(decision, obj) == expected


def test_a_cronworkflow_with_annotations_and_no_metadata_templates_gets_both(wide) -> None:
    obj = cron(workflow(gpu("main", 1), annotations={"costgate.io/gpu-type": A100}))
    decision = evaluate(request(obj), config=wide)
    copied = {"labels": LABELS, "annotations": {"costgate.io/gpu-type": A100}}
    result = patched(decision, obj)
    assert result["spec"]["workflowSpec"]["podMetadata"] == copied
    assert result["spec"]["workflowMetadata"] == copied


def test_a_cronworkflow_labelled_through_workflow_metadata_is_attributed(strict) -> None:
    obj = cron(workflow(gpu("main", 1, T4), labels={}), workflow_metadata={"labels": LABELS})
    decision = evaluate(request(obj), config=strict)
    assert decision.allowed and codes(decision) == []


def test_a_workflow_template_without_labels_is_denied(strict) -> None:
    obj = workflow_template("lib", {"entrypoint": "g", "templates": [gpu("g", 1, T4)]})
    obj["metadata"]["labels"] = {"owner": "alice"}
    decision = evaluate(request(obj), config=strict)
    assert not decision.allowed
    assert codes(decision) == ["missing-labels"]
    assert "experiment" in decision.reasons[0].message


def test_a_workflow_template_is_priced_for_information_only(strict) -> None:
    # 8 × h100 × 12h is far above $100: a template is not gated, its Workflows are
    obj = workflow_template("lib", {"entrypoint": "g", "templates": [gpu("g", 8, H100)]})
    decision = evaluate(request(obj), config=strict)
    cost = 8 * rate(strict)(H100) * DAY
    assert decision.allowed and codes(decision) == []
    assert decision.estimate.usd == pytest.approx(cost, abs=0.005)
    assert decision.warnings == (
        f"costgate: a workflow of this template would cost up to {money(cost)} "
        f"(up to {money(cost / DAY)}/h at once × 12h; g: 8 × h100-80gb at "
        f"{money(rate(strict)(H100))}/h), above the $100.00 threshold",
    )
    assert patch_ops(decision, obj) == []


# --- updates ---------------------------------------------------------------------------------


def stored(config: Config, obj: dict[str, Any]) -> dict[str, Any]:
    """What the API server holds after a CREATE through the mutating webhook."""
    decision = evaluate(request(obj), config=config)
    assert decision.allowed, decision.reasons
    return patched(decision, obj)


def update(config: Config, old, change: Callable[[dict[str, Any]], None], user: str = "alice"):
    new = copy.deepcopy(old)
    change(new)
    return evaluate(request(new, operation="UPDATE", old=old, username=user), config=config), new


def test_the_workflow_controller_updates_are_allowed_at_once(strict) -> None:
    old = stored(strict, workflow(gpu("main", 1)))

    def status(wf):
        wf["status"] = {"phase": "Running"}
        wf["metadata"]["labels"] = {"workflows.argoproj.io/phase": "Running"}
        wf["spec"]["templates"][0]["container"]["resources"]["limits"]["nvidia.com/gpu"] = "8"

    decision, _ = update(strict, old, status, user=ARGO_SA)
    assert decision.allowed and not decision.reasons and not decision.priced


def test_terminating_an_expensive_workflow_is_allowed(wide, strict) -> None:
    # created under a higher threshold (or approved): 8 × a100 × 12h is above $100
    old = stored(wide, workflow(gpu("main", 8)))
    decision, _ = update(strict, old, lambda wf: wf["spec"].update(activeDeadlineSeconds=0))
    assert decision.allowed and codes(decision) == []


def test_stopping_an_expensive_workflow_is_allowed(wide, strict) -> None:
    old = stored(wide, workflow(gpu("main", 8)))
    decision, _ = update(strict, old, lambda wf: wf["spec"].update(shutdown="Stop"))
    assert decision.allowed and codes(decision) == []


def _more_gpus(wf):
    wf["spec"]["templates"][0]["container"]["resources"]["limits"]["nvidia.com/gpu"] = "4"


def _more_items(wf):
    wf["spec"]["templates"][0]["steps"][0][0]["withItems"] = [1, 2, 3, 4, 5]


def _longer(wf):
    wf["metadata"]["annotations"]["costgate.io/max-runtime"] = "48h"
    wf["spec"]["activeDeadlineSeconds"] = 48 * 3600


RAISES = [
    # 1 × a100 × 12h ($41) -> 4 × a100 × 12h ($165)
    ("raising the GPUs past the threshold", workflow(gpu("main", 1)), _more_gpus),
    # 2 items × 1 × a100 × 12h ($82) -> 5 items ($206)
    (
        "raising the fan-out past the threshold",
        workflow(steps("main", [call("t", "train", withItems=[1, 2])]), gpu("train", 1)),
        _more_items,
    ),
    # 1 × a100 × 12h ($41) -> 1 × a100 × 48h ($165)
    (
        "raising the declared runtime and the deadline past the threshold",
        workflow(gpu("main", 1), annotations={"costgate.io/max-runtime": "12h"}),
        _longer,
    ),
]


@pytest.mark.parametrize(("obj", "change"), [r[1:] for r in RAISES], ids=[r[0] for r in RAISES])
def test_an_update_raising_the_cost_past_the_threshold_is_denied(obj, change, strict) -> None:
    old = stored(strict, obj)
    decision, _ = update(strict, old, change)
    assert not decision.allowed
    assert codes(decision) == ["over-threshold"]


def test_an_update_raising_only_the_deadline_is_lowered_back_or_denied(strict) -> None:
    # The runtime is capped at the declaration, so the price does not move; the deadline must.
    old = stored(strict, workflow(gpu("main", 1)))
    decision, new = update(strict, old, lambda wf: wf["spec"].update(activeDeadlineSeconds=604800))
    assert not decision.allowed or patched(decision, new)["spec"]["activeDeadlineSeconds"] <= 43200


def test_raising_the_deadline_of_an_expensive_workflow_is_lowered_back_or_denied(
    wide, strict
) -> None:
    # created under a higher threshold (or approved): 8 × a100 × 12h is above $100
    old = stored(wide, workflow(gpu("main", 8)))
    decision, new = update(strict, old, lambda wf: wf["spec"].update(activeDeadlineSeconds=604800))
    assert not decision.allowed or patched(decision, new)["spec"]["activeDeadlineSeconds"] <= 43200


def test_a_relabel_that_keeps_the_labels_is_allowed(strict) -> None:
    old = stored(strict, workflow(gpu("main", 1)))
    decision, _ = update(strict, old, lambda wf: wf["metadata"]["labels"].update(stage="eval"))
    assert decision.allowed and codes(decision) == []


def test_stripping_a_required_label_is_denied(strict) -> None:
    old = stored(strict, workflow(gpu("main", 1)))
    decision, _ = update(strict, old, lambda wf: wf["metadata"]["labels"].pop("owner"))
    assert not decision.allowed
    assert codes(decision) == ["missing-labels"]


def test_an_update_from_an_unreadable_object_is_priced_like_a_new_one(strict) -> None:
    # The stored version cannot be read (nothing to compare with): the new one is decided
    # on its own, so a dear update cannot hide behind an old version that fails to parse.
    cheap = stored(strict, workflow(gpu("main", 1)))
    unreadable = copy.deepcopy(cheap)
    unreadable["spec"]["templates"] = "not a list"
    decision = evaluate(request(cheap, operation="UPDATE", old=unreadable), config=strict)
    assert decision.allowed and decision.priced and codes(decision) == []
    dear = copy.deepcopy(cheap)
    _more_gpus(dear)
    decision = evaluate(request(dear, operation="UPDATE", old=unreadable), config=strict)
    assert not decision.allowed
    assert codes(decision) == ["over-threshold"]


# --- what the workflow controller makes ------------------------------------------------------


def argo_pod() -> dict[str, Any]:
    return owned_by(pod(gpus=8, labels={}), "Workflow")


def test_pods_the_workflow_controller_makes_are_not_priced_again(strict) -> None:
    decision = evaluate(request(argo_pod(), username=ARGO_SA), config=strict)
    assert decision.allowed and not decision.priced and decision.deadline is None


def test_a_person_creating_a_workflow_owned_pod_is_priced_like_any_pod(strict) -> None:
    claimed = evaluate(request(argo_pod(), username="mallory"), config=strict)
    plain = evaluate(request(pod(gpus=8, labels={}), username="mallory"), config=strict)
    assert not claimed.allowed
    assert codes(claimed) == codes(plain) == ["missing-labels", "over-threshold"]
    assert claimed.estimate.usd == plain.estimate.usd


def test_workflows_a_cronworkflow_makes_are_not_priced_again(strict) -> None:
    obj = owned_by(workflow(gpu("main", 8), labels={}), "CronWorkflow")
    decision = evaluate(request(obj, username=ARGO_SA), config=strict)
    assert decision.allowed and not decision.priced


def test_a_workflow_a_workflow_makes_is_priced(strict) -> None:
    # workflow-of-workflows: a resource template creates a Workflow; Workflow owners create Pods
    obj = owned_by(workflow(gpu("main", 8), labels={}), "Workflow")
    decision = evaluate(request(obj, username=ARGO_SA), config=strict)
    assert decision.priced
    assert "missing-labels" in codes(decision)


def test_a_job_a_workflow_makes_is_priced(strict) -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "child", "namespace": "team-a"},
        "spec": {"template": {"spec": pod(gpus=8)["spec"]}},
    }
    decision = evaluate(request(owned_by(job, "Workflow"), username=ARGO_SA), config=strict)
    assert not decision.allowed and decision.priced
    assert codes(decision) == ["missing-labels", "over-threshold"]


# --- properties ------------------------------------------------------------------------------

# A small model of a workflow, rendered to a manifest: pod templates p0..pN and a tree of
# steps/dag templates whose calls have an optional withItems length.
PROPERTY_TYPES = (A100, H100, T4)


@st.composite
def pod_models(draw) -> dict[str, Any]:
    return {
        "gpus": draw(st.integers(0, 8)),
        "type": draw(st.sampled_from(PROPERTY_TYPES)),
        "retry": draw(st.none() | st.integers(0, 3)),
        "deadline": draw(st.none() | st.integers(1, 6)),  # hours
        "timeout": draw(st.booleans()),  # the deadline as `timeout` rather than a number
    }


@st.composite
def node_models(draw, depth: int, pods: int) -> dict[str, Any]:
    def calls() -> list[dict[str, Any]]:
        found = []
        for _ in range(draw(st.integers(1, 3))):
            if depth < 3 and draw(st.integers(0, 3)) == 0:
                target: Any = draw(node_models(depth + 1, pods))
            else:
                target = draw(st.integers(0, pods - 1))
            found.append({"items": draw(st.none() | st.integers(0, 5)), "target": target})
        return found

    kind = draw(st.sampled_from(["steps", "dag"]))
    body = [calls() for _ in range(draw(st.integers(1, 2)))] if kind == "steps" else calls()
    return {
        "kind": kind,
        "body": body,
        "parallelism": draw(st.none() | st.integers(1, 4)),
        "retry": draw(st.none() | st.integers(0, 3)),
    }


@st.composite
def workflow_models(draw) -> dict[str, Any]:
    pods = draw(st.lists(pod_models(), min_size=1, max_size=3))
    return {
        "pods": pods,
        "root": draw(node_models(1, len(pods))),
        "hours": draw(st.integers(1, 48)),
        "parallelism": draw(st.none() | st.integers(1, 6)),
    }


def _calls(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for group in node["body"] for c in group] if node["kind"] == "steps" else node["body"]


def render(model: dict[str, Any]) -> dict[str, Any]:
    templates: list[dict[str, Any]] = []
    for i, p in enumerate(model["pods"]):
        extra: dict[str, Any] = {}
        if p["retry"] is not None:
            extra["retryStrategy"] = {"limit": p["retry"]}
        if p["deadline"] is not None and p["timeout"]:
            extra["timeout"] = f"{p['deadline']}h"
        elif p["deadline"] is not None:
            extra["activeDeadlineSeconds"] = p["deadline"] * 3600
        templates.append(gpu(f"p{i}", p["gpus"], p["type"], **extra))

    def add(node: dict[str, Any]) -> str:
        name = f"n{len(templates)}"
        templates.append({})  # reserve the slot; the name stays unique
        slot = len(templates) - 1

        def task(j: int, c: dict[str, Any]) -> dict[str, Any]:
            target = c["target"]
            step = call(f"c{j}", f"p{target}" if isinstance(target, int) else add(target))
            if c["items"] is not None:
                step["withItems"] = list(range(c["items"]))
            return step

        extra: dict[str, Any] = {}
        if node["parallelism"] is not None:
            extra["parallelism"] = node["parallelism"]
        if node["retry"] is not None:
            extra["retryStrategy"] = {"limit": node["retry"]}
        if node["kind"] == "steps":
            groups = [[task(j, c) for j, c in enumerate(group)] for group in node["body"]]
            templates[slot] = steps(name, *groups, **extra)
        else:
            templates[slot] = dag(name, *[task(j, c) for j, c in enumerate(node["body"])], **extra)
        return name

    entry = add(model["root"])
    spec = {} if model["parallelism"] is None else {"parallelism": model["parallelism"]}
    return workflow(
        *templates,
        entrypoint=entry,
        spec=spec,
        annotations={"costgate.io/max-runtime": f"{model['hours']}h"},
    )


def cost(model: dict[str, Any], config: Config) -> float:
    decision = evaluate(request(render(model)), config=config)
    assert decision.allowed, decision.reasons
    return 0.0 if decision.estimate is None else decision.estimate.usd


def single_step_floor(model: dict[str, Any], config: Config) -> float:
    """The dearest single pod that surely runs: one run for min(its deadline, the workflow's)."""
    floor = 0.0
    hours = model["hours"]

    def walk(node: dict[str, Any]) -> None:
        nonlocal floor
        for c in _calls(node):
            if c["items"] == 0:
                continue  # nothing below an empty loop runs
            if isinstance(c["target"], int):
                p = model["pods"][c["target"]]
                run = hours if p["deadline"] is None else min(p["deadline"], hours)
                floor = max(floor, p["gpus"] * rate(config)(p["type"]) * run)
            else:
                walk(c["target"])

    walk(model["root"])
    return floor


def all_calls(node: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for c in _calls(node):
        found.append(c)
        if not isinstance(c["target"], int):
            found += all_calls(c["target"])
    return found


def all_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    found = [node]
    for c in _calls(node):
        if not isinstance(c["target"], int):
            found += all_nodes(c["target"])
    return found


PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(model=workflow_models(), data=st.data())
def test_more_gpus_never_lower_the_estimate(model, data, wide) -> None:
    raised = copy.deepcopy(model)
    p = raised["pods"][data.draw(st.integers(0, len(model["pods"]) - 1))]
    p["gpus"] += data.draw(st.integers(1, 8))
    assert cost(raised, wide) >= cost(model, wide)


@PROPERTY
@given(model=workflow_models(), data=st.data())
def test_more_fan_out_never_lowers_the_estimate(model, data, wide) -> None:
    raised = copy.deepcopy(model)
    calls = all_calls(raised["root"])
    c = calls[data.draw(st.integers(0, len(calls) - 1))]
    c["items"] = (1 if c["items"] is None else c["items"]) + data.draw(st.integers(1, 5))
    assert cost(raised, wide) >= cost(model, wide)


@PROPERTY
@given(model=workflow_models(), data=st.data())
def test_a_higher_retry_limit_never_lowers_the_estimate(model, data, wide) -> None:
    raised = copy.deepcopy(model)
    templates = raised["pods"] + all_nodes(raised["root"])
    t = templates[data.draw(st.integers(0, len(templates) - 1))]
    t["retry"] = (0 if t["retry"] is None else t["retry"]) + data.draw(st.integers(1, 3))
    assert cost(raised, wide) >= cost(model, wide)


@PROPERTY
@given(model=workflow_models(), more=st.integers(1, 48))
def test_a_longer_workflow_deadline_never_lowers_the_estimate(model, more, wide) -> None:
    raised = copy.deepcopy(model)
    raised["hours"] += more
    assert cost(raised, wide) >= cost(model, wide)


@PROPERTY
@given(model=workflow_models())
def test_the_estimate_covers_the_dearest_single_step(model, wide) -> None:
    # 0.01: the estimate is rounded to cents
    assert cost(model, wide) + 0.01 >= single_step_floor(model, wide)


def test_a_gpu_exit_handler_without_a_deadline_has_no_bound(wide: Config) -> None:
    # workflowpod.go ignores the workflow deadline for exit handlers: nothing stops this pod
    obj = workflow(gpu("main", 4), gpu("cleanup", 1), spec={"onExit": "cleanup"})
    decision = evaluate(request(obj), config=wide)
    assert codes(decision) == ["invalid-gpu-request"]
    assert "exit handler" in decision.reasons[0].message


# --- error paths and notes -------------------------------------------------------------------


def test_a_workflow_template_ref_nobody_can_read_is_denied_or_warned_per_policy(table) -> None:
    obj = workflow(spec={"workflowTemplateRef": {"name": "elsewhere"}, "templates": []})
    deny = evaluate(request(obj), config=Config(table, policy_with(threshold_usd=1e9)))
    assert codes(deny) == ["template-not-found"]
    assert 'WorkflowTemplate "elsewhere"' in deny.reasons[0].message
    warn = Config(table, policy_with(threshold_usd=1e9, unresolved_templates="warn"))
    allowed = evaluate(request(obj), config=warn)
    assert allowed.allowed and not allowed.reasons
    assert any('"elsewhere"' in w for w in allowed.warnings)


def test_a_max_fanout_that_is_not_a_number_is_refused(wide: Config) -> None:
    obj = workflow(
        steps("main", [call("t", "train", withParam="{{x}}")]),
        gpu("train", 1),
        annotations={"costgate.io/max-fanout": "lots"},
    )
    decision = evaluate(request(obj), config=wide)
    assert "invalid-gpu-request" in codes(decision)
    assert 'costgate.io/max-fanout="lots" is not a whole number' in decision.reasons[0].message


def test_a_step_calling_an_undefined_template_is_named(wide: Config) -> None:
    obj = workflow(steps("main", [call("t", "nowhere")]), gpu("train", 1))
    decision = evaluate(request(obj), config=wide)
    assert codes(decision) == ["invalid-request"]
    assert 'template "nowhere", which the workflow does not define' in decision.reasons[0].message


def test_an_unreadable_patch_naming_no_resources_is_ignored_with_a_warning(wide: Config) -> None:
    obj = workflow(gpu("main", 1, podSpecPatch='{"priorityClassName": {{x}} }'))
    decision = evaluate(request(obj), config=wide)
    assert decision.allowed
    assert any("podSpecPatch cannot be read" in w and "ignored" in w for w in decision.warnings)


def test_a_resource_template_says_its_object_is_priced_when_created(wide: Config) -> None:
    obj = workflow(
        steps("main", [call("t", "train")], [call("make", "job")]),
        gpu("train", 1),
        {"name": "job", "resource": {"action": "create", "manifest": "kind: Job"}},
    )
    decision = evaluate(request(obj), config=wide)
    assert decision.allowed
    assert any('template "job" creates an object' in w for w in decision.warnings)
