"""In-process benchmark of pricing a large Argo Workflow: 50 templates (a DAG entry, 48 GPU
container templates on different GPU types, one steps template) and a 100-way withItems
fan-out. Owns the "workflow" rows of the table. Target: under 1 ms per evaluation.

    python bench/workflow.py    # this part alone
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
from report import Row, percentile, render

from webhook.admission import parse_review
from webhook.core.engine import evaluate
from webhook.service import AdmissionService
from webhook.tables import load_config

__all__ = ["big_workflow", "run"]

TARGET_US = 1000.0
GPU_LABELS = [
    "NVIDIA-H100-80GB-HBM3",
    "NVIDIA-A100-SXM4-80GB",
    "NVIDIA-L4",
    "Tesla-T4",
    "NVIDIA-L40S",
    "NVIDIA-A10G",
]


def big_workflow() -> dict[str, Any]:
    """50 templates: `main` (DAG over 48 tasks, one of them fanned out 100 ways through a
    steps template) and 48 GPU containers with their own node selectors and deadlines."""
    gpu_templates = [
        {
            "name": f"gpu-{i}",
            "activeDeadlineSeconds": 3600 * (1 + i % 4),
            "retryStrategy": {"limit": i % 3},
            "nodeSelector": {"nvidia.com/gpu.product": GPU_LABELS[i % len(GPU_LABELS)]},
            "container": {
                "image": "trainer",
                "resources": {"limits": {"nvidia.com/gpu": str(1 + i % 8), "cpu": "4"}},
            },
        }
        for i in range(48)
    ]
    tasks = [
        {"name": f"t{i}", "template": f"gpu-{i}", "dependencies": [f"t{i - 1}"] if i else []}
        for i in range(1, 48)
    ]
    tasks.append({"name": "sweep", "template": "sweep"})
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            "name": "big",
            "namespace": "bench",
            "labels": {"owner": "bench", "experiment": "big"},
            "annotations": {"costgate.io/max-runtime": "2d"},
        },
        "spec": {
            "entrypoint": "main",
            "parallelism": 64,
            "templates": [
                {"name": "main", "dag": {"tasks": tasks}},
                {
                    "name": "sweep",
                    "steps": [
                        [{"name": "trial", "template": "gpu-0", "withItems": list(range(100))}]
                    ],
                },
                *gpu_templates,
            ],
        },
    }


def _review(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "bench",
                "kind": {"group": "argoproj.io", "version": "v1alpha1", "kind": "Workflow"},
                "resource": {
                    "group": "argoproj.io",
                    "version": "v1alpha1",
                    "resource": "workflows",
                },
                "namespace": "bench",
                "name": "big",
                "operation": "CREATE",
                "userInfo": {"username": "bench"},
                "object": obj,
                "dryRun": False,
            },
        }
    )


def _time(
    call: Callable[[], object], calls: int = 300, batches: int = 10, warmup: int = 50
) -> tuple[float, float]:
    for _ in range(warmup):
        call()
    means, singles = [], []
    for _ in range(batches):
        start = time.perf_counter_ns()
        for _ in range(calls):
            t0 = time.perf_counter_ns()
            call()
            singles.append(time.perf_counter_ns() - t0)
        means.append((time.perf_counter_ns() - start) / calls)
    singles.sort()
    return statistics.median(means) / 1000, percentile(singles, 0.99) / 1000


def run(log: Callable[[str], None] = print, quick: bool = False) -> list[Row]:
    """The workflow rows. `quick`: a few calls (a smoke, not a measurement)."""
    counts = {"calls": 10, "batches": 2, "warmup": 5} if quick else {}
    config = load_config()
    body = _review(big_workflow())
    request = parse_review(body)
    decision = evaluate(request, config=config)
    if decision.estimate is None or len(decision.workload.pods) != 48:
        raise RuntimeError("the big workflow was not priced as 48 GPU templates")
    service = AdmissionService(config)
    gc.collect()
    gc.freeze()  # as the server does after start-up
    rows = []
    for label, call in (
        ("evaluate(request)", lambda: evaluate(request, config=config)),
        ("AdmissionService.handle(body), parse included", lambda: service.handle(body, "mutate")),
    ):
        log(f"workflow: {label} ...")
        median, p99 = _time(call, **counts)
        rows.append(
            Row(
                section="workflow",
                measurement=f"50 templates, 100-way fan-out: {label}",
                result=f"median {median:,.0f} µs, p99 {p99:,.0f} µs ({len(body):,} bytes)",
                target=f"< {TARGET_US:,.0f} µs",
                met=median < TARGET_US,
                data={
                    "median_us": round(median, 1),
                    "p99_us": round(p99, 1),
                    "bytes": len(body),
                    "estimate_usd": decision.estimate.usd,
                    "basis": decision.estimate.basis,
                },
            )
        )
    return rows


if __name__ == "__main__":
    print(render(run(lambda line: print(line, file=sys.stderr), quick="--quick" in sys.argv)))
