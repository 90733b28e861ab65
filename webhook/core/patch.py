"""Decision -> the mutating webhook's answer: the minimal RFC 6902 JSONPatch that applies to
the object as the API server holds it, or a refusal of an object that cannot be read.

Only ops that change something. A missing `metadata.annotations` is created with the stamp
inside it in one `add`: adding `/metadata/annotations/x` to a Pod without annotations fails
in the API server ("doc is missing path").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

from .types import ANNOTATION_ESTIMATED_COST, MALFORMED
from .verdict import Decision, Findings, verdict

__all__ = ["UNCHANGED", "Mutation", "escape", "mutation", "patch_ops"]


class Mutation(NamedTuple):
    """What the mutating webhook answers. It refuses only objects it cannot read (it has
    nothing to patch); policy denials are the validating webhook's, which sees the object
    after every mutation."""

    ops: tuple[dict[str, Any], ...] = ()
    refusal: Decision | None = None  # the denial, when the object cannot be read

    @property
    def allowed(self) -> bool:
        return self.refusal is None

    @property
    def outcome(self) -> Literal["deny", "patch", "skip"]:
        if self.refusal is not None:
            return "deny"
        return "patch" if self.ops else "skip"


UNCHANGED = Mutation()  # allowed as it is


def mutation(found: Findings, obj: Mapping[str, Any]) -> Mutation:
    """The mutating webhook's answer for what the core found about `obj`."""
    decision = verdict(found, words=False)  # only a refusal has words to show
    if decision.allowed:
        ops = patch_ops(decision, obj)
        return Mutation(tuple(ops)) if ops else UNCHANGED
    if any(reason.code in MALFORMED for reason in decision.reasons):
        return Mutation(refusal=verdict(found))
    return UNCHANGED


def escape(token: str) -> str:
    """A JSON Pointer reference token (RFC 6901): `~` -> `~0`, `/` -> `~1`."""
    return token.replace("~", "~0").replace("/", "~1")


_STAMP_PATH = "/metadata/annotations/" + escape(ANNOTATION_ESTIMATED_COST)


def _parent(obj: Mapping[str, Any], pointer: str) -> tuple[Mapping[str, Any] | None, str]:
    """The object holding the last token of a simple /a/b/c pointer (no escapes) and that token."""
    *parents, last = pointer.strip("/").split("/")
    node: Any = obj
    for token in parents:
        node = node.get(token) if isinstance(node, Mapping) else None
        if node is None:
            return None, last
    return (node if isinstance(node, Mapping) else None), last


def _create(obj: Mapping[str, Any], pointer: str, value: Any) -> list[dict[str, Any]]:
    """The one `add` that creates the missing objects on the way to `pointer` with `value`
    at its end; none when something on the way is not an object."""
    tokens = pointer.strip("/").split("/")
    node: Any = obj
    for depth, token in enumerate(tokens):
        if not isinstance(node, Mapping):
            return []
        child = node.get(token)
        if child is None:
            for name in reversed(tokens[depth + 1 :]):
                value = {name: value}
            return [{"op": "add", "path": "/" + "/".join(tokens[: depth + 1]), "value": value}]
        node = child
    return []


def _ensure_entries(
    obj: Mapping[str, Any], pointer: str, maps: Mapping[str, Mapping[str, str]]
) -> list[dict[str, Any]]:
    """Ops that make each map under the object at `pointer` (e.g. /spec/podMetadata, maps
    {"labels": ..., "annotations": ...}) hold its entries, creating what is missing on the
    way in one `add` each (one `add` of a missing parent carries every map)."""
    tokens = pointer.strip("/").split("/")
    node: Any = obj
    for depth, token in enumerate(tokens):
        child = node.get(token) if isinstance(node, Mapping) else None
        if child is None:
            value: Any = {name: dict(entries) for name, entries in maps.items() if entries}
            for name in reversed(tokens[depth + 1 :]):
                value = {name: value}
            return [{"op": "add", "path": "/" + "/".join(tokens[: depth + 1]), "value": value}]
        node = child
    if not isinstance(node, Mapping):
        return []
    ops = []
    for name, entries in maps.items():
        current = node.get(name)
        if not entries:
            continue
        if not isinstance(current, Mapping):
            ops.append({"op": "add", "path": f"{pointer}/{name}", "value": dict(entries)})
            continue
        ops += [
            {"op": "add", "path": f"{pointer}/{name}/{escape(key)}", "value": value}
            for key, value in entries.items()
            if current.get(key) != value
        ]
    return ops


def patch_ops(decision: Decision, obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The JSONPatch ops that set the deadline, stamp the estimate and copy attribution into
    pod templates; [] when nothing changes."""
    ops: list[dict[str, Any]] = []
    workload = decision.workload
    if decision.deadline is not None and workload is not None and workload.deadline_path:
        parent, key = _parent(obj, workload.deadline_path)
        current = parent.get(key) if parent is not None else None
        if parent is not None and current != decision.deadline:
            op = "replace" if current is not None else "add"
            ops.append({"op": op, "path": workload.deadline_path, "value": decision.deadline})
        elif parent is None:  # e.g. a PyTorchJob without spec.runPolicy: created around it
            ops += _create(obj, workload.deadline_path, decision.deadline)
    if decision.stamp is not None:
        metadata = obj.get("metadata")
        annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
        if not isinstance(metadata, Mapping):
            # no metadata at all (a CronJob attributed through its jobTemplate): the `add`
            # below would not apply, so the parent is created with the stamp inside it
            created = {"annotations": {ANNOTATION_ESTIMATED_COST: decision.stamp}}
            ops.append({"op": "add", "path": "/metadata", "value": created})
        elif not isinstance(annotations, Mapping):
            stamp = {ANNOTATION_ESTIMATED_COST: decision.stamp}
            ops.append({"op": "add", "path": "/metadata/annotations", "value": stamp})
        elif annotations.get(ANNOTATION_ESTIMATED_COST) != decision.stamp:
            ops.append({"op": "add", "path": _STAMP_PATH, "value": decision.stamp})
    if workload is not None and (decision.pod_labels or decision.pod_annotations):
        maps = {"labels": decision.pod_labels, "annotations": decision.pod_annotations}
        for target in workload.copy_to:
            ops += _ensure_entries(obj, target, maps)
    return ops
