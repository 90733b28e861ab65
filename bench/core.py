"""In-process benchmark of the decision core, JSON parse included: for each captured review
body, `AdmissionService(config).handle(body, endpoint)` (what the server calls per request),
`evaluate(parse_review(body), config=config)` and `orjson.loads(body)` alone, so the share
of the parse is visible. Owns the "core" rows of the table.

Timing: perf_counter_ns around every single call, WARMUP_CALLS first, then BATCHES batches of
CALLS_PER_BATCH calls with the garbage collector on, as in production; the three paths of a
body take turns batch by batch. "median" is the median over batches of the batch's mean per
call; "p99" the 99th percentile of all single calls. Each body's measurement waits for a quiet
machine and is repeated when another process took CPU meanwhile (bench/quiet.py).

    python bench/core.py    # this part alone
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import orjson
from quiet import quietly
from report import Row, percentile, render

from webhook.admission import parse_review
from webhook.core.engine import Config, evaluate
from webhook.core.types import Decision
from webhook.service import AdmissionService, Endpoint
from webhook.tables import load_config

__all__ = ["CASES", "FIXTURES", "Case", "Timing", "measure", "run"]

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "admission"
WARMUP_CALLS = 2_000
BATCHES = 20
CALLS_PER_BATCH = 2_000


@dataclass(frozen=True, slots=True)
class Case:
    label: str
    fixture: str  # file name in tests/fixtures/admission
    endpoint: Endpoint
    allowed: bool  # the answer expected with the bundled pricing and policy
    target_us: float  # median of the full path, parse included


CASES = (
    Case("validate gpu", "validate-pod-create-gpu.json", "validate", False, 30.0),
    Case("validate plain", "validate-pod-create-plain.json", "validate", True, 15.0),
    Case("mutate gpu", "mutate-pod-create-gpu.json", "mutate", True, 30.0),
)


@dataclass(frozen=True, slots=True)
class Timing:
    median_us: float  # median over batches of the mean time per call
    p50_us: float  # median of single calls
    p99_us: float  # 99th percentile of single calls
    calls: int


def _batch(call: Callable[[], object]) -> list[int]:
    """CALLS_PER_BATCH calls of `call`, each timed in nanoseconds."""
    clock = time.perf_counter_ns
    batch = [0] * CALLS_PER_BATCH
    for i in range(CALLS_PER_BATCH):
        start = clock()
        call()
        batch[i] = clock() - start
    return batch


def measure(calls: Mapping[str, Callable[[], object]]) -> dict[str, Timing]:
    """Time each call as described in the module docstring. Their batches take turns, so a
    slow moment of the machine falls on all of them alike, and the medians leave it out."""
    for call in calls.values():
        for _ in range(WARMUP_CALLS):
            call()
    batch_means: dict[str, list[float]] = {name: [] for name in calls}
    singles: dict[str, list[int]] = {name: [] for name in calls}
    for _ in range(BATCHES):
        for name, call in calls.items():
            batch = _batch(call)
            batch_means[name].append(sum(batch) / CALLS_PER_BATCH)
            singles[name].extend(batch)
    timings = {}
    for name in calls:
        ordered = sorted(singles[name])
        timings[name] = Timing(
            median_us=statistics.median(batch_means[name]) / 1000,
            p50_us=percentile(ordered, 0.50) / 1000,
            p99_us=percentile(ordered, 0.99) / 1000,
            calls=len(ordered),
        )
    return timings


def _parse_and_evaluate(body: bytes, config: Config) -> Decision:
    return evaluate(parse_review(body), config=config)


def _check_answer(service: AdmissionService, body: bytes, case: Case) -> None:
    """Refuse to time a path that gives the wrong answer."""
    answer = service.handle(body, case.endpoint)
    review = orjson.loads(answer.body)
    allowed = review.get("response", {}).get("allowed")
    if answer.status != 200 or allowed is not case.allowed:
        raise RuntimeError(
            f"{case.fixture} on {case.endpoint}: expected HTTP 200 with allowed={case.allowed}, "
            f"got HTTP {answer.status}: {answer.body[:300]!r}"
        )


def _data(timing: Timing) -> dict[str, float | int | str | None]:
    return {
        "median_us": round(timing.median_us, 2),
        "p50_us": round(timing.p50_us, 2),
        "p99_us": round(timing.p99_us, 2),
        "calls": timing.calls,
    }


def _result(timing: Timing) -> str:
    return f"median {timing.median_us:.1f} µs, p99 {timing.p99_us:.1f} µs"


def run(log: Callable[[str], None] = print) -> list[Row]:
    """The core rows; raises RuntimeError when a path answers wrongly."""
    config = load_config()
    service = AdmissionService(config)
    # As in production: the server freezes its start-up objects out of the collector
    # (webhook/server/app.py), so full collections do not walk them between reviews.
    gc.collect()
    gc.freeze()
    rows: list[Row] = []
    for case in CASES:
        body = (FIXTURES / case.fixture).read_bytes()
        _check_answer(service, body, case)
        log(f"core: {case.label} ({len(body)} bytes)")
        calls = {
            "parse": partial(orjson.loads, body),
            "core": partial(_parse_and_evaluate, body, config),
            "full": partial(service.handle, body, case.endpoint),
        }
        timings, others = quietly(partial(measure, calls), log)
        parse, core, full = timings["parse"], timings["core"], timings["full"]
        target = f"median ≤ {case.target_us:g} µs"
        share = f"{100 * parse.median_us / full.median_us:.0f}% of handle()"
        rows.append(
            Row(
                "core",
                f"core {case.label}: orjson.loads(body)",
                f"{_result(parse)} ({share})",
                others_cpu=others,
                data={**_data(parse), "bytes": len(body)},
            )
        )
        targeted = [
            ("evaluate(parse_review(body))", core),
            (f"AdmissionService.handle(body, {case.endpoint!r})", full),
        ]
        rows += [
            Row(
                "core",
                f"core {case.label}: {path}",
                _result(timing),
                target,
                timing.median_us <= case.target_us,
                others_cpu=others,
                data=_data(timing),
            )
            for path, timing in targeted
        ]
    return rows


if __name__ == "__main__":
    print(render(run(lambda line: print(line, file=sys.stderr))))
