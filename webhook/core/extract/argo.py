"""Argo's rules for the values in a WorkflowSpec, as Argo applies them: strategic merge
(templateDefaults, podSpecPatch, workflowTemplateRef), IntOrString counts and deadlines,
fan-out (`withItems`/`withSequence`/`withParam`) and attempts (`retryStrategy`). Pure
functions of their arguments; walking the templates is workflowspec's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..types import INFINITE
from .podspec import ObjectError

__all__ = ["attempts", "defaults_for", "fanout", "int_or_string", "merge", "times"]


def merge(base: Any, override: Any) -> Any:
    """Strategic-merge enough for resources and defaults: maps merge, the rest is replaced;
    lists of named containers merge by name."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = merge(base.get(key), value) if key in base else value
        return merged
    if (
        isinstance(base, list)
        and isinstance(override, list)
        # string names only: a list or object as a name cannot key the merge (unhashable)
        and all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in base + override)
    ):
        by_name = {c["name"]: c for c in base}
        for c in override:
            by_name[c["name"]] = merge(by_name.get(c["name"], {}), c)
        return list(by_name.values())
    return override


def times(a: float, b: float) -> float:
    """a × b where zero wins over infinity (no runs of an unbounded loop is no runs). In
    floats: nested loops of huge counts overflow to infinity, not to an int no float holds."""
    return 0 if a == 0 or b == 0 else float(a) * float(b)


def int_or_string(value: Any) -> int | None:
    """An Argo IntOrString count or deadline; None when it is a template expression, or a
    number beyond the int64 Argo reads it into (and beyond what a float prices)."""
    if type(value) is int and 0 <= value < 2**63:
        return value
    if type(value) is str:
        text = value.strip()
        if len(text) <= 18 and text.isascii() and text.isdigit():
            return int(text)
    return None


_TYPES = (
    "container",
    "script",
    "containerSet",
    "steps",
    "dag",
    "resource",
    "suspend",
    "http",
    "plugin",
    "data",
)


def defaults_for(defaults: Mapping[str, Any], template: Mapping[str, Any]) -> dict[str, Any]:
    """templateDefaults without the template types the template is not (Argo keeps each
    template's own type: a `container` default must not turn a steps template into a pod)."""
    return {k: v for k, v in defaults.items() if k not in _TYPES or k in template}


def fanout(step: Mapping[str, Any], where: str, max_fanout: int | None) -> float:
    """How many times a step or task runs its template. A fan-out known only at run time
    counts as `max_fanout` (the declared maximum), else unbounded (a parallelism cap above
    may still bound the cost)."""
    unknown = INFINITE if max_fanout is None else max_fanout
    items = step.get("withItems")
    if items is not None:
        return len(items) if type(items) is list else unknown
    sequence = step.get("withSequence")
    if sequence is not None:
        if type(sequence) is not dict:
            raise ObjectError(f"{where}.withSequence", "object", sequence)
        count = int_or_string(sequence.get("count"))
        if count is not None:
            return count
        start = int_or_string(sequence.get("start", 0))
        end = int_or_string(sequence.get("end"))
        if start is not None and end is not None:
            return abs(end - start) + 1
        return unknown
    if step.get("withParam") is not None:
        return unknown
    return 1


def attempts(template: Mapping[str, Any]) -> float:
    """How many times one invocation of a template may run, retries included."""
    retry = template.get("retryStrategy")
    if not isinstance(retry, dict) or retry.get("limit") is None:
        # a retryStrategy without limit retries without end; none at all runs once
        return 1 if not isinstance(retry, dict) else INFINITE
    limit = int_or_string(retry.get("limit"))
    return INFINITE if limit is None else limit + 1
