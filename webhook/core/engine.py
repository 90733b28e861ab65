"""The one entry point of the decision core: Request -> Decision.

The server and the CLI both call `evaluate`, so `costgate estimate` and the webhook give the
same answer by construction. Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .catalog import PriceTable
from .decide import check_labels, decide
from .extract.job import extract_cronjob, extract_job
from .extract.pod import extract_pod
from .extract.podspec import ObjectError
from .extract.workflow import (
    TemplateLookup,
    extract_cronworkflow,
    extract_workflow,
    extract_workflow_template,
)
from .policy import Policy
from .types import ApprovalVerifier, Decision, Request, Workload

__all__ = ["Config", "evaluate", "handles"]


@dataclass(frozen=True, slots=True)
class Config:
    """Everything a decision depends on besides the request: loaded once, swapped whole.

    `parse_text` reads YAML embedded in objects (Argo podSpecPatch); `lookup` finds a
    WorkflowTemplate's spec by (namespace, name, cluster scope); `verify_approval` checks an
    approval token's signature. All plain functions the edges pass in, so the core imports
    no YAML or crypto library, holds no key and reads no cluster."""

    table: PriceTable
    policy: Policy
    parse_text: Callable[[str], Any] | None = None
    lookup: TemplateLookup | None = None
    verify_approval: ApprovalVerifier | None = None


Extractor = Callable[..., "Workload | None"]

_EXTRACTORS: dict[tuple[str, str], Extractor] = {
    ("", "Pod"): extract_pod,
    ("batch", "Job"): extract_job,
    ("batch", "CronJob"): extract_cronjob,
    ("argoproj.io", "Workflow"): extract_workflow,
    ("argoproj.io", "CronWorkflow"): extract_cronworkflow,
    ("argoproj.io", "WorkflowTemplate"): extract_workflow_template,
    ("argoproj.io", "ClusterWorkflowTemplate"): extract_workflow_template,
}

_ALLOW = Decision(allowed=True)


def handles(group: str, kind: str) -> bool:
    return (group, kind) in _EXTRACTORS


def _decide(workload: Workload, config: Config, now: float) -> Decision:
    return decide(
        workload,
        table=config.table,
        policy=config.policy.for_namespace(workload.namespace),
        hours_per_month=config.policy.hours_per_month,
        verify=config.verify_approval,
        now=now,
        skew=config.policy.approval_clock_skew_seconds,
    )


def _labels_kept(request: Request, workload: Workload, config: Config) -> Decision:
    """An update may not strip the attribution an object had."""
    policy = config.policy.for_namespace(workload.namespace)
    old_metadata = request.old_obj.get("metadata") if request.old_obj else None
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


def _update(
    request: Request, workload: Workload, extractor: Extractor, config: Config, now: float
) -> Decision:
    """Updates are priced again only when they can raise the cost.

    A Pod's GPUs cannot change after creation and its deadline can only shrink (API
    validation). A Workflow or Job can be edited: if the new estimate is above the old one
    (more GPUs, more fan-out, a longer deadline), it is decided like a new object; lowering
    it (e.g. the deadline to 0, which is how `argo terminate` stops a workflow) is allowed.
    """
    if request.kind == "Pod" or request.old_obj is None:
        return _labels_kept(request, workload, config)
    try:
        old = extractor(
            request._replace(obj=request.old_obj, old_obj=None),
            table=config.table,
            policy=config.policy,
            parse_text=config.parse_text,
            lookup=config.lookup,
        )
    except ObjectError:
        old = None
    new_decision = _decide(workload, config, now)
    if old is None or new_decision.estimate is None:
        return new_decision
    if new_decision.deadline is not None and new_decision.deadline != workload.existing_deadline:
        return new_decision  # a deadline raised past the declaration: lowered back (mutate)
    old_decision = _decide(old, config, now)
    if old_decision.estimate is None or new_decision.estimate.usd > old_decision.estimate.usd:
        return new_decision
    kept = _labels_kept(request, workload, config)
    runtime = new_decision.runtime_seconds
    if (
        kept.allowed
        and new_decision.mode == "enforce"
        and runtime is not None
        and workload.existing_deadline is not None
        and workload.existing_deadline > runtime
    ):
        # The estimate is capped at the declared runtime, so a deadline raised past it
        # costs nothing on paper; it is lowered back rather than left to run on.
        return kept._replace(workload=workload, deadline=runtime, mode="enforce")
    return kept


def evaluate(request: Request, *, config: Config, now: float = 0.0) -> Decision:
    """The decision for one admission request (or one manifest, from the CLI) at Unix time
    `now` (which only approvals' expiry reads)."""
    extractor = _EXTRACTORS.get((request.group, request.kind))
    if extractor is None or request.namespace in config.policy.exempt_namespaces:
        return _ALLOW
    if request.operation not in ("CREATE", "UPDATE"):
        return _ALLOW
    if request.operation == "UPDATE" and config.policy.is_controller(request.username):
        return _ALLOW  # status writes of the workflow and job controllers: answer at once
    try:
        workload = extractor(
            request,
            table=config.table,
            policy=config.policy,
            parse_text=config.parse_text,
            lookup=config.lookup,
        )
    except ObjectError as exc:
        return Decision(allowed=False, reasons=(exc.reason,), status_code=400)
    if workload is None:
        return _ALLOW
    if request.operation == "UPDATE":
        return _update(request, workload, extractor, config, now)
    if workload.workload_class == "controlled":
        return Decision(
            allowed=True, workload=workload, audit={"decision": "allow", "priced-with": "owner"}
        )
    return _decide(workload, config, now)
