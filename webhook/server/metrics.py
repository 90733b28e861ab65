"""Prometheus metrics and the decision log around the admission service (it wraps, the
service does not know).

Label values come from a bounded set (endpoints, kinds costgate handles, reason codes) or
from what the cluster bounds (namespaces, owner label values); never from free text.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..core.types import ANNOTATION_APPROVAL
from ..service import Answer

__all__ = ["Metrics"]

# the *_created series double the output and nobody reads them (untyped in prometheus_client)
disable_created_metrics()  # type: ignore[no-untyped-call]

_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)
decisions_log = logging.getLogger("costgate.decision")


class Metrics:
    """One registry per application, so tests and several apps in one process do not clash."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter(
            "costgate_admission_requests",
            "Admission reviews answered, by endpoint, object kind and outcome.",
            ["endpoint", "kind", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "costgate_admission_duration_seconds",
            "Time to answer one admission review, body parsing included.",
            ["endpoint", "kind"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self.decisions = Counter(
            "costgate_decisions",
            "Policy decisions on /validate by reason code (none when allowed) and namespace.",
            ["decision", "reason", "namespace"],
            registry=registry,
        )
        self.usd = Counter(
            "costgate_estimated_usd",
            "Estimated USD of the GPU workloads decided on /validate (dry runs excluded).",
            ["decision", "namespace", "owner"],
            registry=registry,
        )
        self.approvals = Counter(
            "costgate_approvals_used",
            "Workloads admitted above the threshold with an approval, by approver key id.",
            ["key_id", "namespace"],
            registry=registry,
        )
        self.reloads = Counter(
            "costgate_config_reloads",
            "Reloads of the pricing, policy, approvers or certificate files, by result.",
            ["file", "result"],
            registry=registry,
        )
        self.config_ok = Gauge(
            "costgate_config_last_reload_ok",
            "1 when the last reload of the file succeeded, 0 when the old one is still in use.",
            ["file"],
            registry=registry,
        )
        self.cache = Gauge(
            "costgate_cache_synced",
            "Cluster state per watched resource: 1 synced (or absent CRD), 0 syncing or failing.",
            ["resource"],
            registry=registry,
        )
        self.cache_workloads = Gauge(
            "costgate_cache_live_workloads",
            "Live costed workloads in the quota cache.",
            registry=registry,
        )
        self._children: dict[tuple[object, ...], Any] = {}
        self._sync_source: Callable[[], dict[str, str]] | None = None
        self._count_source: Callable[[], int] | None = None

    def watch_state(
        self, sync: Callable[[], dict[str, str]], count: Callable[[], int] | None = None
    ) -> None:
        """Read the cache's state at each scrape."""
        self._sync_source = sync
        self._count_source = count

    def reloaded(self, file: str, ok: bool) -> None:
        self.reloads.labels(file, "ok" if ok else "error").inc()
        self.config_ok.labels(file).set(1 if ok else 0)

    def _child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, remembered: labels() costs a lock and a dict build."""
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe(self, endpoint: str, answer: Answer, seconds: float) -> None:
        self._child(self.requests, endpoint, answer.kind, answer.outcome).inc()
        self._child(self.duration, endpoint, answer.kind).observe(seconds)
        decision, request = answer.decision, answer.request
        if endpoint != "validate" or decision is None or request is None:
            return
        workload = decision.workload
        if workload is None and decision.allowed:
            return  # not a GPU workload: nothing decided
        namespace = request.namespace
        verdict = decision.decided
        codes: list[str] = sorted({r.code for r in decision.reasons}) or ["none"]
        for code in codes:
            self._child(self.decisions, verdict, code, namespace).inc()
        owner = str(workload.labels.get("owner", "")) if workload is not None else ""
        if decision.estimate is not None and not request.dry_run:  # never infinite: denied
            self._child(self.usd, verdict, namespace, owner).inc(decision.estimate.usd)
        key_id = decision.audit.get("approval-key-id")
        if key_id and decision.allowed and not request.dry_run:
            self._child(self.approvals, key_id, namespace).inc()
        if decisions_log.isEnabledFor(logging.INFO):
            decisions_log.info(
                "decision",
                extra={
                    "uid": request.uid,
                    "operation": request.operation,
                    "kind": request.kind,
                    "namespace": namespace,
                    "workload": workload.display_name if workload is not None else request.name,
                    "user": request.username,
                    "decision": verdict,
                    "reasons": [r.code for r in decision.reasons],
                    "messages": [r.message for r in decision.reasons],
                    "estimated_usd": decision.estimate.usd if decision.estimate else None,
                    "owner": owner,
                    "experiment": str(workload.labels.get("experiment", "")) if workload else "",
                    "approval_key_id": key_id or None,
                    "approval_present": bool(
                        workload and workload.annotations.get(ANNOTATION_APPROVAL)
                    ),
                    "dry_run": request.dry_run,
                    "duration_ms": round(seconds * 1000, 3),
                },
            )

    def render(self) -> tuple[bytes, str]:
        if self._sync_source is not None:
            for resource, state in self._sync_source().items():
                self.cache.labels(resource).set(1 if state in ("synced", "absent") else 0)
        if self._count_source is not None:
            self.cache_workloads.set(self._count_source())
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
