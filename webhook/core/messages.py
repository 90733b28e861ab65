"""Every sentence a user reads: what was found, the rule, and the way through.

Nothing else in the package writes user-facing text. Values the user controls (names,
labels, annotations) pass through `quote`, so they cannot inject newlines into kubectl
output or stretch a message without bound.
"""

from __future__ import annotations

import datetime as dt
import reprlib
from collections.abc import Iterable

from .quantities import format_hours
from .types import (
    ANNOTATION_APPROVAL,
    ANNOTATION_GPU_TYPE,
    ANNOTATION_MAX_FANOUT,
    ANNOTATION_MAX_RUNTIME,
    Approval,
    Estimate,
    Reason,
)

__all__ = [
    "WARNING_PREFIX",
    "annotation_alone_denied",
    "annotation_alone_priced",
    "annotation_outpriced",
    "approval_above_grant",
    "approval_bad_signature",
    "approval_expired",
    "approval_malformed",
    "approval_not_allowed",
    "approval_not_yet_valid",
    "approval_self",
    "approval_too_small",
    "approval_unknown_key",
    "approval_wrong_experiment",
    "approval_wrong_name",
    "approval_wrong_namespace",
    "approvals_disabled",
    "approved",
    "cost",
    "deadline_lowered",
    "default_runtime",
    "default_runtime_not_injected",
    "denial",
    "estimate_warning",
    "format_duration",
    "gpu_type_not_allowed",
    "gpu_type_unpinned",
    "ignored_patch",
    "internal_error",
    "invalid_gpu_quantity",
    "invalid_label_value",
    "invalid_max_fanout",
    "invalid_request",
    "invalid_runtime",
    "missing_labels",
    "money",
    "more_warnings",
    "near_budget",
    "near_quota",
    "nested_too_deep",
    "out_of_range",
    "over_budget",
    "over_quota",
    "over_threshold",
    "quote",
    "resource_template",
    "runtime_ignored_for_serving",
    "runtime_too_long",
    "state_unavailable",
    "template_estimate",
    "template_ref_unresolved",
    "too_many_gpus",
    "unbounded",
    "unknown_gpu_annotation",
    "unknown_gpu_denied",
    "unknown_gpu_priced",
    "unknown_template",
    "unreadable_patch",
    "unresolved_denied",
    "warning",
    "workflow_template_ref",
    "would_deny",
    "wrong_type",
]

WARNING_PREFIX = "costgate: "
# AdmissionResponse.warnings: "Limit warnings to 120 characters if possible. Warnings over
# 256 characters and large numbers of warnings may be truncated."
_SHORT_WARNING = 120
_MAX_WARNING = 256
_MAX_QUOTED = 80
# Problems, templates and labels spelled out in one message; the rest are counted, so that
# 10,000 bad containers make a denial one can read rather than a megabyte of it.
_MAX_LISTED = 10
# repr bounded in depth and width: a value nested 1,000 levels deep (orjson reads 1024, Python
# recurses about 1000) or a list of a million items quotes in constant time, without raising
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = _MAX_QUOTED


def quote(value: object) -> str:
    """A user-controlled value in double quotes, control characters escaped, length bounded."""
    text = value if isinstance(value, str) else _REPR.repr(value)
    if len(text) > _MAX_QUOTED:
        text = text[: _MAX_QUOTED - 1] + "…"
    if '"' in text or "\\" in text:
        text = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{_one_line(text)}"'


