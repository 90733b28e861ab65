"""In-process benchmark of the decision core, JSON parse included: for each captured review
body, `AdmissionService(config).handle(body, endpoint)` (what the server calls per request),
`evaluate(parse_review(body), config=config)` and `orjson.loads(body)` alone, so the share
of the parse is visible. Owns the "core" rows of the table.

Timing: perf_counter_ns around every single call, WARMUP_CALLS first, then BATCHES batches of
CALLS_PER_BATCH calls with the garbage collector on, as in production; the three paths of a
body take turns batch by batch. "median" is the median over batches of the batch's mean per
call; "p99" the 99th percentile of all single calls. Each body's measurement waits for a quiet
machine and is repeated when another process took CPU meanwhile (bench/quiet.py).

bench/against.py drives these same paths (`prepare`, `paths`, `sample`) in two processes, one
per `webhook` package, to compare a revision with the work tree: this module imports from
`webhook` only what both sides have (`load_config`, `Config`, `evaluate`, `parse_review`,
`AdmissionService`).

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
from typing import TYPE_CHECKING

import orjson
from quiet import once, quietly
from report import Row, percentile, render

from webhook.admission import parse_review
from webhook.core.engine import Config, evaluate
from webhook.service import AdmissionService
from webhook.tables import load_config

if TYPE_CHECKING:
    from webhook.service import Endpoint

__all__ = [
    "CASES",
    "FIXTURES",
    "FULL",
    "QUICK",
    "Case",
    "Plan",
    "Timing",
    "check_answer",
    "measure",
    "paths",
    "prepare",
    "run",
    "sample",
    "summarize",
]

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "admission"
WARMUP_CALLS = 2_000
BATCHES = 20
CALLS_PER_BATCH = 2_000


@dataclass(frozen=True, slots=True)
class Plan:
    """How many calls: warm-up calls per path, then batches of calls per path."""

    warmup_calls: int = WARMUP_CALLS
    batches: int = BATCHES
    calls_per_batch: int = CALLS_PER_BATCH


FULL = Plan()
QUICK = Plan(warmup_calls=50, batches=3, calls_per_batch=100)  # `run.py --quick`: a smoke


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


Samples = tuple[list[float], list[int]]  # (mean ns per call of each batch, every call's ns)


def _batch(call: Callable[[], object], calls: int) -> list[int]:
    """`calls` calls of `call`, each timed in nanoseconds."""
    clock = time.perf_counter_ns
    batch = [0] * calls
    for i in range(calls):
        start = clock()
        call()
        batch[i] = clock() - start
    return batch


def warm(calls: Mapping[str, Callable[[], object]], count: int) -> None:
    for call in calls.values():
        for _ in range(count):
            call()


def sample(
    calls: Mapping[str, Callable[[], object]], batches: int, calls_per_batch: int
) -> dict[str, Samples]:
    """`batches` batches of each call, their batches taking turns, so a slow moment of the
    machine falls on all of them alike."""
    found: dict[str, Samples] = {name: ([], []) for name in calls}
    for _ in range(batches):
        for name, call in calls.items():
            batch = _batch(call, calls_per_batch)
            found[name][0].append(sum(batch) / calls_per_batch)
            found[name][1].extend(batch)
    return found


def summarize(batch_means: list[float], singles: list[int]) -> Timing:
    ordered = sorted(singles)
    return Timing(
        median_us=statistics.median(batch_means) / 1000,
        p50_us=percentile(ordered, 0.50) / 1000,
        p99_us=percentile(ordered, 0.99) / 1000,
        calls=len(ordered),
    )


def measure(calls: Mapping[str, Callable[[], object]], plan: Plan = FULL) -> dict[str, Timing]:
    """Time each call as described in the module docstring; the medians leave a slow moment
    of the machine out."""
    warm(calls, plan.warmup_calls)
    found = sample(calls, plan.batches, plan.calls_per_batch)
    return {name: summarize(*found[name]) for name in calls}


def _parse_and_evaluate(body: bytes, config: Config) -> object:
    return evaluate(parse_review(body), config=config)


def prepare() -> tuple[Config, AdmissionService]:
    """The bundled Config and a service on it, start-up objects frozen out of the collector
    as the server does (webhook/server/app.py), so full collections do not walk them."""
    config = load_config()
    service = AdmissionService(config)
    gc.collect()
    gc.freeze()
    return config, service


def paths(
    case: Case, body: bytes, config: Config, service: AdmissionService
) -> dict[str, Callable[[], object]]:
    """The three paths timed for a body: the parse alone, the decision core with the wire
    parsing, and what the server calls per request."""
    return {
        "parse": partial(orjson.loads, body),
        "core": partial(_parse_and_evaluate, body, config),
        "full": partial(service.handle, body, case.endpoint),
    }


PATH_LABELS = {
    "parse": "orjson.loads(body)",
    "core": "evaluate(parse_review(body))",
    "full": "AdmissionService.handle(body, {endpoint!r})",
}


def check_answer(service: AdmissionService, body: bytes, case: Case) -> None:
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


def run(log: Callable[[str], None] = print, quick: bool = False) -> list[Row]:
    """The core rows; raises RuntimeError when a path answers wrongly. `quick`: a few calls,
    no waiting for a quiet machine (a smoke, not a measurement)."""
    config, service = prepare()
    plan, measured = (QUICK, once) if quick else (FULL, quietly)
    rows: list[Row] = []
    for case in CASES:
        body = (FIXTURES / case.fixture).read_bytes()
        check_answer(service, body, case)
        log(f"core: {case.label} ({len(body)} bytes)")
        calls = paths(case, body, config, service)
        timings, others = measured(partial(measure, calls, plan), log)
        parse, core, full = timings["parse"], timings["core"], timings["full"]
        target = f"median ≤ {case.target_us:g} µs"
        share = f"{100 * parse.median_us / full.median_us:.0f}% of handle()"
        rows.append(
            Row(
                "core",
                f"core {case.label}: {PATH_LABELS['parse']}",
                f"{_result(parse)} ({share})",
                others_cpu=others,
                data={**_data(parse), "bytes": len(body)},
            )
        )
        rows += [
            Row(
                "core",
                f"core {case.label}: {PATH_LABELS[path].format(endpoint=case.endpoint)}",
                _result(timing),
                target,
                timing.median_us <= case.target_us,
                others_cpu=others,
                data=_data(timing),
            )
            for path, timing in (("core", core), ("full", full))
        ]
    return rows


if __name__ == "__main__":
    print(render(run(lambda line: print(line, file=sys.stderr), quick="--quick" in sys.argv)))
