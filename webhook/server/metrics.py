"""Prometheus metrics around the admission service (it wraps, the service does not know)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..service import Answer

__all__ = ["Metrics"]

disable_created_metrics()  # the *_created series double the output and nobody reads them

_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)


class Metrics:
    """One registry per application, so tests and several apps in one process do not clash."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "costgate_admission_requests",
            "Admission reviews answered, by endpoint, object kind and outcome.",
            ["endpoint", "kind", "outcome"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "costgate_admission_duration_seconds",
            "Time to answer one admission review, body parsing included.",
            ["endpoint"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self._children: dict[tuple[str, str, str], Counter] = {}
        self._timers = {e: self.duration.labels(e) for e in ("mutate", "validate")}

    def observe(self, endpoint: str, answer: Answer, seconds: float) -> None:
        key = (endpoint, answer.kind, answer.outcome)
        counter = self._children.get(key)
        if counter is None:  # labels() costs a lock and a dict build: do it once per key
            counter = self._children[key] = self.requests.labels(*key)
        counter.inc()
        self._timers[endpoint].observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
