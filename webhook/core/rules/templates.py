"""Templates in other objects (WorkflowTemplates) costgate could not read, and what reading
the object noted: a workload priced without them proves nothing, so the namespace's
unresolved_templates says whether that denies it or only warns.
"""

from __future__ import annotations

from .. import messages
from ..types import Reason
from .context import NOTHING, Context, Finding

__all__ = ["templates"]


def templates(context: Context) -> Finding:
    workload = context.workload
    if not workload.unresolved and not workload.notes:
        return NOTHING
    reasons: list[Reason] = []
    warnings: list[str] = []
    for text in workload.unresolved:
        if context.policy.unresolved_templates == "deny":
            denied = messages.unresolved_denied(text, workload.namespace)
            reasons.append(Reason("template-not-found", denied))
        else:
            warnings.append(messages.warning(text))
    return Finding(tuple(reasons), (*warnings, *workload.notes))
