"""Properties of the workflow estimate over generated workflows (hypothesis): more GPUs, fan-out,
retries or runtime never lower it, and it covers the dearest single step."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.builders import request
from tests.support.workflows import (
    A100,
    H100,
    T4,
    call,
    dag,
    gpu,
    rate,
    steps,
    workflow,
)
from webhook.core.engine import Config, evaluate

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
