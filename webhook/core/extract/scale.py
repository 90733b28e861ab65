"""A `scale` subresource request (`kubectl scale`, the HPA controller) read as the update of
the object it resizes.

The Scale object carries replicas and nothing else: no labels, no pod template. The object
it resizes comes from the watch cache (`Config.parents`, no cluster call in the review),
with its replicas set to the Scale's; that update is then decided like any other: priced
again when it raises the cost. Where the object cannot be seen (offline, or not yet in the
cache), the scale is allowed with a warning saying it was not priced.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import messages
from ..config import Config
from ..kindspec import KindSpec, split_path
from ..types import Request
from .podspec import ObjectError

__all__ = ["scale_request"]


def _replicas(obj: Mapping[str, Any] | None, path: str) -> int | None:
    spec = obj.get("spec") if obj else None
    value = spec.get("replicas") if isinstance(spec, dict) else None
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise ObjectError(path, "int", value)
    return value


def _with(obj: Mapping[str, Any], path: str, value: int) -> dict[str, Any]:
    """A copy of `obj` with `value` at `path`, copying only the objects on the way."""
    tokens = split_path(path)
    top: dict[str, Any] = dict(obj)
    node = top
    for token in tokens[:-1]:
        child = node.get(token)
        child = dict(child) if isinstance(child, dict) else {}
        node[token] = child
        node = child
    node[tokens[-1]] = value
    return top


def _spec_for(resource: str, config: Config) -> KindSpec | None:
    for spec in config.policy.kinds.values():
        if spec.scale and f"{spec.group}/{spec.resource}" == resource:
            return spec
    return None


def scale_request(request: Request, config: Config) -> Request | str | None:
    """The UPDATE of the resized object this Scale amounts to; a warning to show when that
    object cannot be seen here; None when there is nothing to price (a kind costgate does
    not scale-price, or fewer replicas)."""
    if request.operation != "UPDATE":
        return None
    spec = _spec_for(request.resource, config)
    if spec is None:
        return None
    new = _replicas(request.obj, "spec.replicas")
    old = _replicas(request.old_obj, "oldObject.spec.replicas")
    if new is None or (old is not None and new <= old):
        return None  # scaling down never raises the cost
    parent = None
    if config.parents is not None:
        parent = config.parents(spec.group, spec.resource, request.namespace, request.name)
    if parent is None:
        return messages.scale_unpriced(spec.kind, request.name, new)
    before = parent if old is None else _with(parent, spec.scale, old)
    return request._replace(
        group=spec.group,
        kind=spec.kind,
        obj=_with(parent, spec.scale, new),
        old_obj=before,
        resource="",
        sub_resource="",
    )