def _one_line(text: str) -> str:
    """`text` with what kubectl would not print as itself (newlines, NUL, bidi overrides,
    zero-width characters) escaped. User-controlled names also reach sentences unquoted,
    inside field paths and template names, so the one-line guarantee is kept here."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)


def money(usd: float) -> str:
    return f"${usd:,.2f}"


def format_duration(seconds: int) -> str:
    """A runtime limit as people write it: `7d`, `12h`, `90m`."""
    if seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def _breakdown(estimate: Estimate) -> str:
    hours = "730h/month" if estimate.per_month else format_hours(round(estimate.hours * 3600))
    parts = [
        f"{line.count} × {line.label} at {money(line.usd_per_hour)}/h" for line in estimate.lines
    ]
    if len(parts) == 1:
        return f"({parts[0]} × {hours})"
    return f"(({' + '.join(parts)}) × {hours})"


def _runs(runs: float | None) -> str:
    return "" if runs is None else f" × {runs:g} run{'' if runs == 1 else 's'}"


def _workflow_breakdown(estimate: Estimate) -> str:
    hours = format_hours(round(estimate.hours * 3600))
    parts = []
    for line in estimate.lines[:_MAX_LISTED]:
        text = f"{line.shape}: {line.count} × {line.label} at {money(line.usd_per_hour)}/h"
        if estimate.basis == "steps" and line.hours is not None:
            text += f" × {format_hours(round(line.hours * 3600))}{_runs(line.runs)}"
        parts.append(text)
    if len(estimate.lines) > _MAX_LISTED:
        parts.append(f"{len(estimate.lines) - _MAX_LISTED:,} more templates")
    if estimate.basis == "steps":
        return f"({' + '.join(parts)})"
    peak = money(estimate.peak_usd_per_hour)
    return f"(up to {peak}/h at once × {hours}; {', '.join(parts)})"


def cost(estimate: Estimate) -> str:
    """`$1,152.00 (8 × h100-80gb at $6.00/h × 24h)`, or `$730.00/month (...)` for serving;
    Workflows say per template what the bound is made of."""
    if estimate.basis != "runtime":
        return f"{money(estimate.usd)} {_workflow_breakdown(estimate)}"
    suffix = "/month" if estimate.per_month else ""
    return f"{money(estimate.usd)}{suffix} {_breakdown(estimate)}"


def warning(text: str) -> str:
    """A kubectl warning line: prefixed, one line, within the API server's limit."""
    line = WARNING_PREFIX + _one_line(text)
    return line if len(line) <= _MAX_WARNING else line[: _MAX_WARNING - 1] + "…"


def estimate_warning(estimate: Estimate, cost_text: str, gpus: float) -> str:
    """The warning every admitted GPU workload gets: `cost_text` is `cost(estimate)`, `gpus`
    the most GPUs the workload runs at once (for the short form)."""
    line = WARNING_PREFIX + "estimated cost " + _one_line(cost_text)
    if len(line) <= _SHORT_WARNING:
        return line
    suffix = (
        "/month" if estimate.per_month else f" over {format_hours(round(estimate.hours * 3600))}"
    )
    types = len({line.gpu_type for line in estimate.lines})
    kinds = "1 type" if types == 1 else f"{types} types"
    return warning(
        f"estimated cost {money(estimate.usd)}{suffix} for up to {gpus:g} GPUs at once of "
        f"{kinds} (breakdown in audit annotations)"
    )


def _object(kind: str, name: str) -> str:
    return f"{kind.lower()} {quote(name)}"


def missing_labels(kind: str, name: str, missing: Iterable[str], required: Iterable[str]) -> str:
    missing = list(missing)
    noun, pronoun = ("label", "it") if len(missing) == 1 else ("labels", "them")
    return (
        f"GPU {_object(kind, name)} is missing required {noun} {', '.join(missing)} "
        f"(required: {', '.join(required)}, so every GPU hour can be attributed); "
        f"add {pronoun} under metadata.labels"
    )


def invalid_label_value(key: str, value: object) -> str:
    return (
        f"label {key}={quote(value)} is not a valid label value; use at most 63 letters, digits, "
        f"'-', '_' or '.', starting and ending with a letter or digit"
    )


def invalid_runtime(value: object) -> str:
    return (
        f"annotation {ANNOTATION_MAX_RUNTIME}={quote(value)} is not a duration; "
        f"write a positive whole duration such as 90m, 12h, 2d or 3600s"
    )


