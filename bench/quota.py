"""Quotas with a full cache: admission latency with 50,000 live GPU pods in the cluster
state against an empty one, the cache's memory, and the first sync through the real
`kubernetes` client against the fake API server of tests/support/fakeapi.py. Owns the "quota" rows.

    python bench/quota.py    # this part alone

The latency runs alternate blocks of the two states in one process, so drift on the shared
machine hits both alike; the figure is the ratio of their p99s (target: within noise, i.e.
0.9-1.1). The memory is what tracemalloc attributes to building the cache from 50,000 pods
(objects parsed one by one from JSON as the watch does, then dropped).
"""

from __future__ import annotations

import gc
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from report import Row, percentile, render

from webhook.core.engine import Config
from webhook.service import AdmissionService
from webhook.state import State, memory_state
from webhook.state.cluster import ClusterState
from webhook.tables import load_pricing, parse_policy

__all__ = ["run"]

PODS = 50_000
QUICK_PODS = 2_000  # `run.py --quick`
NAMESPACES = 200
OWNERS = 1_000
TYPES = ["NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB", "NVIDIA-L4", "Tesla-T4"]
MEMORY_TARGET_MB = 200.0


def cluster_pod(i: int) -> dict[str, Any]:
    """A running GPU pod as the API server returns it in a list (status included)."""
    namespace = f"team-{i % NAMESPACES}"
    return {
        "metadata": {
            "name": f"train-{i}",
            "namespace": namespace,
            "uid": f"00000000-0000-4000-8000-{i:012d}",
            "resourceVersion": str(1000 + i),
            "creationTimestamp": "2026-11-22T10:00:00Z",
            "labels": {"owner": f"user-{i % OWNERS}", "experiment": f"exp-{i % 5000}"},
            "annotations": {
                "costgate.io/max-runtime": "12h",
                "costgate.io/estimated-cost": "82.56",
            },
        },
        "spec": {
            "activeDeadlineSeconds": 43200,
            "nodeSelector": {"nvidia.com/gpu.product": TYPES[i % len(TYPES)]},
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "trainer",
                    "image": "registry.example.com/ml/trainer:2026.11",
                    "command": ["python", "train.py", "--config", "/etc/train.yaml"],
                    "resources": {
                        "limits": {"nvidia.com/gpu": str(1 + i % 8), "cpu": "8", "memory": "64Gi"},
                        "requests": {"cpu": "8", "memory": "64Gi"},
                    },
                }
            ],
        },
        "status": {"phase": "Running", "podIP": f"10.0.{i // 256 % 256}.{i % 256}"},
    }


def _policy() -> Any:
    return parse_policy(
        {
            "version": 1,
            "quota": {"max_gpus": 1_000_000, "max_committed_usd": 1e12},
            "owner_quota": {"max_gpus": 100_000},
            "budget": {"usd": 1e12},
        },
        "bench-policy",
    )


def _review(i: int) -> bytes:
    pod = cluster_pod(i)
    del pod["status"]
    pod["metadata"]["uid"] = f"review-object-{i}"
    return orjson.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": f"r-{i}",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": pod["metadata"]["namespace"],
                "name": pod["metadata"]["name"],
                "operation": "CREATE",
                "userInfo": {"username": "user"},
                "object": pod,
                "dryRun": True,  # decided against the state, never recorded: the state stays put
            },
        }
    )


def fill(state_or_cluster: Any, config: Config, pods: int = PODS) -> None:
    """Feed `pods` list items, parsed from JSON one by one, through the pods watcher's relist."""
    cluster: ClusterState = state_or_cluster
    watcher = next(w for w in cluster.watchers if w.resource.name == "pods")
    watcher._on_relist(orjson.loads(orjson.dumps(cluster_pod(i))) for i in range(pods))


# Where a stray call would go: `.invalid` never resolves (RFC 2606), so none can reach a cluster.
_NOWHERE = "http://the-benchmark-must-not-call-the-api.invalid"


