"""What GPU workflows cost, through the core's entry point.

Every expected cost is worked out by hand from the workflow's shape and the pricing table's
$/h (the arithmetic is in a comment next to each case), never by calling costgate's pricing.
Without a costgate.io/max-runtime annotation a workflow runs for the default 12h.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.builders import container, request
from tests.support.config import policy_with
from tests.support.workflows import (
    A100,
    DAG_FAN_OUT,
    DAY,
    GPU,
    H100,
    RETRIED_SWEEP,
    T4,
    call,
    codes,
    dag,
    gpu,
    on,
    rate,
    steps,
    workflow,
)
from webhook.core.engine import Config, evaluate


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
        DAG_FAN_OUT,
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
        RETRIED_SWEEP,
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
    # workflowpod.go addSchedulingConstraints (Argo 3.6 on): template, else boundary
    # template, else workflow. "train" runs inside "main" (t4), not on the workflow's h100:
    # peak 1 × t4 × 12h (safe, the default, would price the dearer h100: see
    # tests/test_bypass_argo_boundary.py)
    obj = workflow(
        steps("main", [call("t", "train")], nodeSelector=on(T4)),
        gpu("train", 1, None),
        spec={"nodeSelector": on(H100)},
    )
    inherited = dataclasses.replace(
        wide, policy=policy_with(threshold_usd=1e9, argo_boundary_placement="inherited")
    )
    decision = evaluate(request(obj), config=inherited)
    assert decision.estimate.usd == pytest.approx(rate(wide)(T4) * DAY, abs=0.005)


def test_a_step_with_no_items_runs_nothing(wide: Config) -> None:
    # the empty loop's 8 × h100 never run: peak 1 × a100 × 12h
    obj = workflow(
        steps("main", [call("none", "big", withItems=[]), call("one", "small")]),
        gpu("big", 8, H100),
        gpu("small", 1),
    )
    decision = evaluate(request(obj), config=wide)
    assert decision.estimate.usd == pytest.approx(rate(wide)(A100) * DAY, abs=0.005)
