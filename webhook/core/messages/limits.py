"""Sentences about what a namespace allows: GPU types, quotas and budgets."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

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
    "BudgetOf",
    "gpu_type_not_allowed",
    "gpu_type_unpinned",
    "near_budget",
    "near_quota",
    "over_budget",
    "over_quota",
    "unlisted_experiment",
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


class BudgetOf(NamedTuple):
    """Which budget a sentence is about: the experiment's own ("experiment"), the one the
    experiments not listed in the policy share ("unlisted"), or the namespace's."""

    kind: str
    experiment: str
    namespace: str
    listed: bool = True  # whether any experiment has a budget of its own


def _budget(of: BudgetOf) -> tuple[str, str, str]:
    """(whose spend, whose budget, the way through) for the sentences about `of`."""
    experiment, namespace = quote(of.experiment), quote(of.namespace)
    if of.kind == "unlisted":
        if of.listed:
            whose = (
                f"the shared budget of unlisted experiments in namespace {namespace} "
                f"(experiment {experiment} is not listed, so it draws on it) has"
            )
        else:  # nothing listed: every experiment draws on it
            whose = (
                f"the budget shared by every experiment in namespace {namespace} (experiment "
                f"{experiment} among them) has"
            )
        return (
            whose,
            "the",
            "ask the platform team to give the experiment a budget of its own or raise the "
            "shared one",
        )
    if of.kind == "namespace":
        return (
            f"namespace {namespace}'s budget of all experiments has",
            "the",
            "ask the platform team to raise the namespace's budget",
        )
    return (
        f"experiment {experiment} in namespace {namespace} has",
        "its",
        "ask the platform team to raise the budget",
    )


def over_budget(
    of: BudgetOf, period: str, spent: float, limit: float, usd: float, what: str
) -> str:
    """Which budget, what it has spent of what, what this workload adds, the way through."""
    whose, its, way = _budget(of)
    also = f"experiment {quote(of.experiment)}, " if of.kind == "namespace" else ""
    return (
        f"{whose} spent {money(spent)} of {its} {money(limit)} budget {_period(period)}; "
        f"{what} ({also}estimated {money(usd)}) would exceed it by "
        f"{money(spent + usd - limit)}; use fewer GPUs or a shorter {ANNOTATION_MAX_RUNTIME}, "
        f"or {way}"
    )


def near_budget(of: BudgetOf, period: str, after: float, limit: float) -> str:
    own = of.kind == "experiment"
    whose = f"experiment {quote(of.experiment)} has" if own else _budget(of)[0]
    its = "its" if own else "the"
    return warning(
        f"{whose} now committed {money(after)} of {its} {money(limit)} budget "
        f"{_period(period)} ({after / limit:.0%})"
    )


def unlisted_experiment(experiment: str, namespace: str, listed: Iterable[str]) -> str:
    names = ", ".join(listed) or "none"
    return (
        f"experiment {quote(experiment)} has no budget in namespace {quote(namespace)}, which "
        f"budgets only experiments {names} and denies the others; label the workload with one "
        f"of those, or ask the platform team to add {quote(experiment)} to the namespace's "
        f"budget.experiments"
    )
