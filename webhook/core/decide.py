"""Workload -> Decision: attribution, runtime and deadline, price, cost gate, rollout mode.

Every rule that fails adds a Reason; the user sees all of them at once rather than fixing one
problem per `kubectl apply`. Wording lives in `messages`.
"""

from __future__ import annotations

import math
import re

from . import messages
from .approval import check_approval
from .catalog import PriceTable
from .policy import NamespacePolicy
from .pricing import Pricing, price
from .quantities import parse_duration
from .quota import UsageView, check_allowed_types, check_limits, demand
from .types import (
    ANNOTATION_APPROVAL,
    ANNOTATION_ESTIMATED_COST,
    ANNOTATION_MAX_RUNTIME,
    COSTGATE_PREFIX,
    Approval,
    ApprovalVerifier,
    Decision,
    Estimate,
    Reason,
    Workload,
)

__all__ = ["check_labels", "decide"]

_LABEL_VALUE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
# Reasons that mean the object cannot be priced as written: no point pricing it.
_UNPRICEABLE = frozenset({"invalid-gpu-request", "invalid-runtime", "runtime-too-long"})


def check_labels(workload: Workload, policy: NamespacePolicy) -> list[Reason]:
    missing: list[str] = []
    reasons: list[Reason] = []
    for key in policy.required_labels:
        value = workload.labels.get(key)
        if value is None or value == "":
            missing.append(key)
        elif type(value) is not str or not _LABEL_VALUE.fullmatch(value):
            reasons.append(Reason("missing-labels", messages.invalid_label_value(key, value)))
    if missing:
        text = messages.missing_labels(
            workload.kind, workload.display_name, missing, policy.required_labels
        )
        reasons.insert(0, Reason("missing-labels", text))
    return reasons


def _runtime(
    workload: Workload, policy: NamespacePolicy, namespace: str
) -> tuple[int | None, int | None, list[Reason], list[str]]:
    """(runtime the estimate uses, deadline to set or None, reasons, warnings) for batch work."""
    raw = workload.annotations.get(ANNOTATION_MAX_RUNTIME)
    if raw is None:
        declared = policy.default_runtime_seconds
    else:
        parsed = parse_duration(raw) if type(raw) is str else None
        if parsed is None:
            return None, None, [Reason("invalid-runtime", messages.invalid_runtime(raw))], []
        if parsed > policy.max_runtime_seconds:
            text = messages.runtime_too_long(parsed, policy.max_runtime_seconds, namespace)
            return None, None, [Reason("runtime-too-long", text)], []
        declared = parsed

    existing = workload.existing_deadline
    if existing is not None and existing <= declared:
        return existing, None, [], []  # a smaller deadline is kept as it is
    warnings: list[str] = []
    if existing is not None:
        warnings.append(messages.deadline_lowered(existing, declared))
    elif raw is None:
        warnings.append(
            messages.default_runtime(declared)
            if policy.mode == "enforce"
            else messages.default_runtime_not_injected(declared)
        )
    return declared, declared, [], warnings


def _type_notes(
    pricing: Pricing, table: PriceTable, policy: NamespacePolicy, namespace: str
) -> tuple[list[Reason], list[str]]:
    reasons: list[Reason] = []
    warnings: list[str] = []
    for resolution in pricing.resolutions:
        if resolution.unknown_annotation:
            text = messages.unknown_gpu_annotation(resolution.unknown_annotation, table.gpus)
            reasons.append(Reason("unknown-gpu-type", text))
        if resolution.annotation_outpriced:
            warnings.append(messages.annotation_outpriced(*resolution.annotation_outpriced))
    if pricing.unresolved and not reasons:
        # gathered only here: most workloads pin their type, and this runs per request
        unknown_labels = [label for r in pricing.resolutions for label in r.unknown_labels]
        # policy gpu_type_annotation: checked, and only the annotation names the type
        unpinned = ""
        if policy.gpu_type_annotation == "checked":
            unpinned = next(
                (r.annotation_only for r in pricing.resolutions if r.annotation_only), ""
            )
        if policy.unknown_gpu == "deny":
            text = (
                messages.annotation_alone_denied(unpinned, namespace)
                if unpinned
                else messages.unknown_gpu_denied(namespace, unknown_labels)
            )
            reasons.append(Reason("unknown-gpu-type", text))
        else:
            line = next(line for line in pricing.estimate.lines if not line.resolved)
            gpu = table.gpus[line.gpu_type]
            warnings.append(
                messages.annotation_alone_priced(unpinned, gpu.id, gpu.usd_per_hour)
                if unpinned
                else messages.unknown_gpu_priced(gpu.id, gpu.usd_per_hour, unknown_labels)
            )
    return reasons, warnings


