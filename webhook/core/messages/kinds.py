"""Sentences about the kinds priced through the kinds table (Deployments, operators' CRDs)."""

from __future__ import annotations

from .text import object_name, warning

__all__ = ["no_deadline_field", "scale_unpriced", "unbounded_count"]


def unbounded_count(kind: str, name: str, annotation: str) -> str:
    return (
        f"GPU {object_name(kind, name)} has no bound on its cost: it runs one pod on every "
        f"matching node, and how many nodes match is unknowable at admission; set annotation "
        f"{annotation} to the most nodes it may run on"
    )


def no_deadline_field(kind: str) -> str:
    return warning(
        f"a {kind} has no run-time limit costgate can set: it is priced for its declared "
        f"runtime, but nothing stops it then; delete it when the work is done"
    )


def scale_unpriced(kind: str, name: str, replicas: int) -> str:
    return warning(
        f"costgate cannot see {object_name(kind, name)} here, so scaling it to {replicas} "
        f"replicas was not priced; `costgate estimate -f` of the object with the new "
        f"replicas shows what it costs"
    )
