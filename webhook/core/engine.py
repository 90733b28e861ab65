"""The one entry point of the decision core: Request -> Decision.

The server and the CLI both call `evaluate`, so `costgate estimate` and the webhook give the
same answer by construction. Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .catalog import PriceTable
from .decide import check_labels, decide
from .extract.job import extract_cronjob, extract_job
from .extract.pod import extract_pod
from .extract.podspec import ObjectError
from .policy import Policy
from .types import Decision, Request, Workload

__all__ = ["Config", "evaluate", "handles"]


@dataclass(frozen=True, slots=True)
class Config:
    """Everything a decision depends on besides the request: loaded once, swapped whole."""

    table: PriceTable
    policy: Policy


Extractor = Callable[..., "Workload | None"]

_EXTRACTORS: dict[tuple[str, str], Extractor] = {
    ("", "Pod"): extract_pod,
    ("batch", "Job"): extract_job,
    ("batch", "CronJob"): extract_cronjob,
}

_ALLOW = Decision(allowed=True)


def handles(group: str, kind: str) -> bool:
    return (group, kind) in _EXTRACTORS


def _update(request: Request, workload: Workload, config: Config) -> Decision:
    """A GPU pod's spec cannot grow after creation, and its deadline can only shrink (API
    validation); what an update can still do is strip the attribution labels."""
    if request.old_obj is None:
        return _ALLOW
    policy = config.policy.for_namespace(workload.namespace)
    old_metadata = request.old_obj.get("metadata")
    old_labels = old_metadata.get("labels") if isinstance(old_metadata, dict) else None
    if not isinstance(old_labels, dict) or not all(
        old_labels.get(key) for key in policy.required_labels
    ):
        return _ALLOW  # created before costgate, or never attributed: nothing to protect
    reasons = tuple(check_labels(workload, policy))
    if not reasons:
        return _ALLOW
    enforce = policy.mode == "enforce"
    return Decision(allowed=not enforce, reasons=reasons, workload=workload, mode=policy.mode)


def evaluate(request: Request, *, config: Config) -> Decision:
    """The decision for one admission request (or one manifest, from the CLI)."""
    extractor = _EXTRACTORS.get((request.group, request.kind))
    if extractor is None or request.namespace in config.policy.exempt_namespaces:
        return _ALLOW
    if request.operation not in ("CREATE", "UPDATE"):
        return _ALLOW
    try:
        workload = extractor(request, table=config.table, policy=config.policy)
    except ObjectError as exc:
        return Decision(allowed=False, reasons=(exc.reason,), status_code=400)
    if workload is None:
        return _ALLOW
    if request.operation == "UPDATE":
        return _update(request, workload, config)
    if workload.workload_class == "controlled":
        return Decision(
            allowed=True, workload=workload, audit={"decision": "allow", "priced-with": "owner"}
        )
    return decide(
        workload,
        table=config.table,
        policy=config.policy.for_namespace(workload.namespace),
        hours_per_month=config.policy.hours_per_month,
    )
