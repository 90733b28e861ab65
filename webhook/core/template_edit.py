"""An edit of a (Cluster)WorkflowTemplate, priced against the live Workflows that run it.

Argo reads a `templateRef` when the step starts, so a Workflow admitted on a 1 × T4 template
runs whatever the template says by then. A CREATE or UPDATE of a template is therefore priced
again for every live Workflow that runs it (the config's `referrers`, a watch cache in the
cluster), with the new spec in place of the stored one: the edit is refused when it takes
one of them above what its namespace allows without approval, or above the approval it
carries, where the old template kept it within. A CREATE counts too: deleting a template and
creating it again under the same name is an edit. Offline there are no live Workflows; the
answer says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, NamedTuple

from . import messages
from .config import Config, TemplateLookup
from .decide import assess
from .extract.podspec import ObjectError
from .extract.workflow import extract_workflow
from .rules.context import Context
from .types import ANNOTATION_ESTIMATED_COST, Reason, Request
from .verdict import Findings

__all__ = ["MAX_REPRICED", "TEMPLATE_KINDS", "template_edit"]

TEMPLATE_KINDS = frozenset({"WorkflowTemplate", "ClusterWorkflowTemplate"})
# Workflows priced again in one review, at most: each is one Workflow review (a millisecond
# or so, MAX_VISITS at worst), and the review has REVIEW_SECONDS. Past it the edit is refused.
MAX_REPRICED = 200
# What a Workflow had before the edit, not what the edit did to it.
_NOT_THE_EDIT = frozenset({"missing-labels", "invalid-runtime", "template-not-found"})
_CENT = 0.005  # the stamp is written to the cent


class _Raised(NamedTuple):
    namespace: str
    name: str
    old_usd: float
    new_usd: float
    reason: Reason


def template_edit(request: Request, config: Config, now: float) -> Findings | None:
    """The refusal of an edit that raises a live Workflow past what it may cost, a note
    when the Workflows cannot be seen, or None."""
    if config.referrers is None:
        return Findings(warnings=(messages.warning(messages.template_users_unseen()),))
    spec = request.obj.get("spec")
    old = request.old_obj.get("spec") if request.old_obj is not None else None
    if request.operation == "UPDATE" and old == spec:
        return None  # labels, annotations: no Workflow runs anything else
    cluster = request.kind == "ClusterWorkflowTemplate"
    name = _name(request)
    scope = "" if cluster else request.namespace
    users = config.referrers(scope, name, cluster)
    if not users:
        return None
    if len(users) > MAX_REPRICED:
        text = messages.template_edit_too_many(request.kind, name, len(users), MAX_REPRICED)
        return Findings(refusals=(Reason("invalid-request", text),))
    after = replace(config, lookup=_overlay(config.lookup, scope, name, cluster, spec))
    before = None
    if request.operation == "UPDATE" and request.old_obj is not None:
        before = replace(config, lookup=_overlay(config.lookup, scope, name, cluster, old))
    raised = [r for r in (_raised(obj, after, before, now) for obj in users) if r is not None]
    if not raised:
        return None
    text = messages.template_edit_raises(
        request.kind,
        name,
        [(r.namespace, r.name, r.old_usd, r.new_usd) for r in raised],
        raised[0].reason.message,
    )
    return Findings(refusals=(Reason(raised[0].reason.code, text),))


def _name(request: Request) -> str:
    metadata = request.obj.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) and name else request.name


def _overlay(
    base: TemplateLookup | None, scope: str, name: str, cluster: bool, spec: Any
) -> TemplateLookup:
    """The lookup with `spec` as template `name`: the edited one, or the one it replaces."""

    def find(namespace: str, wanted: str, cluster_scope: bool) -> Mapping[str, Any] | None:
        if wanted == name and cluster_scope == cluster and (cluster or namespace == scope):
            return spec if isinstance(spec, Mapping) else None
        return base(namespace, wanted, cluster_scope) if base is not None else None

    return find


def _priced(obj: Mapping[str, Any], config: Config, now: float) -> tuple[float, Findings | None]:
    """A live Workflow priced as if submitted now: its estimate (infinite when it cannot be
    bounded or read) and what the rules found (None: no GPU)."""
    metadata = obj.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    request = Request(
        uid="",
        operation="CREATE",
        group="argoproj.io",
        kind="Workflow",
        namespace=str(metadata.get("namespace", "")),
        name=str(metadata.get("name", "")),
        obj=obj,
    )
    try:
        workload = extract_workflow(request, config)
    except ObjectError as exc:
        return math.inf, Findings(refusals=(exc.reason,))
    except RecursionError:
        return math.inf, Findings(refusals=(Reason("invalid-request", messages.nested_too_deep()),))
    if workload is None:
        return 0.0, None
    policy = config.policy
    found = assess(
        Context(
            workload,
            policy.for_namespace(workload.namespace),
            config.table,
            policy.hours_per_month,
            config.verify_approval,
            now,
            policy.approval_clock_skew_seconds,
        )
    )
    return (found.estimate.usd if found.estimate is not None else math.inf), found


def _raised(
    obj: Mapping[str, Any], after: Config, before: Config | None, now: float
) -> _Raised | None:
    """The Workflow, if the edit takes it past what it may cost (and the old template kept
    it below): compared with the old template's price, or (a template created again) with
    the estimate it was admitted with."""
    metadata = obj.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    namespace, name = str(metadata.get("namespace", "")), str(metadata.get("name", ""))
    if namespace in after.policy.exempt_namespaces:
        return None
    new_usd, found = _priced(obj, after, now)
    if found is None:
        return None  # no GPU under the new template
    blocking = list(found.refusals)
    if not blocking and found.mode == "enforce":  # warn mode: the Workflow would be admitted
        blocking = [r for r in found.reasons if r.code not in _NOT_THE_EDIT]
    if not blocking:
        return None
    old_usd = _stamped(metadata)
    if before is not None:
        priced_before, found_before = _priced(obj, before, now)
        if found_before is not None and found_before.estimate is not None:
            old_usd = priced_before
    if new_usd <= old_usd + _CENT:
        return None  # no dearer than before the edit: not this edit's doing
    return _Raised(namespace, name, old_usd, new_usd, blocking[0])


def _stamped(metadata: Mapping[str, Any]) -> float:
    """The estimate costgate stamped on the Workflow when it admitted it; 0 without one."""
    annotations = metadata.get("annotations")
    stamp = annotations.get(ANNOTATION_ESTIMATED_COST) if isinstance(annotations, dict) else None
    try:
        usd = float(stamp) if isinstance(stamp, str) else 0.0
    except ValueError:
        return 0.0
    return usd if math.isfinite(usd) and usd >= 0 else 0.0
