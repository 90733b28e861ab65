"""The one entry point of the decision core: Request -> Decision.

The server and the CLI both call `evaluate`, so `costgate estimate` and the webhook give the
same answer by construction. Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from . import messages
from .config import Config, Extractor
from .decide import check_labels, decide
from .extract.job import extract_cronjob, extract_job
from .extract.pod import extract_pod
from .extract.podspec import ObjectError
from .extract.workflow import (
    extract_cronworkflow,
    extract_workflow,
    extract_workflow_template,
)
from .policy import Policy
from .pricing import price
from .quota import Usage, UsageView, demand, without
from .types import (
    ANNOTATION_ESTIMATED_COST,
    Decision,
    Reason,
    Request,
    Workload,
)

__all__ = ["Config", "evaluate", "finished", "handles", "holding"]



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


def _extract(extractor: Extractor, request: Request, config: Config) -> Workload | None:
    return extractor(request, config)


def _decide(
    workload: Workload,
    config: Config,
    now: float,
    state: UsageView | None = None,
    requester: str = "",
) -> Decision:
    return decide(
        workload,
        table=config.table,
        policy=config.policy.for_namespace(workload.namespace),
        hours_per_month=config.policy.hours_per_month,
        verify=config.verify_approval,
        now=now,
        skew=config.policy.approval_clock_skew_seconds,
        state=state,
        requester=requester,
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
    request: Request,
    workload: Workload,
    extractor: Extractor,
    config: Config,
    now: float,
    state: UsageView | None,
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
        old = _extract(extractor, request._replace(obj=request.old_obj, old_obj=None), config)
    except (ObjectError, RecursionError):
        old = None
    old_decision = _decide(old, config, now) if old is not None else None
    # quotas and budgets already hold the old version: measure the new one against the rest
    old_usage = old_decision.usage if old_decision is not None else None
    new_decision = _decide(
        workload,
        config,
        now,
        without(state, old_usage) if state is not None else None,
        request.username,
    )
    if old_usage is not None and new_decision.charge is not None:
        # the budget holds the old estimate already: charge what the update adds
        added = max(0.0, new_decision.charge.usd - old_usage.usd)
        new_decision = new_decision._replace(charge=new_decision.charge._replace(usd=added))
    if old_decision is None or new_decision.estimate is None:
        return new_decision
    if new_decision.deadline is not None and new_decision.deadline != workload.existing_deadline:
        return new_decision  # a deadline raised past the declaration: lowered back (mutate)
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


def _stamp(obj: Mapping[str, Any] | None) -> Any:
    metadata = obj.get("metadata") if obj else None
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    return annotations.get(ANNOTATION_ESTIMATED_COST) if isinstance(annotations, dict) else None


def _stamp_kept(request: Request, decision: Decision) -> Decision:
    """An update may not drop or edit the estimate stamp: it is how `holding` knows costgate
    priced the object, so that an ownerReference naming a trusted controller (anyone can
    write one, and add it later) does not hide the object from quotas. The mutating
    webhook writes it back."""
    old = _stamp(request.old_obj)
    if decision.stamp is not None or not decision.allowed or type(old) is not str:
        return decision
    if _stamp(request.obj) == old:
        return decision
    return decision._replace(stamp=old)


def evaluate(
    request: Request, *, config: Config, now: float = 0.0, state: UsageView | None = None
) -> Decision:
    """The decision for one admission request (or one manifest, from the CLI) at Unix time
    `now` (which approvals' expiry and budget months read), against the current use `state`
    (None: quotas and budgets are not checked)."""
    try:
        return _evaluate(request, config, now, state)
    except RecursionError:
        # Input deeper than Python recurses (orjson reads 1024 levels, the interpreter stops
        # near 1000) or steps templates nested a hundred deep (read, then priced, by
        # recursion): the sender's to fix, not an internal error.
        reason = Reason("invalid-request", messages.nested_too_deep())
        return Decision(allowed=False, reasons=(reason,), status_code=400)


def _evaluate(request: Request, config: Config, now: float, state: UsageView | None) -> Decision:
    extractor = _EXTRACTORS.get((request.group, request.kind))
    if extractor is None or request.namespace in config.policy.exempt_namespaces:
        return _ALLOW
    if request.operation not in ("CREATE", "UPDATE"):
        return _ALLOW
    if request.operation == "UPDATE" and config.policy.is_controller(request.username):
        return _ALLOW  # status writes of the workflow and job controllers: answer at once
    try:
        workload = _extract(extractor, request, config)
    except ObjectError as exc:
        return Decision(allowed=False, reasons=(exc.reason,), status_code=400)
    if workload is None:
        return _ALLOW
    if request.operation == "UPDATE":
        return _stamp_kept(request, _update(request, workload, extractor, config, now, state))
    if workload.workload_class == "controlled":
        return Decision(
            allowed=True, workload=workload, audit={"decision": "allow", "priced-with": "owner"}
        )
    return _decide(workload, config, now, state, request.username)


# Kinds that hold GPUs while they run. Cron* and templates only make them.
_RUNNING_KINDS = frozenset({("", "Pod"), ("batch", "Job"), ("argoproj.io", "Workflow")})
_DONE_PHASES = frozenset({"Succeeded", "Failed", "Error"})


def finished(kind: str, obj: Mapping[str, Any]) -> bool:
    """Whether a Pod, Job or Workflow has stopped holding its GPUs."""
    status = obj.get("status")
    if not isinstance(status, dict):
        return False
    if kind == "Job":
        conditions = status.get("conditions")
        return isinstance(conditions, list) and any(
            isinstance(c, dict)
            and c.get("type") in ("Complete", "Failed")
            and c.get("status") == "True"
            for c in conditions
        )
    return status.get("phase") in _DONE_PHASES


def _creator(metadata: Mapping[str, Any], policy: Policy) -> str:
    """A user of the trusted controller that owns this object, as the admission saw it."""
    owners = metadata.get("ownerReferences")
    if not isinstance(owners, list):
        return ""
    for owner in owners:
        if isinstance(owner, dict) and owner.get("controller"):
            group = str(owner.get("apiVersion", "")).rpartition("/")[0]
            for controller in policy.trusted_controllers:
                if controller.kind == owner.get("kind") and controller.api_group == group:
                    return next(iter(sorted(controller.users)), "")
    return ""


def holding(group: str, kind: str, obj: Mapping[str, Any], config: Config) -> Usage | None:
    """What a live object in the cluster holds, as quotas count it; None when nothing.

    Pods a trusted controller made for an object costgate priced count with that object,
    unless costgate stamped an estimate on them: it prices, and stamps, a pod whose owner
    reference is written by a user, so a spoofed owner does not hide a pod from quotas.
    The estimate uses the deadline in the spec (which costgate set), not annotations a user
    can edit later."""
    if (group, kind) not in _RUNNING_KINDS or finished(kind, obj):
        return None
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        return None
    annotations = metadata.get("annotations")
    stamped = isinstance(annotations, dict) and ANNOTATION_ESTIMATED_COST in annotations
    # Only a pod counts with its owner, which the watch counts: a Job a CronJob made, or a
    # Workflow a CronWorkflow made, holds GPUs that nothing else would count.
    creator = "" if stamped or kind != "Pod" else _creator(metadata, config.policy)
    request = Request(
        uid="",
        operation="CREATE",
        group=group,
        kind=kind,
        namespace=str(metadata.get("namespace", "")),
        name=str(metadata.get("name", "")),
        obj=obj,
        username=creator,
    )
    try:
        workload = _extract(_EXTRACTORS[(group, kind)], request, config)
    except (ObjectError, RecursionError):
        return None
    if workload is None or workload.workload_class == "controlled" or not workload.pods:
        return None
    serving = workload.workload_class == "serving"
    rules = config.policy.for_namespace(workload.namespace)
    seconds = workload.existing_deadline or rules.default_runtime_seconds
    hours = config.policy.hours_per_month if serving else seconds / 3600
    trust = rules.gpu_type_annotation == "trusted"
    pricing = price(workload, config.table, hours=hours, per_month=serving, trust_annotation=trust)
    usage = demand(workload, pricing)
    return None if math.isinf(usage.usd) or math.isinf(usage.gpus) else usage
