"""Run time: how long batch work may hold its GPUs, and the deadline that makes it stop.

The declared `costgate.io/max-runtime` (or the namespace default) is what the estimate
prices and the dead-man's switch the mutating webhook sets. A smaller deadline already in the
object is kept; a larger one is lowered. Serving work runs without end and is priced per
month instead.
"""

from __future__ import annotations

from typing import NamedTuple

from .. import messages
from ..quantities import parse_duration
from ..types import ANNOTATION_MAX_RUNTIME, Reason
from .context import NOTHING, Context, Finding

__all__ = ["Runtime", "runtime"]


class Runtime(NamedTuple):
    """The runtime the estimate uses (None: it cannot be priced as written, or serving),
    the deadline to set (None: leave it alone), and what was found on the way."""

    seconds: int | None
    deadline: int | None
    finding: Finding


def runtime(context: Context) -> Runtime:
    workload, policy = context.workload, context.policy
    if workload.workload_class == "serving":
        ignored = ANNOTATION_MAX_RUNTIME in workload.annotations
        if not ignored:
            return Runtime(None, None, NOTHING)
        return Runtime(None, None, Finding(if_admitted=(messages.runtime_ignored_for_serving(),)))
    raw = workload.annotations.get(ANNOTATION_MAX_RUNTIME)
    if raw is None:
        declared = policy.default_runtime_seconds
    else:
        parsed = parse_duration(raw) if type(raw) is str else None
        if parsed is None:
            reason = Reason("invalid-runtime", messages.invalid_runtime(raw))
            return Runtime(None, None, Finding((reason,)))
        if parsed > policy.max_runtime_seconds:
            text = messages.runtime_too_long(parsed, policy.max_runtime_seconds, workload.namespace)
            return Runtime(None, None, Finding((Reason("runtime-too-long", text),)))
        declared = parsed

    existing = workload.existing_deadline
    if existing is not None and existing <= declared:
        return Runtime(existing, None, NOTHING)  # a smaller deadline is kept as it is
    if workload.informational:  # a template sets no deadline: its Workflows do
        return Runtime(declared, None, NOTHING)
    if existing is not None:
        warning = messages.deadline_lowered(existing, declared)
    elif raw is not None:
        return Runtime(declared, declared, NOTHING)
    elif policy.mode == "enforce":
        warning = messages.default_runtime(declared)
    else:
        warning = messages.default_runtime_not_injected(declared)
    return Runtime(declared, declared, Finding(if_admitted=(warning,)))