def runtime_too_long(seconds: int, cap: int, namespace: str) -> str:
    return (
        f"declared max runtime {format_duration(seconds)} ({ANNOTATION_MAX_RUNTIME}) exceeds the "
        f"{format_duration(cap)} cap for namespace {quote(namespace)}; split the work into "
        f"checkpointed runs of at most {format_duration(cap)}"
    )


def invalid_gpu_quantity(container: str, resource: str, value: object) -> str:
    return (
        f"invalid GPU request: container {quote(container)} asks for {resource} {quote(value)}; "
        f"GPU counts must be whole numbers"
    )


def too_many_gpus(count: int, limit: int) -> str:
    return (
        f"invalid GPU request: one pod asks for {count} GPUs, more than the {limit} a single pod "
        f"may use (policy max_gpus_per_pod); check resources.limits"
    )


def unknown_gpu_annotation(value: str, known: Iterable[str]) -> str:
    return (
        f"annotation {ANNOTATION_GPU_TYPE}={quote(value)} names no GPU type in the pricing table; "
        f"use one of {', '.join(sorted(known))}"
    )


def _unknown_labels(labels: Iterable[str]) -> str:
    labels = list(labels)
    if not labels:
        return ""
    more = len(labels) - _MAX_LISTED
    labels = [quote(label) for label in labels[:_MAX_LISTED]]
    if more > 0:
        labels.append(f"{more:,} more")
    return f" (no GPU type in the pricing table matches {', '.join(labels)})"


def unknown_gpu_denied(namespace: str, labels: Iterable[str]) -> str:
    return (
        f"the GPU type is not pinned{_unknown_labels(labels)} and namespace {quote(namespace)} "
        f"does not price unknown GPUs; set annotation {ANNOTATION_GPU_TYPE} or a GPU nodeSelector "
        f"such as nvidia.com/gpu.product"
    )


def unknown_gpu_priced(gpu: str, usd_per_hour: float, labels: Iterable[str]) -> str:
    return warning(
        f"GPU type not pinned{_unknown_labels(labels)}; priced as {gpu} ({money(usd_per_hour)}/h), "
        f"the dearest it could be; set {ANNOTATION_GPU_TYPE} or a GPU nodeSelector"
    )


def _annotation_alone(annotated: str) -> str:
    return f"{ANNOTATION_GPU_TYPE}={annotated} alone does not keep the pod on {annotated} nodes"


def annotation_alone_denied(annotated: str, namespace: str) -> str:
    return (
        f"{_annotation_alone(annotated)}, and namespace {quote(namespace)} does not price "
        f"unpinned GPUs (policy gpu_type_annotation: checked); pin {annotated} with a GPU "
        f"nodeSelector such as nvidia.com/gpu.product"
    )


def annotation_alone_priced(annotated: str, gpu: str, usd_per_hour: float) -> str:
    return warning(
        f"{_annotation_alone(annotated)} (policy gpu_type_annotation: checked); priced as {gpu} "
        f"({money(usd_per_hour)}/h), the dearest it could be; pin {annotated} with a GPU "
        f"nodeSelector"
    )


def annotation_outpriced(annotated: str, allowed: str) -> str:
    return warning(
        f"{ANNOTATION_GPU_TYPE} says {annotated} but the node selectors allow {allowed}; "
        f"priced as {allowed}"
    )


def over_threshold(
    estimate: Estimate,
    limit: float,
    namespace: str,
    cost_text: str | None = None,
    *,
    approvals: bool = True,
) -> str:
    """Over the limit; the way through is an approval, or less GPU time where the namespace
    takes no approvals."""
    kind = "/month serving" if estimate.per_month else ""
    way = (
        f"; ask an approver for a token (costgate approve ...) and set annotation "
        f"{ANNOTATION_APPROVAL}"
        if approvals
        else f", which takes no approvals; use fewer GPUs or a shorter {ANNOTATION_MAX_RUNTIME}"
    )
    return (
        f"estimated cost {cost_text or cost(estimate)} exceeds the {money(limit)}{kind} "
        f"limit for namespace {quote(namespace)}{way}"
    )


