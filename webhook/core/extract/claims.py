"""Dynamic Resource Allocation (resource.k8s.io/v1): the GPUs a pod gets through
`spec.resourceClaims` rather than a GPU resource, and the ResourceClaims and
ResourceClaimTemplates that hold the counts.

A pod names a claim template (one claim, so one set of devices, per pod) or a ResourceClaim
(shared by every pod that names it). Either is read through the config's `claims` lookup
(the watch cache, or the files given to `costgate estimate`); one it cannot read is
`unresolved`, which the namespace's unresolved_templates denies or warns about. A request
asks for `count` devices (allocationMode ExactCount) or every device its DeviceClass can
match (All): bounded only by the class's `max_devices` in the pricing table. Of the
alternatives of `firstAvailable`, the dearest is priced. The DeviceClass and the CEL
selectors the table lists give the GPU type (catalog.PriceTable.device_resource).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import messages
from ..catalog import PriceTable
from ..config import ClaimLookup, Config
from ..types import GpuRequest, Reason, Request, Workload
from .podspec import ObjectError, field, identity, read_metadata

__all__ = [
    "CLAIM_KINDS",
    "extract_resource_claim",
    "extract_resource_claim_template",
    "with_claims",
]

CLAIM_KINDS = frozenset({"ResourceClaim", "ResourceClaimTemplate"})

# Devices of one request: (GPU resource, count); count None: unbounded (All, no max_devices).
_Devices = tuple[str, int | None]


def _selectors(request: Mapping[str, Any], path: str) -> list[str]:
    expressions = []
    for i, selector in enumerate(field(request, "selectors", path, list, ())):
        where = f"{path}.selectors[{i}]"
        if type(selector) is not dict:
            raise ObjectError(where, "object", selector)
        cel = field(selector, "cel", where, dict, {})
        expressions.append(field(cel, "expression", f"{where}.cel", str, ""))
    return expressions


def _devices(request: Mapping[str, Any], path: str, table: PriceTable) -> _Devices | None:
    """The devices one exact request (or firstAvailable subrequest) asks for; None when its
    class's devices are not GPUs."""
    class_name = field(request, "deviceClassName", path, str, "")
    resource = table.device_resource(class_name, _selectors(request, path))
    if resource is None:
        return None
    mode = field(request, "allocationMode", path, str, "ExactCount")
    if mode == "All":
        device_class = table.device_classes.get(class_name)
        return resource, device_class.max_devices if device_class else None
    if mode != "ExactCount":
        raise ObjectError(f"{path}.allocationMode", "ExactCount or All", mode)
    count = field(request, "count", path, int, 1)
    if count < 1:
        raise ObjectError(f"{path}.count", "int", count)
    return resource, count


def _rate(devices: _Devices, table: PriceTable) -> float:
    resource, count = devices
    if count is None:
        return float("inf")
    candidates = table.candidates(resource)
    return count * table.gpus[candidates[0] if candidates else table.most_expensive()].usd_per_hour


def read_claim_spec(
    spec: Mapping[str, Any], path: str, table: PriceTable, problems: list[Reason]
) -> dict[str, int]:
    """GPU resource -> devices of a ResourceClaimSpec; an unbounded request is a problem."""
    found: dict[str, int] = {}
    devices = field(spec, "devices", path, dict, {})
    path = f"{path}.devices"
    for i, request in enumerate(field(devices, "requests", path, list, ())):
        where = f"{path}.requests[{i}]"
        if type(request) is not dict:
            raise ObjectError(where, "object", request)
        exactly = field(request, "exactly", where, dict, None)
        if exactly is not None:
            chosen = _devices(exactly, f"{where}.exactly", table)
        else:
            # firstAvailable: the scheduler takes the first that fits; any may be the one
            priced = []
            for j, sub in enumerate(field(request, "firstAvailable", where, list, ())):
                if type(sub) is not dict:
                    raise ObjectError(f"{where}.firstAvailable[{j}]", "object", sub)
                option = _devices(sub, f"{where}.firstAvailable[{j}]", table)
                if option is not None:
                    priced.append(option)
            chosen = max(priced, key=lambda o: _rate(o, table)) if priced else None
        if chosen is None:
            continue
        resource, count = chosen
        if count is None:
            class_name = table.device_class_of(resource) or ""
            problems.append(
                Reason("invalid-gpu-request", messages.unbounded_devices(where, class_name))
            )
            continue
        found[resource] = found.get(resource, 0) + count
    return found