def _gate(
    workload: Workload,
    estimate: Estimate,
    limit: float,
    cost_text: str,
    *,
    policy: NamespacePolicy,
    verify: ApprovalVerifier | None,
    now: float,
    skew: int,
    requester: str,
) -> tuple[list[Reason], Approval | None]:
    """The cost gate: (reasons, the approval that lifted it)."""
    if estimate.usd <= limit:
        return [], None
    namespace = workload.namespace
    if policy.over_threshold == "deny":
        text = messages.over_threshold(estimate, limit, namespace, cost_text, approvals=False)
        return [Reason("over-threshold", text)], None
    token = workload.annotations.get(ANNOTATION_APPROVAL)
    if not token:
        text = messages.over_threshold(estimate, limit, namespace, cost_text)
        return [Reason("over-threshold", text)], None
    if verify is None:
        return [Reason("invalid-approval", messages.approvals_disabled())], None
    verdict = (
        verify(token)
        if type(token) is str
        else Reason("invalid-approval", messages.approval_malformed("not a string"))
    )
    if isinstance(verdict, Reason):
        return [verdict], None
    problems = check_approval(
        verdict,
        workload=workload,
        estimate=estimate,
        policy=policy,
        now=now,
        skew=skew,
        requester=requester,
    )
    return problems, (None if problems else verdict)