def default_runtime(seconds: int) -> str:
    return warning(
        f"no {ANNOTATION_MAX_RUNTIME} annotation; default runtime {format_hours(seconds)} injected "
        f"(spec.activeDeadlineSeconds={seconds})"
    )


def default_runtime_not_injected(seconds: int) -> str:
    return warning(
        f"no {ANNOTATION_MAX_RUNTIME} annotation; priced at the default {format_hours(seconds)}, "
        f"which enforce mode would set as spec.activeDeadlineSeconds"
    )


def deadline_lowered(old: int, new: int) -> str:
    return warning(
        f"spec.activeDeadlineSeconds lowered from {old} to {new} (the declared max runtime)"
    )


def runtime_ignored_for_serving() -> str:
    return warning(
        f"{ANNOTATION_MAX_RUNTIME} is ignored for serving pods (owned by a ReplicaSet, StatefulSet "
        f"or DaemonSet): they are priced per month and get no deadline"
    )


def more_warnings(count: int) -> str:
    return warning(f"{count:,} more warnings not shown; costgate estimate -f FILE lists them all")


def would_deny(code: str, message: str) -> str:
    return warning(f"would be denied in enforce mode ({code}): {message}")


def wrong_type(path: str, expected: str, value: object) -> str:
    return f"field {path} must be {_TYPE_NAMES.get(expected, expected)}, not {_describe(value)}"


def out_of_range(path: str, value: object, high: int) -> str:
    return f"field {path} must be a whole number from 0 to {high}, not {quote(value)}"


# what a field should be (ObjectError's `expected`), and what a value is, in words
_TYPE_NAMES = {
    "dict": "an object",
    "object": "an object",
    "list": "a list",
    "str": "a string",
    "int": "an integer",
    "bool": "a boolean",
}
_VALUE_NAMES = {
    dict: "an object",
    list: "a list",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
}


def _describe(value: object) -> str:
    return _VALUE_NAMES.get(type(value), type(value).__name__)


def invalid_max_fanout(value: object) -> str:
    return (
        f"annotation {ANNOTATION_MAX_FANOUT}={quote(value)} is not a whole number; declare the "
        f"most items a withParam loop can have, e.g. 50"
    )


def unknown_template(name: str) -> str:
    return f"a step calls template {quote(name)}, which the workflow does not define"


def template_ref_unresolved(where: str, owner: str, template: str) -> str:
    return (
        f"{where} uses template {quote(template)} of WorkflowTemplate {quote(owner)}, which "
        f"costgate cannot read, so its GPUs are not priced"
    )


def workflow_template_ref(name: str) -> str:
    return (
        f"the workflow runs WorkflowTemplate {quote(name)}, which costgate cannot read, so its "
        f"GPUs are not priced; submit the template first, or estimate both together with "
        f"costgate estimate -f template.yaml -f workflow.yaml"
    )


def unresolved_denied(detail: str, namespace: str) -> str:
    return f"{detail}; namespace {quote(namespace)} denies workloads it cannot price"


def resource_template(name: str) -> str:
    return warning(
        f"template {quote(name)} creates an object; its GPUs are priced when it is created"
    )


def unreadable_patch(where: str) -> str:
    return (
        f"{where} cannot be read at admission (it is not JSON or YAML until Argo fills in its "
        f"{{{{...}}}} parameters), so the GPUs it may set cannot be priced; request GPUs in "
        f"the template's resources instead"
    )


def ignored_patch(where: str) -> str:
    return warning(f"{where} cannot be read at admission; it names no resources, so ignored")


