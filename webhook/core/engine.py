"""The one entry point of the decision core: Request -> Decision.

    extract (Workload) -> assess (rules, with the price) -> verdict (Decision)

The server and the CLI both call `evaluate`, so `costgate estimate` and the webhook give the
same answer by construction. Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import messages
from .config import Config, Extractor
from .decide import assess
from .extract.claims import CLAIM_KINDS
from .extract.kinds import EXTRACTORS, extract_table, handles
from .extract.podspec import ObjectError
from .extract.scale import scale_request
from .patch import UNCHANGED, Mutation, mutation
from .rules.context import Context
from .rules.labels import check_labels
from .template_edit import TEMPLATE_KINDS, template_edit
from .types import (
    ANNOTATION_APPROVAL,
    ANNOTATION_ESTIMATED_COST,
    NOBODY,
    Reason,
    Request,
    Requester,
    Workload,
)
from .usage import UsageView, ledger_entry, without
from .verdict import ALLOW, Decision, Findings, verdict

__all__ = ["Config", "context_for", "evaluate", "handles", "mutate"]

_NOTHING = ALLOW.findings  # nothing to price or refuse: the answer is ALLOW


def context_for(
    workload: Workload,
    config: Config,
    *,
    now: float = 0.0,
    state: UsageView | None = None,
    requester: Requester = NOBODY,
    entry: str = "",
    credit: float = 0.0,
) -> Context:
    """The rules' view of one workload: its namespace's policy and what it is compared with;
    `entry` and `credit` say what an admission charges (see Context)."""
    policy = config.policy
    return Context(  # positional, in field order (pinned by tests/core/test_verdict.py)
        workload,
        policy.for_namespace(workload.namespace),
        config.table,
        policy.hours_per_month,
        config.verify_approval,
        now,
        policy.approval_clock_skew_seconds,
        requester,
        state,
        entry,
        credit,
    )


def evaluate(
    request: Request, *, config: Config, now: float = 0.0, state: UsageView | None = None
) -> Decision:
    """The decision for one admission request (or one manifest, from the CLI) at Unix time
    `now` (which approvals' expiry and budget months read), against the current use `state`
    (None: quotas and budgets are not checked). The validating webhook's answer."""
    found = _review(request, config, now, state)
    if request.kind in TEMPLATE_KINDS:  # an edit reaches the Workflows running it
        found = _edited(request, found, config, now)
    return ALLOW if found is _NOTHING else verdict(found)  # most pods ask for no GPU


def mutate(
    request: Request, *, config: Config, now: float = 0.0, state: UsageView | None = None
) -> Mutation:
    """The mutating webhook's answer to the same request: the patch that sets the deadline,
    stamps the estimate and copies attribution, or the refusal of an unreadable object."""
    if request.sub_resource:  # a Scale: the object it resizes is patched by nobody here
        return UNCHANGED
    found = _review(request, config, now, state)
    return UNCHANGED if found is _NOTHING else mutation(found, request.obj)


def _review(request: Request, config: Config, now: float, state: UsageView | None) -> Findings:
    try:
        return _findings(request, config, now, state)
    except RecursionError:
        # Input deeper than Python recurses (orjson reads 1024 levels, the interpreter stops
        # near 1000) or steps templates nested a hundred deep (read, then priced, by
        # recursion): the sender's to fix, not an internal error.
        reason = Reason("invalid-request", messages.nested_too_deep())
        return Findings(refusals=(reason,), status_code=400)


def _edited(request: Request, found: Findings, config: Config, now: float) -> Findings:
    """A (Cluster)WorkflowTemplate's findings, with the refusal of an edit that raises the
    live Workflows running it past what they may cost (only /validate refuses it)."""
    if (
        request.group != "argoproj.io"
        or request.operation not in ("CREATE", "UPDATE")
        or request.namespace in config.policy.exempt_namespaces
        or found.status_code == 400  # the template itself cannot be read: that is the answer
    ):
        return found
    edit = template_edit(request, config, now)
    if edit is None:
        return found
    return found._replace(
        refusals=found.refusals + edit.refusals, warnings=found.warnings + edit.warnings
    )


def _findings(request: Request, config: Config, now: float, state: UsageView | None) -> Findings:
    if request.sub_resource == "scale":  # kubectl scale, the HPA: the resized object's update
        try:
            scaled = scale_request(request, config)
        except ObjectError as exc:
            return Findings(refusals=(exc.reason,), status_code=400)
        if scaled is None:
            return _NOTHING
        if isinstance(scaled, str):  # the object is not seen here: allowed, and said so
            return Findings(warnings=(scaled,))
        request = scaled
    extractor = EXTRACTORS.get((request.group, request.kind))
    if extractor is None and (request.group, request.kind) in config.policy.kinds:
        extractor = extract_table  # Deployments, operators' kinds: the kinds table
    if extractor is None or request.namespace in config.policy.exempt_namespaces:
        return _NOTHING
    if request.operation not in ("CREATE", "UPDATE"):
        return _NOTHING
    if request.operation == "UPDATE" and config.policy.is_controller(request.username):
        return _NOTHING  # status writes of the workflow and job controllers: answer at once
    try:
        workload = extractor(request, config)
    except ObjectError as exc:
        return Findings(refusals=(exc.reason,), status_code=400)
    if workload is None:
        return _NOTHING
    if workload.kind in CLAIM_KINDS:  # devices, priced in the pods that use them
        mode = config.policy.for_namespace(workload.namespace).mode
        return Findings(workload, mode, workload.problems, warnings=workload.notes, assessed=True)
    if request.operation == "UPDATE":
        kept = _stamp_to_keep(request)
        return _update(request, workload, extractor, config, now, state)._replace(kept_stamp=kept)
    if workload.workload_class == "controlled":
        return Findings(workload=workload, audit={"priced-with": "owner"})
    # the entry an approval's allowance is charged under: only an approval reads it
    entry = ledger_entry(request, now) if ANNOTATION_APPROVAL in workload.annotations else ""
    return assess(
        context_for(
            workload,
            config,
            now=now,
            state=state,
            requester=_requester(request),
            entry=entry,
        )
    )


def _requester(request: Request) -> Requester:
    return Requester(request.username, request.groups, request.extra)


def _labels_kept(request: Request, workload: Workload, config: Config) -> Findings:
    """An update may not strip the attribution an object had."""
    policy = config.policy.for_namespace(workload.namespace)
    old_metadata = request.old_obj.get("metadata") if request.old_obj else None
    old_labels = old_metadata.get("labels") if isinstance(old_metadata, dict) else None
    if not isinstance(old_labels, dict) or not all(
        old_labels.get(key) for key in policy.required_labels
    ):
        return _NOTHING  # created before costgate, or never attributed: nothing to protect
    reasons = check_labels(workload, policy)
    if not reasons:
        return _NOTHING
    return Findings(workload=workload, mode=policy.mode, reasons=reasons)


def _update(
    request: Request,
    workload: Workload,
    extractor: Extractor,
    config: Config,
    now: float,
    state: UsageView | None,
) -> Findings:
    """Updates are priced again only when they can raise the cost.

    A Pod's GPUs cannot change after creation and its deadline can only shrink (API
    validation). A Workflow or Job can be edited: if the new estimate is above the old one
    (more GPUs, more fan-out, a longer deadline), it is decided like a new object; lowering
    it (e.g. the deadline to 0, which is how `argo terminate` stops a workflow) is allowed.
    A suspended Job resumed is decided like a new one, whatever its estimate.
    """
    if request.kind == "Pod" or request.old_obj is None:
        return _labels_kept(request, workload, config)
    try:
        old = extractor(request._replace(obj=request.old_obj, old_obj=None), config)
    except (ObjectError, RecursionError):
        old = None
    # only numbers are read of these two verdicts: no words
    before = None
    if old is not None:
        before = verdict(assess(context_for(old, config, now=now)), words=False)
    # quotas and budgets already hold the old version: measure the new one against the rest
    held = before.usage if before is not None else None
    rest = without(state, held) if state is not None else None
    resumed = old is not None and old.suspended and not workload.suspended
    # an approval is charged what the update adds to the old estimate; a resume, all of it
    credit = before.estimate.usd if before and before.estimate and not resumed else 0.0
    context = context_for(
        workload,
        config,
        now=now,
        state=rest,
        requester=_requester(request),
        entry=ledger_entry(request, now),
        credit=credit,
    )
    found = assess(context)
    if resumed:
        # A resume is a new run: Kubernetes starts the deadline again, so the Job can spend
        # its estimate again. Decided like a create; a suspended Job held nothing (holding).
        return found
    if held is not None and found.charge is not None:
        # the budget holds the old estimate already: charge what the update adds
        added = max(0.0, found.charge.usd - held.usd)
        found = found._replace(charge=found.charge._replace(usd=added))
    after = verdict(found, words=False)
    if before is None or after.estimate is None:
        return found
    if after.deadline is not None and after.deadline != workload.existing_deadline:
        return found  # a deadline raised past the declaration: lowered back (mutate)
    if before.estimate is None or after.estimate.usd > before.estimate.usd:
        return found
    kept = _labels_kept(request, workload, config)
    runtime = after.runtime_seconds
    if (
        not kept.reasons
        and not workload.informational  # a template sets no deadline: its Workflows do
        and after.mode == "enforce"
        and runtime is not None
        and workload.existing_deadline is not None
        and workload.existing_deadline > runtime
    ):
        # The estimate is capped at the declared runtime, so a deadline raised past it
        # costs nothing on paper; it is lowered back rather than left to run on.
        return Findings(workload=workload, deadline=runtime)
    return kept


def _stamp(obj: Mapping[str, Any] | None) -> Any:
    metadata = obj.get("metadata") if obj else None
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    return annotations.get(ANNOTATION_ESTIMATED_COST) if isinstance(annotations, dict) else None


def _stamp_to_keep(request: Request) -> str | None:
    """An update may not drop or edit the estimate stamp: it is how `holding` knows costgate
    priced the object, so that an ownerReference naming a trusted controller (anyone can
    write one, and add it later) does not hide the object from quotas. The mutating webhook
    writes it back (unless the update is priced again and stamped anew)."""
    old = _stamp(request.old_obj)
    if type(old) is not str or _stamp(request.obj) == old:
        return None
    return old
