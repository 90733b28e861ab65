"""A review that could block the server (issue 13, item 12): the work of one review is
capped, and no review holds the event loop.

A Workflow DAG whose every level calls the next one twice has 2^levels paths; it is read
once per template (memoised), so 18 levels cost what 18 templates cost. Work that remains
large however it is read (many callers, each with its own placement, of a wide template) is
refused past the core's cap on visits, with the same words in `costgate estimate` and in the
webhook. What the server decides off the event loop (large bodies, Argo objects) is denied
past the edge's cap on time, and the reviews of other clients are answered meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx

from tests.support.builders import gpu_pod, request, review
from tests.support.workflows import A100, call, dag, gpu, workflow
from webhook.core import messages
from webhook.core.engine import evaluate
from webhook.core.extract.workflowspec import MAX_VISITS
from webhook.estimate import estimate_rows
from webhook.server.app import build_app
from webhook.service import AdmissionService
from webhook.state import memory_state

A100_PER_HOUR = 3.4309  # bundled pricing table
MIB = 1024 * 1024


def doubling_dag(levels: int) -> dict[str, Any]:
    """Level i is a DAG of two tasks, both calling level i + 1; the last level is one pod
    of 1 A100, which thus runs 2^levels times, all at once."""
    templates = [
        dag("main" if i == 0 else f"l{i}", call("a", f"l{i + 1}"), call("b", f"l{i + 1}"))
        for i in range(levels)
    ]
    return workflow(*templates, gpu(f"l{levels}", 1, A100))


def many_callers(callers: int, width: int) -> dict[str, Any]:
    """`callers` DAGs, each with its own nodeSelector, call one DAG of `width` tasks: Argo
    places its pods by each caller's selector, so it is read once per caller
    (callers × width tasks, from an object of callers + width entries)."""
    return workflow(
        dag("main", *(call(f"c{i}", f"c{i}") for i in range(callers))),
        *(
            dag(f"c{i}", call("wide", "wide"), nodeSelector={"example.com/pool": f"p{i}"})
            for i in range(callers)
        ),
        dag("wide", *(call(f"t{j}", "pod") for j in range(width))),
        gpu("pod", 1, None),
    )


OVER_THE_CAP = many_callers(250, 250)  # 62,500 tasks read, more than MAX_VISITS


def _denial(answer_body: bytes) -> dict[str, Any]:
    status: dict[str, Any] = json.loads(answer_body)["response"]["status"]
    return status


# --- the core: priced once per template, capped in visits -----------------------------------


def test_a_dag_doubling_at_each_of_18_levels_is_priced_in_a_fraction_of_a_second(config) -> None:
    """It took 12 s of CPU (each level doubling it) before templates were memoised."""
    started = time.process_time()
    evaluate(request(doubling_dag(18)), config=config)
    assert time.process_time() - started < 0.5


def test_a_doubling_dag_is_still_priced_as_every_path_running_at_once(config) -> None:
    # 6 levels: the pod runs 2^6 = 64 times, all at once: 64 × $3.4309/h × 12h = $2,634.93
    decision = evaluate(request(doubling_dag(6)), config=config)
    assert decision.estimate is not None
    assert decision.estimate.usd == round(64 * A100_PER_HOUR * 12, 2)


def test_a_workflow_past_the_visit_cap_is_refused_with_a_clear_reason(config) -> None:
    assert MAX_VISITS < 250 * 250
    decision = evaluate(request(OVER_THE_CAP), config=config)
    assert [(r.code, r.message) for r in decision.reasons] == [
        ("invalid-request", messages.too_much_work(MAX_VISITS))
    ]


def test_costgate_estimate_refuses_a_workflow_past_the_cap_with_the_servers_words(
    config,
) -> None:
    service = AdmissionService(config, state=memory_state())
    server = _denial(service.handle(review(OVER_THE_CAP), "validate").body)
    [row] = estimate_rows([OVER_THE_CAP], config=config, namespace="team-a")
    assert row["reasons"] == [{"code": "invalid-request", "message": server["message"]}]


# --- the edge: off the event loop, capped in time ----------------------------------------------


async def _post(client: httpx.AsyncClient, body: bytes) -> float:
    """Seconds until the answer to `body` on /validate."""
    started = time.perf_counter()
    response = await client.post("/validate", content=body)
    response.raise_for_status()
    return time.perf_counter() - started


def test_no_review_holds_the_event_loop_50ms_while_a_slow_one_runs_next_to_fast_ones(
    config,
) -> None:
    """Before, the slow review ran on the event loop and everything waited for it (25 s for
    /healthz with 18 levels). A ticker waking every millisecond measures the CPU the loop's
    thread spends between its turns, while fast Pod reviews are sent one after another: the
    work done on the loop, not the time a busy machine or the interpreter lock (shared with
    the worker) makes it wait, which is measured by `make bench`."""
    app = build_app(config, max_body_bytes=3 * MIB, state=memory_state())
    slow_body = review(OVER_THE_CAP)
    fast_body = review(gpu_pod(gpus=1))

    async def run() -> float:
        gaps: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:
            last = time.thread_time()
            while not done.is_set():
                await asyncio.sleep(0.001)
                now = time.thread_time()
                gaps.append(now - last)
                last = now

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://costgate") as client:
            await _post(client, fast_body)  # warm
            ticking = asyncio.create_task(ticker())
            await asyncio.sleep(0.01)
            slow = asyncio.create_task(_post(client, slow_body))
            while not slow.done():
                await asyncio.sleep(0)  # in-process, a fast review never waits on the loop
                await _post(client, fast_body)
            await slow
            done.set()
            await ticking
        return max(gaps)

    assert asyncio.run(run()) < 0.05


def test_a_review_not_decided_in_time_is_denied_with_a_clear_reason(config) -> None:
    service = AdmissionService(config, state=memory_state(), review_seconds=0.001)
    answer = asyncio.run(service.handle_async(review(OVER_THE_CAP), "validate"))
    assert _denial(answer.body) == {
        "code": 503,
        "reason": "ServiceUnavailable",
        "message": messages.review_too_slow(0.001),
    }