def unbounded(kind: str, name: str) -> str:
    return (
        f"GPU {_object(kind, name)} has no bound on its cost: a withParam loop or a recursive "
        f"template runs GPU pods an unknown number of times, or a GPU exit handler (which "
        f"outlives the workflow deadline) has no activeDeadlineSeconds; set spec.parallelism, "
        f"annotation {ANNOTATION_MAX_FANOUT}, or the exit handler's activeDeadlineSeconds"
    )


def template_estimate(estimate: Estimate, limit: float, cost_text: str) -> str:
    over = f", above the {money(limit)} threshold" if estimate.usd > limit else ""
    return warning(f"a workflow of this template would cost up to {cost_text}{over}")


def _when(seconds: float) -> str:
    """A Unix time as UTC ISO 8601 (formatting only: the core reads no clock)."""
    return dt.datetime.fromtimestamp(int(seconds), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _approval(approval: Approval) -> str:
    return f"the approval by {quote(approval.approver)} (key {approval.key_id})"


def approval_expired(approval: Approval) -> str:
    return (
        f"{_approval(approval)} expired at {_when(approval.expires_at)}; ask "
        f"{quote(approval.approver)} for a new one (costgate approve --expires ...)"
    )


def approval_not_yet_valid(approval: Approval) -> str:
    return f"{_approval(approval)} is issued for {_when(approval.issued_at)}, in the future"


def approval_wrong_namespace(approval: Approval, namespace: str) -> str:
    return (
        f"{_approval(approval)} is for namespace {quote(approval.namespace)}, not "
        f"{quote(namespace)}; approvals do not travel between namespaces"
    )


def approval_wrong_experiment(approval: Approval, experiment: str) -> str:
    return (
        f"{_approval(approval)} is for experiment {quote(approval.experiment)}, but this "
        f"workload's experiment label is {quote(experiment)}"
    )


def approval_wrong_name(approval: Approval, name: str) -> str:
    return f"{_approval(approval)} is for workload {quote(approval.name)}, not {quote(name)}"


def approval_too_small(approval: Approval, usd: float) -> str:
    return (
        f"estimated cost {money(usd)} is {money(usd - approval.max_usd)} above the "
        f"{money(approval.max_usd)} approved by {quote(approval.approver)}; ask for an "
        f"approval of at least {money(usd)}"
    )


def approval_self(approval: Approval, relation: str, who: str) -> str:
    return (
        f"{_approval(approval)} was given by {quote(approval.approver)}, but this workload is "
        f"{relation} by {quote(who)}; nobody approves their own workload: ask another approver"
    )


def approval_not_allowed(approval: Approval, namespace: str, approvers: Iterable[str]) -> str:
    return (
        f"{quote(approval.approver)} may not approve for namespace {quote(namespace)} "
        f"(approvers there: {', '.join(sorted(approvers))})"
    )


def approval_above_grant(approval: Approval, namespace: str, most: float) -> str:
    return (
        f"{_approval(approval)} grants {money(approval.max_usd)}, more than the {money(most)} "
        f"one approval may grant in namespace {quote(namespace)}"
    )


def approval_malformed(detail: str) -> str:
    return f"annotation {ANNOTATION_APPROVAL} is not a valid approval token ({detail})"


def approval_unknown_key(key_id: str, known: Iterable[str]) -> str:
    listed = ", ".join(sorted(known)) or "none"
    return (
        f"annotation {ANNOTATION_APPROVAL} is signed with key {quote(key_id)}, which is not an "
        f"approver key of this cluster (keys: {listed})"
    )


def approval_bad_signature(key_id: str) -> str:
    return (
        f"annotation {ANNOTATION_APPROVAL} does not verify against key {quote(key_id)}: it was "
        f"changed after signing, or signed by another key"
    )


def approvals_disabled() -> str:
    return f"annotation {ANNOTATION_APPROVAL} is set, but this webhook has no approver keys"


def approved(approval: Approval) -> str:
    return warning(
        f"approved by {approval.approver} (key {approval.key_id}) up to "
        f"{money(approval.max_usd)} until {_when(approval.expires_at)}"
    )


def _amount(value: float, money_: bool) -> str:
    return money(value) if money_ else f"{value:g}"


def gpu_type_not_allowed(refused: Iterable[str], namespace: str, allowed: Iterable[str]) -> str:
    return (
        f"GPU type {', '.join(refused)} is not allowed in namespace {quote(namespace)}, which "
        f"allows {', '.join(allowed)}; pin one of those with a node selector "
        f"(e.g. nvidia.com/gpu.product) or {ANNOTATION_GPU_TYPE}"
    )


def gpu_type_unpinned(namespace: str, allowed: Iterable[str]) -> str:
    return (
        f"namespace {quote(namespace)} allows only GPU types {', '.join(allowed)}, and nothing "
        f"pins this pod's GPU type, so it may land on any GPU; pin one of those with a node "
        f"selector (e.g. nvidia.com/gpu.product)"
    )


def over_quota(
    scope: str,
    name: str,
    used: float,
    adds: float,
    cap: float,
    workloads: int,
    what: str,
    *,
    money: bool,
) -> str:
    """Which quota, the current use, the limit, what this workload adds, the way through."""
    plural = "" if workloads == 1 else "s"
    held = f"{_amount(used, money)} held by {workloads} live workload{plural}"
    return (
        f"{scope} would hold {_amount(used + adds, money)} of {name} at once, above its quota "
        f"of {_amount(cap, money)} ({held}, and {what} adds {_amount(adds, money)}); wait for "
        f"running work to finish, or ask the platform team to raise the quota"
    )


def near_quota(scope: str, name: str, after: float, cap: float, *, money: bool) -> str:
    return warning(
        f"{scope} now holds {_amount(after, money)} of its {_amount(cap, money)} {name} quota "
        f"({after / cap:.0%})"
    )


def _period(period: str) -> str:
    return "over its lifetime" if period == "lifetime" else f"for {period}"


def over_budget(
    experiment: str, namespace: str, period: str, spent: float, limit: float, usd: float, what: str
) -> str:
    return (
        f"experiment {quote(experiment)} in namespace {quote(namespace)} has spent "
        f"{money(spent)} of its {money(limit)} budget {_period(period)}; {what} "
        f"(estimated {money(usd)}) would exceed it by {money(spent + usd - limit)}; use fewer "
        f"GPUs or a shorter {ANNOTATION_MAX_RUNTIME}, or ask the platform team to raise the budget"
    )


def near_budget(experiment: str, period: str, after: float, limit: float) -> str:
    return warning(
        f"experiment {quote(experiment)} has now committed {money(after)} of its {money(limit)} "
        f"budget {_period(period)} ({after / limit:.0%})"
    )


def state_unavailable(detail: str) -> str:
    return (
        f"costgate cannot check this namespace's quotas and budgets ({detail}); retry in a "
        f"minute, and if it persists tell the platform team"
    )


def denial(reasons: Iterable[Reason]) -> str:
    """The status message kubectl prints after "denied the request:": one line."""
    reasons = tuple(reasons)
    if len(reasons) == 1:
        return _one_line(reasons[0].message)
    texts = [_one_line(r.message) for r in reasons[:_MAX_LISTED]]
    listed = " ".join(f"({i}) {t};" for i, t in enumerate(texts, 1))[:-1]
    more = len(reasons) - len(texts)
    return f"{len(reasons)} problems: {listed}" + (f"; and {more:,} more" if more else "")


def nested_too_deep() -> str:
    return (
        "the object is nested too deeply to read (lists, objects or templates calling "
        "templates, hundreds of levels down); flatten it"
    )


def invalid_request(detail: str) -> str:
    return f"costgate cannot read this AdmissionReview: {_one_line(detail)}"


def internal_error(request_id: str) -> str:
    return (
        f"costgate could not evaluate this request (internal error, request id {request_id}); "
        f"retry, and if it persists give the request id to the platform team"
    )