def decide(
    workload: Workload,
    *,
    table: PriceTable,
    policy: NamespacePolicy,
    hours_per_month: float,
    verify: ApprovalVerifier | None = None,
    now: float = 0.0,
    skew: int = 60,
    state: UsageView | None = None,
    requester: str = "",
) -> Decision:
    """The decision for a GPU workload that is priced here (batch or serving). `state` is
    the current use, read only when the namespace has quotas or budgets."""
    namespace = workload.namespace
    reasons = list(workload.problems)
    warnings: list[str] = []
    for shape in workload.pods:
        gpus = shape.gpus[0].count if len(shape.gpus) == 1 else sum(g.count for g in shape.gpus)
        if gpus > policy.max_gpus_per_pod:
            reasons.append(
                Reason("invalid-gpu-request", messages.too_many_gpus(gpus, policy.max_gpus_per_pod))
            )
    if workload.pods:  # known to use GPUs (not only templates costgate cannot read)
        reasons += check_labels(workload, policy)
    for text in workload.unresolved:
        if policy.unresolved_templates == "deny":
            reasons.append(
                Reason("template-not-found", messages.unresolved_denied(text, namespace))
            )
        else:
            warnings.append(messages.warning(text))
    warnings += workload.notes

    serving = workload.workload_class == "serving"
    runtime: int | None = None
    deadline: int | None = None
    runtime_warnings: list[str] = []  # about the deadline: only true if the workload is admitted
    if serving:
        if ANNOTATION_MAX_RUNTIME in workload.annotations:
            runtime_warnings.append(messages.runtime_ignored_for_serving())
    else:
        runtime, deadline, more_reasons, runtime_warnings = _runtime(workload, policy, namespace)
        reasons += more_reasons

    pricing = None
    cost_text = ""
    approval: Approval | None = None
    usage = None
    charge = None
    if not reasons or not any(r.code in _UNPRICEABLE for r in reasons):
        hours = hours_per_month if serving else (runtime or 0) / 3600
        pricing = price(
            workload,
            table,
            hours=hours,
            per_month=serving,
            trust_annotation=policy.gpu_type_annotation == "trusted",
        )
        type_reasons, type_warnings = _type_notes(pricing, table, policy, namespace)
        reasons += type_reasons
        warnings += type_warnings
        limit = policy.serving_threshold_usd_per_month if serving else policy.threshold_usd
        if math.isinf(pricing.estimate.usd):
            text = messages.unbounded(workload.kind, workload.display_name)
            if workload.informational:  # a library template; the Workflow may bound it
                warnings.append(messages.warning(text))
            else:
                reasons.append(Reason("invalid-gpu-request", text))
            pricing = None
        elif workload.informational:  # a template: its Workflows are gated, it is not
            cost_text = messages.cost(pricing.estimate)
            warnings.append(messages.template_estimate(pricing.estimate, limit, cost_text))
        else:
            cost_text = messages.cost(pricing.estimate)
            # A price for a type we refused to guess proves nothing: no threshold reason.
            if not type_reasons:
                gate_reasons, approval = _gate(
                    workload,
                    pricing.estimate,
                    limit,
                    cost_text,
                    policy=policy,
                    verify=verify,
                    now=now,
                    skew=skew,
                    requester=requester,
                )
                reasons += gate_reasons
                if approval is not None:
                    warnings.append(messages.approved(approval))
            reasons += check_allowed_types(workload, pricing, policy.allowed_gpu_types, table)
            if policy.limits_anything:  # else nothing reads the demand
                usage = demand(workload, pricing)
            if usage is not None and state is not None:
                limit_reasons, limit_warnings, charge = check_limits(
                    usage,
                    workload=workload,
                    namespace_quota=policy.quota,
                    owner_quota=policy.quota_for_owner(usage.owner),
                    budget=policy.budget,
                    view=state,
                    now=now,
                    warn_ratio=policy.quota_warning_ratio,
                    enforce=policy.mode == "enforce",
                )
                reasons += limit_reasons
                warnings += limit_warnings

    if len(reasons) > 1:
        reasons = list(dict.fromkeys(reasons))  # a template called twice is one problem
    estimate = pricing.estimate if pricing else None
    if workload.informational:
        deadline = None
        runtime_warnings = []
    enforce = policy.mode == "enforce"
    allowed = not reasons or not enforce
    if reasons and not enforce:
        warnings = [messages.would_deny(r.code, r.message) for r in reasons] + warnings
    if allowed:
        warnings = runtime_warnings + warnings
        if estimate is not None and not workload.informational:
            warnings.insert(0, messages.estimate_warning(estimate, cost_text, workload.total_gpus))

    audit = {
        "decision": "allow" if not reasons else ("deny" if enforce else "warn"),
        "workload": f"{workload.kind}/{workload.display_name}",
    }
    if reasons:
        audit["reasons"] = ",".join(dict.fromkeys(r.code for r in reasons))
    if estimate is not None:
        audit["estimated-cost-usd"] = f"{estimate.usd:.2f}"
        audit["estimate"] = cost_text
    if approval is not None:
        audit["approval-key-id"] = approval.key_id
        audit["approval-max-usd"] = f"{approval.max_usd:.2f}"
        audit["approval-expires"] = str(approval.expires_at)
    pod_labels: dict[str, str] = {}
    pod_annotations: dict[str, str] = {}
    if workload.copy_to and allowed:
        pod_labels = {k: workload.labels[k] for k in policy.required_labels if k in workload.labels}
        pod_annotations = {
            k: v
            for k, v in workload.annotations.items()
            if k.startswith(COSTGATE_PREFIX) and k != ANNOTATION_ESTIMATED_COST
        }
    return Decision(
        allowed=allowed,
        pod_labels=pod_labels,
        pod_annotations=pod_annotations,
        reasons=tuple(reasons),
        warnings=tuple(warnings),
        workload=workload,
        estimate=estimate,
        runtime_seconds=runtime,
        deadline=deadline if (enforce and allowed) else None,
        stamp=f"{estimate.usd:.2f}"
        if (estimate is not None and allowed and not workload.informational)
        else None,
        mode=policy.mode,
        audit=audit,
        usage=usage if allowed else None,
        charge=charge if allowed else None,
    )