def with_claims(
    gpus: tuple[GpuRequest, ...],
    claims: Any,
    path: str,
    namespace: str,
    problems: list[Reason],
    *,
    table: PriceTable,
    lookup: ClaimLookup | None,
) -> tuple[tuple[GpuRequest, ...], tuple[str, ...]]:
    """A pod's GPUs with the devices of its `spec.resourceClaims` added, and what could not
    be read (claims and templates the lookup does not know)."""
    where = f"{path}.resourceClaims"
    if type(claims) is not list:
        raise ObjectError(where, "list", claims)
    total = {g.resource: g.units for g in gpus}
    unresolved: list[str] = []
    for i, claim in enumerate(claims):
        at = f"{where}[{i}]"
        if type(claim) is not dict:
            raise ObjectError(at, "object", claim)
        template = field(claim, "resourceClaimTemplateName", at, str, "")
        name = template or field(claim, "resourceClaimName", at, str, "")
        if not name:
            continue  # the API server requires one of the two
        kind = "ResourceClaimTemplate" if template else "ResourceClaim"
        found = lookup(kind, namespace, name) if lookup else None
        if not isinstance(found, Mapping):
            unresolved.append(messages.claim_not_found(kind, name, str(claim.get("name", ""))))
            continue
        spec = found.get("spec") if template else found  # a template's claim spec
        if not isinstance(spec, Mapping):
            continue
        try:
            devices = read_claim_spec(spec, f"{kind} {name}: spec", table, problems)
        except ObjectError as exc:  # another object's fault: the pod cannot be priced
            unresolved.append(str(exc))
            continue
        for resource, count in devices.items():
            total[resource] = total.get(resource, 0) + count
    merged = tuple(GpuRequest(r, n) for r, n in sorted(total.items()) if n > 0)
    return merged, tuple(unresolved)


def _claim_workload(
    request: Request, config: Config, kind: str, spec: Any, path: str
) -> Workload | None:
    """A claim or claim template: nothing to price here (its pods are priced with it), but
    a class the table does not know (as unknown_gpu says) or an unbounded request is refused
    now, and what it asks for is said."""
    metadata, labels, annotations = read_metadata(request.obj)
    namespace, name, generate_name = identity(request, metadata)
    table = config.table
    problems: list[Reason] = []
    devices = read_claim_spec(spec if spec is not None else {}, path, table, problems)
    notes: list[str] = []
    unknown = sorted(
        {c for r in devices if (c := table.device_class_of(r)) and c not in table.device_classes}
    )
    if unknown:
        if config.policy.for_namespace(namespace).unknown_gpu == "deny":
            text = messages.unknown_device_class_denied(unknown, namespace)
            problems.append(Reason("unknown-gpu-type", text))
        else:
            gpu = table.gpus[table.most_expensive()]
            notes.append(messages.unknown_device_class_priced(unknown, gpu.id, gpu.usd_per_hour))
    if not devices and not problems:
        return None  # devices that are not GPUs
    if devices and not problems:
        lines = []
        for resource, count in sorted(devices.items()):
            candidates = table.candidates(resource)
            gpu = table.gpus[candidates[0] if candidates else table.most_expensive()]
            lines.append((count, gpu.id, gpu.usd_per_hour))
        notes.insert(0, messages.claim_devices(kind, name or generate_name, lines))
    return Workload(
        kind=kind,
        namespace=namespace,
        name=name,
        generate_name=generate_name,
        labels=labels,
        annotations=annotations,
        workload_class="batch",
        pods=(),
        existing_deadline=None,
        deadline_path="",
        problems=tuple(problems),
        notes=tuple(notes),
        informational=True,
    )


def extract_resource_claim_template(request: Request, config: Config, /) -> Workload | None:
    """A ResourceClaimTemplate: checked (its pods are priced with it)."""
    spec = field(request.obj, "spec", "", dict, {})
    claim_spec = field(spec, "spec", "spec", dict, {})
    return _claim_workload(request, config, "ResourceClaimTemplate", claim_spec, "spec.spec")


def extract_resource_claim(request: Request, config: Config, /) -> Workload | None:
    """A ResourceClaim: checked (the pods that name it are priced with it)."""
    spec = field(request.obj, "spec", "", dict, {})
    return _claim_workload(request, config, "ResourceClaim", spec, "spec")
