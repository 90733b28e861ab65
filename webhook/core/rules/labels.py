"""Attribution: a GPU workload names its owner and experiment in label values."""

from __future__ import annotations

import re

from .. import messages
from ..policy import NamespacePolicy
from ..types import Reason, Workload
from .context import NOTHING, Context, Finding

__all__ = ["check_labels", "labels"]

_LABEL_VALUE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")


def check_labels(workload: Workload, policy: NamespacePolicy) -> tuple[Reason, ...]:
    """A reason for the required labels missing (one, naming them all) and one for each
    value that is not a label value."""
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
    return tuple(reasons)


def labels(context: Context) -> Finding:
    """Known GPU work must be attributed (templates costgate cannot read prove nothing), and
    so must GPUs that cannot be counted (invalid-gpu-request: they may be any number)."""
    workload = context.workload
    if not workload.pods and not any(r.code == "invalid-gpu-request" for r in workload.problems):
        return NOTHING
    reasons = check_labels(workload, context.policy)
    return Finding(reasons) if reasons else NOTHING
