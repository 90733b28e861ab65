"""Workflows whose cost has no bound (withParam without a declared fan-out, recursion, a GPU
exit handler without a deadline) are denied, with the way through."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.support.builders import request
from tests.support.workflows import (
    A100,
    DAY,
    call,
    codes,
    dag,
    gpu,
    rate,
    steps,
    workflow,
)
from webhook.core.engine import Config, evaluate

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


def test_a_gpu_exit_handler_without_a_deadline_has_no_bound(wide: Config) -> None:
    # workflowpod.go ignores the workflow deadline for exit handlers: nothing stops this pod
    obj = workflow(gpu("main", 4), gpu("cleanup", 1), spec={"onExit": "cleanup"})
    decision = evaluate(request(obj), config=wide)
    assert codes(decision) == ["invalid-gpu-request"]
    assert "exit handler" in decision.reasons[0].message


def test_a_recursion_with_a_zero_deadline_is_unbounded_not_nan(wide: Config) -> None:
    # ∞ GPUs at once × 0 h was NaN: "$nan", stamped "nan", and every comparison with a
    # threshold, an approval or a quota let it through.
    obj = workflow(
        steps("main", [call("t", "train")], [call("again", "main")]),
        gpu("train", 1),
        spec={"activeDeadlineSeconds": 0},
    )
    decision = evaluate(request(obj), config=wide)
    assert codes(decision) == ["invalid-gpu-request"]
    assert "no bound on its cost" in decision.reasons[0].message
    assert decision.stamp is None and decision.usage is None


def test_a_recursion_with_a_zero_deadline_holds_nothing_in_warn_mode(wide: Config) -> None:
    warn = Config(
        wide.table, replace(wide.policy, default=replace(wide.policy.default, mode="warn"))
    )
    obj = workflow(
        steps("main", [call("t", "train")], [call("again", "main")]),
        gpu("train", 1),
        spec={"activeDeadlineSeconds": 0},
    )
    decision = evaluate(request(obj), config=warn)
    assert decision.outcome == "warn"
    assert decision.estimate is None and decision.usage is None and decision.stamp is None