def _no_client() -> Any:
    """A real ApiClient for ClusterState's constructor (which may read its configuration, as
    the ledger does to make its own client without retries) that refuses every API call; the
    clients made from its configuration point nowhere."""
    from kubernetes import client

    class NoClient(client.ApiClient):
        def call_api(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError(
                f"the benchmark must not call the API ({' '.join(map(str, args[:2]))})"
            )

    return NoClient(client.Configuration(host=_NOWHERE))


def _cluster(config: Config) -> ClusterState:
    return ClusterState(_no_client(), config=lambda: config, ledger_namespace="costgate-system")


def _latencies(
    services: dict[str, AdmissionService], bodies: list[bytes], rounds: int = 20
) -> dict[str, list[float]]:
    """Per service, one timing per call, in alternating blocks."""
    found: dict[str, list[float]] = {name: [] for name in services}
    for _ in range(rounds):
        for name, service in services.items():
            for body in bodies:
                t0 = time.perf_counter_ns()
                service.handle(body, "validate")
                found[name].append((time.perf_counter_ns() - t0) / 1000)
    return found


def run(log: Callable[[str], None] = print, quick: bool = False) -> list[Row]:
    """The quota rows. `quick`: 2,000 pods and 2 rounds (a smoke, not a measurement)."""
    pods, rounds = (QUICK_PODS, 2) if quick else (PODS, 60)
    config = Config(table=load_pricing(), policy=_policy())
    rows: list[Row] = []

    log(f"quota: memory of a cache of {pods:,} live GPU pods ...")
    full_cluster = _cluster(config)  # imports the client's modules: not the cache's memory
    fill(_cluster(config), config, 100)  # and the first use of every code path
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    started = time.perf_counter()
    fill(full_cluster, config, pods)
    build_seconds = time.perf_counter() - started
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    cache_mb, peak_mb = (current - base) / 1e6, (peak - base) / 1e6
    if len(full_cluster.tally) != pods:
        raise RuntimeError(f"the cache holds {len(full_cluster.tally)} pods, not {pods}")
    rows.append(
        Row(
            section="quota",
            measurement=f"cache memory, {pods:,} live GPU pods",
            result=(
                f"{cache_mb:,.1f} MB held, {peak_mb:,.1f} MB at the peak of the list "
                f"(built in {build_seconds:.1f} s under tracemalloc)"
            ),
            target=f"< {MEMORY_TARGET_MB:.0f} MB",
            met=cache_mb < MEMORY_TARGET_MB,
            data={"megabytes": round(cache_mb, 1), "peak_megabytes": round(peak_mb, 1)},
        )
    )

    full = State(full_cluster.tally, full_cluster.ledger, mode="cluster")
    empty = memory_state()
    services = {
        "empty": AdmissionService(config, state=empty),
        "full": AdmissionService(config, state=full),
    }
    bodies = [_review(i) for i in range(0, 2000, 7)]
    for body in bodies[:50]:  # warm both
        for service in services.values():
            service.handle(body, "validate")
    answer = orjson.loads(services["full"].handle(bodies[0], "validate").body)["response"]
    if not answer["allowed"]:
        raise RuntimeError(f"the benchmark pod was denied: {answer}")
    gc.collect()
    gc.freeze()
    log(f"quota: admission latency, empty cache vs {pods:,} pods (alternating blocks) ...")
    found = _latencies(services, bodies, rounds=rounds)
    summary = {}
    for name, values in found.items():
        values.sort()
        summary[name] = (percentile(values, 0.5), percentile(values, 0.99))
    ratio = summary["full"][1] / summary["empty"][1]
    rows.append(
        Row(
            section="quota",
            measurement=(
                f"validate GPU pod with quotas+budget: {pods // 1000}k-pod cache vs empty"
            ),
            result=(
                f"p50 {summary['full'][0]:.1f} vs {summary['empty'][0]:.1f} µs, "
                f"p99 {summary['full'][1]:.1f} vs {summary['empty'][1]:.1f} µs "
                f"(p99 ratio {ratio:.2f}, {len(found['empty']):,} calls each)"
            ),
            target="p99 ratio within noise (0.9-1.1)",
            met=0.9 <= ratio <= 1.1,
            data={
                "p50_full_us": round(summary["full"][0], 1),
                "p50_empty_us": round(summary["empty"][0], 1),
                "p99_full_us": round(summary["full"][1], 1),
                "p99_empty_us": round(summary["empty"][1], 1),
                "p99_ratio": round(ratio, 3),
            },
        )
    )
    rows.append(_first_sync(config, log, pods))
    return rows


def _first_sync(config: Config, log: Callable[[str], None], pods: int = PODS) -> Row:
    """The first list of `pods` (50,000) pods through the real client, pages of 500, from the fake
    API server (same process, so its JSON encoding is in the figure too)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests/
    from tests.support.fakeapi import FakeApiServer

    log(f"quota: first sync of {pods:,} pods through the kubernetes client ...")
    with FakeApiServer() as api:
        api.bulk_load("pods", [cluster_pod(i) for i in range(pods)])
        cluster = ClusterState(api.client(), config=lambda: config, ledger_namespace="x")
        started = time.perf_counter()
        cluster.start()
        synced = cluster.wait_synced(300)
        seconds = time.perf_counter() - started
        count = len(cluster.tally)
        cluster.stop()
    if not synced or count != pods:
        raise RuntimeError(f"first sync did not complete: {count} pods")
    return Row(
        section="quota",
        measurement=f"first sync, {pods:,} pods via the kubernetes client (pages of 500)",
        result=f"{seconds:.1f} s ({pods / seconds:,.0f} pods/s)",
        data={"seconds": round(seconds, 2)},
    )


if __name__ == "__main__":
    print(render(run(lambda line: print(line, file=sys.stderr), quick="--quick" in sys.argv)))
