"""Any kind the kinds table describes (`kindspec`), read into a Workload: Deployments,
StatefulSets, ReplicaSets, DaemonSets and the ML operators' objects, and whatever a policy
adds. One reader for all of them, so a new operator is data, not code.

Each template entry names the element(s) holding a pod template, and how many pods of it run
at once: replicas (an autoscaler's maximum when it has one), times factors such as hosts per
worker group. The PodSpec readers are the ones Pods and Jobs use.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from .. import messages
from ..config import Config
from ..kindspec import KindSpec, TemplateSpec, split_path
from ..quantities import MAX_DEADLINE_SECONDS
from ..types import ANNOTATION_PRICED_BY, GpuRequest, PodShape, Reason, Request, Workload
from .claims import with_claims
from .owner import owner_class
from .podspec import (
    ObjectError,
    field,
    identity,
    read_gpus,
    read_grace,
    read_metadata,
    read_placement,
)

__all__ = ["extract_table", "priced_by"]

_MISSING = object()


def priced_by(spec: KindSpec) -> str:
    """The value of the costgate.io/priced-by annotation on this kind's pod templates."""
    return f"{spec.group}/{spec.kind}" if spec.group else spec.kind


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _walk(
    node: Any, tokens: tuple[str, ...], path: str, ptr: str, key: str
) -> Iterator[tuple[str, str, str, Any]]:
    """(key, path, JSON pointer, element) of every element the tokens reach; `key` is the
    last map key a `*` took (the role of a PyTorchJob replica spec)."""
    if not tokens:
        yield key, path, ptr, node
        return
    token, rest = tokens[0], tokens[1:]
    if token == "*":
        if type(node) is not dict:
            raise ObjectError(path, "object", node)
        for name, value in node.items():
            if value is not None:
                yield from _walk(value, rest, f"{path}.{name}", f"{ptr}/{_escape(name)}", name)
    elif token == "[*]":
        if type(node) is not list:
            raise ObjectError(path, "list", node)
        for i, value in enumerate(node):
            if value is not None:
                yield from _walk(value, rest, f"{path}[{i}]", f"{ptr}/{i}", key)
    else:
        if type(node) is not dict:
            raise ObjectError(path, "object", node)
        value = node.get(token)
        if value is not None:
            where = f"{path}.{token}" if path else token
            yield from _walk(value, rest, where, f"{ptr}/{_escape(token)}", key)


def _get(root: Mapping[str, Any], element: Any, path: str, where: str) -> tuple[Any, str]:
    """The value at `path` (relative to element, or from the root after `$.`), and its path
    for errors; _MISSING when unset."""
    node: Any = element
    if path.startswith("$."):
        node, path, where = root, path[2:], ""
    for token in split_path(path):
        if type(node) is not dict:
            raise ObjectError(where, "object", node)
        node = node.get(token)
        where = f"{where}.{token}" if where else token
        if node is None:
            return _MISSING, where
    return node, where


def _count(root: Mapping[str, Any], element: Any, path: str, where: str, default: int) -> int:
    value, at = _get(root, element, path, where)
    if value is _MISSING:
        return default
    if type(value) is not int or value < 0:
        raise ObjectError(at, "int", value)
    return value


def _replicas(
    spec: KindSpec,
    entry: TemplateSpec,
    root: Mapping[str, Any],
    element: Any,
    where: str,
    annotations: Mapping[str, str],
    name: str,
    problems: list[Reason],
) -> int:
    """How many pods of this template run at once at most."""
    if entry.count_annotation:
        raw = annotations.get(entry.count_annotation)
        if raw is None:
            if entry.unbounded:
                text = messages.unbounded_count(spec.kind, name, entry.count_annotation)
                problems.append(Reason("invalid-gpu-request", text))
            return 0
        if type(raw) is not str or not raw.isascii() or not raw.isdigit() or len(raw) > 6:
            raise ObjectError(f"metadata.annotations.{entry.count_annotation}", "whole number", raw)
        count = int(raw)
    else:
        count = entry.default_replicas
        if entry.replicas:
            count = _count(root, element, entry.replicas, where, entry.default_replicas)
        most = -1  # unset
        if entry.max_replicas:
            scaled = True
            if entry.autoscaling:
                scaled = _get(root, element, entry.autoscaling, where)[0] is True
            if scaled:
                most = _count(root, element, entry.max_replicas, where, -1)
        if most >= 0:
            count = max(count, most)
        elif entry.min_replicas:
            count = max(count, _count(root, element, entry.min_replicas, where, 0))
    for factor in entry.factors:
        value = _count(root, element, factor.path, where, factor.default)
        if factor.minus:
            present = True
            if factor.minus_unless:
                present = _get(root, element, factor.minus_unless, where)[0] is not _MISSING
            if present:
                value = max(0, value - factor.minus)
        count *= value
    return count


def _pod_spec(
    entry: TemplateSpec, element: Any, where: str, ptr: str
) -> tuple[Mapping[str, Any], str, Mapping[str, Any], str, str]:
    """(PodSpec, its path, the mapping holding labels/annotations (or the template), the
    metadata pointer copies go to, how the template's metadata is read)."""
    if type(element) is not dict:
        raise ObjectError(where, "object", element)
    if entry.pod_spec:
        spec = element if entry.pod_spec == "." else field(element, entry.pod_spec, where, dict, {})
        path = where if entry.pod_spec == "." else f"{where}.{entry.pod_spec}"
        return spec, path, element, ptr, "inline"
    template = element
    path = where
    t_ptr = ptr
    for token in split_path(entry.template):
        template = field(template, token, path, dict, {})
        path = f"{path}.{token}"
        t_ptr = f"{t_ptr}/{_escape(token)}"
    return field(template, "spec", path, dict, {}), f"{path}.spec", template, t_ptr, path


