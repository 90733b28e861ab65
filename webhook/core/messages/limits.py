"""Sentences about what a namespace allows: GPU types, quotas and budgets."""

from __future__ import annotations

from collections.abc import Iterable

from ..types import (
    ANNOTATION_GPU_TYPE,
    ANNOTATION_MAX_RUNTIME,
)
from .text import (
    amount,
    money,
    quote,
    warning,
)

__all__ = [
    "gpu_type_not_allowed",
    "gpu_type_unpinned",
    "near_budget",
    "near_quota",
    "over_budget",
    "over_quota",
]


def gpu_type_not_allowed(
    refused: Iterable[str], namespace: str, allowed: Iterable[str], *, annotation: bool = False
) -> str:
    also = f" or {ANNOTATION_GPU_TYPE}" if annotation else ""  # where the policy trusts it
    return (
        f"GPU type {', '.join(refused)} is not allowed in namespace {quote(namespace)}, which "
        f"allows {', '.join(allowed)}; pin one of those with a node selector "
        f"(e.g. nvidia.com/gpu.product){also}"
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
    held = f"{amount(used, money)} held by {workloads} live workload{plural}"
    return (
        f"{scope} would hold {amount(used + adds, money)} of {name} at once, above its quota "
        f"of {amount(cap, money)} ({held}, and {what} adds {amount(adds, money)}); wait for "
        f"running work to finish, or ask the platform team to raise the quota"
    )


def near_quota(scope: str, name: str, after: float, cap: float, *, money: bool) -> str:
    return warning(
        f"{scope} now holds {amount(after, money)} of its {amount(cap, money)} {name} quota "
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
