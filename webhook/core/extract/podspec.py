"""A PodSpec's GPU demand and placement: shared by every kind that carries pod templates.

The effective GPU request follows the scheduler (k8s.io/component-helpers PodRequests):
max(limit, request) per container; regular containers and restartable (sidecar) init
containers add up, each plain init container runs alone next to the sidecars started before
it, and the larger of the two wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import messages
from ..catalog import PriceTable
from ..quantities import MAX_DEADLINE_SECONDS, parse_quantity
from ..types import ANNOTATION_GPU_TYPE, GpuRequest, Placement, Reason, Request

__all__ = [
    "ObjectError",
    "field",
    "identity",
    "pointer",
    "read_deadline",
    "read_gpus",
    "read_grace",
    "read_metadata",
    "read_placement",
]


_MAX_INT64 = 2**63 - 1


class ObjectError(Exception):
    """The object has a field of the wrong type or range: the request cannot be read."""

    def __init__(self, path: str, expected: str, value: object, *, message: str = "") -> None:
        message = message or messages.wrong_type(path, expected, value)
        super().__init__(message)
        self.reason = Reason("invalid-request", message)


def field(obj: Mapping[str, Any], key: str, path: str, expected: type, default: Any) -> Any:
    """obj[key] if it has the expected type, default if absent or null; ObjectError otherwise."""
    value = obj.get(key)
    if value is None:
        return default
    if type(value) is not expected:
        raise ObjectError(f"{path}.{key}" if path else key, expected.__name__, value)
    return value


def _container_gpus(
    container: Any, where: str, index: int, table: PriceTable, problems: list[Reason]
) -> dict[str, int] | None:
    """max(limit, request) per GPU resource of one container; None when it has none.
    `where`/`index` name the container in errors only (paths are not built on the hot path)."""
    if type(container) is not dict:
        raise ObjectError(f"{where}[{index}]", "object", container)
    resources = container.get("resources")
    if not resources:
        return None
    if type(resources) is not dict:
        raise ObjectError(f"{where}[{index}].resources", "object", resources)
    found: dict[str, int] | None = None
    known = table.gpu_names  # resource name -> is it a GPU, remembered
    first = len(problems)  # this container's problems start here
    for side in ("limits", "requests"):
        amounts = resources.get(side)
        if not amounts:
            continue
        if type(amounts) is not dict:
            raise ObjectError(f"{where}[{index}].resources.{side}", "object", amounts)
        for name, raw in amounts.items():
            gpu = known.get(name)
            if gpu is None:
                gpu = table.is_gpu_resource(name)
            if not gpu:
                continue
            # "8": the usual case; longer digit strings go to the bounded parser (int() of
            # 5,000 digits raises)
            if type(raw) is str and len(raw) < 10 and raw.isascii() and raw.isdigit():
                count = int(raw)
            else:
                quantity = parse_quantity(raw)
                if quantity is None or quantity < 0 or quantity != quantity.to_integral_value():
                    text = messages.invalid_gpu_quantity(
                        container.get("name") or f"{where}[{index}]", name, raw
                    )
                    # limits repeat requests. This container's problems only: comparing
                    # all is quadratic in 10,000 bad containers (decide drops duplicates)
                    if not any(p.message == text for p in problems[first:]):
                        problems.append(Reason("invalid-gpu-request", text))
                    continue
                count = int(quantity)
            if found is None:
                found = {}
            if count > found.get(name, -1):
                found[name] = count
    return found


def _add(into: dict[str, int], more: Mapping[str, int] | None) -> None:
    if more:
        for name, count in more.items():
            into[name] = into.get(name, 0) + count


def read_gpus(
    spec: Mapping[str, Any], path: str, table: PriceTable, problems: list[Reason]
) -> tuple[GpuRequest, ...]:
    """The effective GPU request of a PodSpec, one entry per GPU resource with a count > 0."""
    total: dict[str, int] = {}
    where = f"{path}.containers" if path else "containers"
    for i, container in enumerate(field(spec, "containers", path, list, ())):
        _add(total, _container_gpus(container, where, i, table, problems))

    init_containers = field(spec, "initContainers", path, list, ())
    if init_containers:
        init_peak: dict[str, int] = {}
        sidecars: dict[str, int] = {}
        where = f"{path}.initContainers" if path else "initContainers"
        for i, container in enumerate(init_containers):
            gpus = _container_gpus(container, where, i, table, problems)
            running = dict(sidecars)
            _add(running, gpus)
            if container.get("restartPolicy") == "Always":  # a sidecar keeps running
                sidecars = running
            for name, count in running.items():
                if count > init_peak.get(name, 0):
                    init_peak[name] = count
        _add(total, sidecars)
        for name, count in init_peak.items():
            if count > total.get(name, 0):
                total[name] = count
    if not total:
        return ()
    return tuple(GpuRequest(name, count) for name, count in sorted(total.items()) if count > 0)


def read_metadata(
    obj: Mapping[str, Any], path: str = ""
) -> tuple[Mapping[str, Any], dict[str, str], dict[str, str]]:
    """metadata, labels and annotations of an object (or template), with their types checked."""
    metadata = field(obj, "metadata", path, dict, {})
    where = f"{path}.metadata" if path else "metadata"
    labels = field(metadata, "labels", where, dict, {})
    annotations = field(metadata, "annotations", where, dict, {})
    return metadata, labels, annotations


def identity(request: Request, metadata: Mapping[str, Any]) -> tuple[str, str, str]:
    """(namespace, name, generateName): the request's when it names them, else the object's.
    The mutating webhook sees generateName objects before they have a name."""
    return (
        request.namespace or str(metadata.get("namespace") or ""),
        request.name or str(metadata.get("name") or ""),
        str(metadata.get("generateName") or ""),
    )


def pointer(path: str) -> str:
    """The JSON Pointer of a field path as errors name it (`spec.jobTemplate.spec` ->
    `/spec/jobTemplate/spec`): what a patch writes is what was read. No escapes needed."""
    return "/" + path.replace(".", "/")


def _seconds(spec: Mapping[str, Any], key: str, path: str, high: int) -> int | None:
    """spec[key], checked (None when unset): a whole number of seconds from 0 to `high`, as
    the API server requires."""
    value = spec.get(key)
    if value is None:
        return None
    where = f"{path}.{key}"
    if type(value) is not int:
        raise ObjectError(where, "int", value)
    if not 0 <= value <= high:
        raise ObjectError(where, "int", value, message=messages.out_of_range(where, value, high))
    return value


def read_deadline(spec: Mapping[str, Any], path: str) -> int | None:
    """spec.activeDeadlineSeconds, checked: a whole number the API server would accept."""
    return _seconds(spec, "activeDeadlineSeconds", path, MAX_DEADLINE_SECONDS)


def read_grace(spec: Mapping[str, Any], path: str) -> int | None:
    """spec.terminationGracePeriodSeconds, checked: up to int64's largest (the policy caps
    it)."""
    return _seconds(spec, "terminationGracePeriodSeconds", path, _MAX_INT64)


def _required_terms(
    affinity: Any, path: str
) -> tuple[tuple[tuple[str, str, tuple[str, ...]], ...], ...]:
    """The required node-affinity terms as (key, operator, values) tuples."""
    where = f"{path}.affinity"
    if type(affinity) is not dict:
        raise ObjectError(where, "object", affinity)
    node_affinity = field(affinity, "nodeAffinity", where, dict, {})
    where += ".nodeAffinity"
    required = field(
        node_affinity, "requiredDuringSchedulingIgnoredDuringExecution", where, dict, {}
    )
    where += ".requiredDuringSchedulingIgnoredDuringExecution"
    terms = []
    for t, term in enumerate(field(required, "nodeSelectorTerms", where, list, ())):
        tp = f"{where}.nodeSelectorTerms[{t}]"
        if type(term) is not dict:
            raise ObjectError(tp, "object", term)
        exprs = []
        for e, expr in enumerate(field(term, "matchExpressions", tp, list, ())):
            ep = f"{tp}.matchExpressions[{e}]"
            if type(expr) is not dict:
                raise ObjectError(ep, "object", expr)
            values = field(expr, "values", ep, list, ())
            key, operator = str(expr.get("key", "")), str(expr.get("operator", ""))
            exprs.append((key, operator, tuple(str(v) for v in values)))
        terms.append(tuple(exprs))
    return tuple(terms)


def read_placement(spec: Mapping[str, Any], path: str, annotations: Mapping[str, str]) -> Placement:
    """Where the pod may run, as far as GPU type goes: annotation, nodeSelector, required
    node affinity. Preferred affinity does not constrain placement and is ignored."""
    selector = spec.get("nodeSelector")
    if selector and type(selector) is not dict:
        raise ObjectError(f"{path}.nodeSelector", "dict", selector)
    affinity = spec.get("affinity")
    annotation = annotations.get(ANNOTATION_GPU_TYPE, "")
    return Placement(
        annotation if type(annotation) is str else "",
        tuple((str(k), str(v)) for k, v in selector.items()) if selector else (),
        _required_terms(affinity, path) if affinity else (),
    )