def _extra_gpus(
    entry: TemplateSpec, element: Mapping[str, Any], where: str, config: Config, found: list[Reason]
) -> tuple[GpuRequest, ...]:
    """GPUs of single containers kept beside the PodSpec (KServe's `model`, `pytorch`...)."""
    extra = [element[key] for key in entry.containers if element.get(key) is not None]
    if not extra:
        return ()
    return read_gpus({"containers": extra}, where, config.table, found)


def _merge(a: tuple[GpuRequest, ...], b: tuple[GpuRequest, ...]) -> tuple[GpuRequest, ...]:
    if not b:
        return a
    total: dict[str, int] = {}
    for request in (*a, *b):
        total[request.resource] = total.get(request.resource, 0) + request.units
    return tuple(GpuRequest(name, units) for name, units in sorted(total.items()))


def _seconds_at(obj: Mapping[str, Any], path: str) -> tuple[int | None, bool]:
    """The deadline at `path` (None: unset) and whether its parent object exists."""
    node: Any = obj
    where = ""
    tokens = split_path(path)
    for token in tokens[:-1]:
        node = field(node, token, where, dict, None)
        where = f"{where}.{token}" if where else token
        if node is None:
            return None, False
    key = tokens[-1]
    value = node.get(key)
    at = f"{where}.{key}"
    if value is None:
        return None, True
    if type(value) is not int:
        raise ObjectError(at, "int", value)
    if not 0 <= value <= MAX_DEADLINE_SECONDS:
        raise ObjectError(
            at, "int", value, message=messages.out_of_range(at, value, MAX_DEADLINE_SECONDS)
        )
    return value, True


def _flag(obj: Mapping[str, Any], path: str) -> bool:
    value, at = _get(obj, obj, path, "")
    if value is _MISSING:
        return False
    if type(value) is not bool:
        raise ObjectError(at, "bool", value)
    return value


def extract_table(request: Request, config: Config, /) -> Workload | None:
    """The GPU workload of an object of a kind in the kinds table; None when none of its pod
    templates asks for a GPU (or the kind is not in the table)."""
    spec = config.policy.kinds.get((request.group, request.kind))
    if spec is None:
        return None
    obj = request.obj
    metadata, labels, annotations = read_metadata(obj)
    problems: list[Reason] = []
    unresolved: list[str] = []  # claims the lookup does not know
    shapes: list[PodShape] = []
    copy_to: list[str] = []
    pod_labels: dict[str, str] = {}
    pod_annotations: dict[str, str] = {}
    namespace, name, generate_name = identity(request, metadata)
    display = name or (f"{generate_name}*" if generate_name else "(unnamed)")
    for entry in spec.templates:
        for key, where, ptr, element in _walk(obj, split_path(entry.each), "", "", ""):
            pod_spec, spec_path, holder, meta_ptr, how = _pod_spec(entry, element, where, ptr)
            gpus = read_gpus(pod_spec, spec_path, config.table, problems)
            if entry.containers:
                gpus = _merge(gpus, _extra_gpus(entry, holder, where, config, problems))
            claims = pod_spec.get("resourceClaims")
            if claims:  # DRA: a JobSet's or a Deployment's pods may get GPUs through claims
                gpus, missing = with_claims(
                    gpus,
                    claims,
                    spec_path,
                    namespace,
                    problems,
                    table=config.table,
                    lookup=config.claims,
                )
                unresolved.extend(missing)
            if how == "inline":
                t_labels = field(holder, "labels", where, dict, {})
                t_annotations = field(holder, "annotations", where, dict, {})
                copy_to.append(meta_ptr)
            else:
                _, t_labels, t_annotations = read_metadata(holder, how)
                copy_to.append(f"{meta_ptr}/metadata")
            pod_labels = {**t_labels, **pod_labels}
            pod_annotations = {**t_annotations, **pod_annotations}
            if not gpus:
                continue
            merged = {**t_annotations, **annotations}
            count = _replicas(spec, entry, obj, element, where, merged, display, problems)
            shapes.append(
                PodShape(
                    label=entry.label or key,
                    gpus=gpus,
                    placement=read_placement(pod_spec, spec_path, merged),
                    replicas=count,
                    grace=read_grace(pod_spec, spec_path),
                )
            )
    if not shapes and not problems and not unresolved:
        return None
    existing, _ = _seconds_at(obj, spec.deadline) if spec.deadline else (None, False)
    owner = owner_class(metadata, request.username, config.policy, created=spec.kind)
    # The pods carry the mark of the kind that priced them, so that the controllers' pods are
    # not priced again (extract/owner.py) and quotas still count them (holding.py).
    merged_annotations = {**pod_annotations, **annotations, ANNOTATION_PRICED_BY: priced_by(spec)}
    batch = spec.workload_class == "batch"
    return Workload(
        kind=spec.kind,
        namespace=namespace,
        name=name,
        generate_name=generate_name,
        labels={**pod_labels, **labels},
        annotations=merged_annotations,
        workload_class="controlled" if owner == "controlled" else spec.workload_class,
        pods=tuple(shapes),
        existing_deadline=existing,
        deadline_path="/" + spec.deadline.replace(".", "/") if spec.deadline else "",
        problems=tuple(problems),
        unresolved=tuple(unresolved),
        copy_to=tuple(copy_to),
        notes=(messages.no_deadline_field(priced_by(spec)),) if batch and not spec.deadline else (),
        suspended=bool(spec.suspend) and batch and _flag(obj, spec.suspend),
    )
