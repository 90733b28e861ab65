"""The pricing table as the core reads it: GPU types, the resources that request them, and the
node labels and instance types that name them.

Built once from `pricing/*.yaml` by `webhook.tables`; lookups here are dict hits on the hot path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .gpu_names import is_gpu_name

__all__ = [
    "DEVICE_PREFIX",
    "DeviceClass",
    "GpuType",
    "Memo",
    "PriceTable",
    "ResourceRule",
    "normalize_cel",
    "normalize_label_value",
]

# GPUs a DRA claim asks for are GpuRequests under "deviceclass:<DeviceClass>" (narrowed by a
# selector the table lists: "deviceclass:<DeviceClass>#<GPU id>"); no extended resource can
# be named so (a resource name has no ':').
DEVICE_PREFIX = "deviceclass:"


class Memo(dict[Any, Any]):
    """A bounded dict for pure lookups: emptied whole when full, so request-supplied keys
    cannot grow it without bound. Reads are plain `dict.get` (the hot path); writes go
    through `put`."""

    limit = 4096

    def put(self, key: Any, value: Any) -> Any:
        if len(self) >= self.limit:
            self.clear()
        self[key] = value
        return value


@dataclass(frozen=True, slots=True)
class GpuType:
    id: str
    name: str
    resource: str
    usd_per_hour: float
    source: str = ""
    as_of: str = ""


@dataclass(frozen=True, slots=True)
class ResourceRule:
    """An extended resource that requests GPUs.

    Whole-GPU resources (`fraction` 1) can be any GPU type requested through that resource
    name; a MIG profile is a fraction of one of the parent types in `of`.
    """

    name: str
    fraction: float = 1.0
    of: tuple[str, ...] = ()  # empty: every GPU type whose `resource` is this name


@dataclass(frozen=True, slots=True)
class DeviceClass:
    """A DRA DeviceClass (resource.k8s.io) and the GPU types its devices can be.

    `types` empty with `priced` False: its devices are not GPUs (a NIC class) and cost
    nothing here. `selectors` maps a CEL selector expression (normalize_cel) a claim may
    narrow the class with to the one type it then gets. `max_devices` bounds a request for
    all the devices of the class (allocationMode: All); None leaves it unbounded."""

    name: str
    types: tuple[str, ...]
    selectors: Mapping[str, str] = field(default_factory=dict)
    max_devices: int | None = None
    priced: bool = True


def normalize_cel(expression: str) -> str:
    """A CEL selector as the table compares it: without whitespace, and with one kind of
    quote, so that formatting alone does not make an expression another one."""
    return "".join(expression.split()).replace("'", '"')


def normalize_label_value(value: str) -> str:
    """Fold the decorations GPU feature discovery adds to product names, and case.

    `NVIDIA-A100-SXM4-40GB-MIG-1g.5gb` and `Tesla-T4-SHARED` name the A100 and the T4.
    """
    value = value.strip().lower()
    if value.endswith("-shared"):
        value = value[: -len("-shared")]
    cut = value.find("-mig-")
    if cut > 0:
        value = value[:cut]
    return value


@dataclass(frozen=True, slots=True)
class PriceTable:
    gpus: Mapping[str, GpuType]
    resources: Mapping[str, ResourceRule]
    # label key -> normalized value -> candidate GPU ids (several when a name is ambiguous)
    label_values: Mapping[str, Mapping[str, tuple[str, ...]]]
    instance_type_keys: tuple[str, ...]
    instance_types: Mapping[str, tuple[str, int]]  # instance type -> (GPU id, GPUs per instance)
    source: str = ""
    device_classes: Mapping[str, DeviceClass] = field(default_factory=dict)
    # Derived once: candidates per resource, most expensive first.
    _by_resource: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False)
    _instance_types_folded: dict[str, str] = field(default_factory=dict, repr=False)
    _resource_sets: dict[str, frozenset[str]] = field(default_factory=dict, repr=False)
    memo: Memo = field(default_factory=Memo, repr=False, compare=False)  # see pricing
    gpu_names: Memo = field(default_factory=Memo, repr=False, compare=False)  # name -> is GPU

    def __post_init__(self) -> None:
        for rule in self.resources.values():
            ids = rule.of or tuple(g.id for g in self.gpus.values() if g.resource == rule.name)
            self._by_resource[rule.name] = self.by_price(ids)
            self._resource_sets[rule.name] = frozenset(ids)
        for name, (gpu, _) in self.instance_types.items():
            self._instance_types_folded[name.lower()] = gpu
        for device_class in self.device_classes.values():
            key = DEVICE_PREFIX + device_class.name
            self._by_resource[key] = self.by_price(device_class.types)
            self._resource_sets[key] = frozenset(device_class.types)
            for gpu_id in device_class.selectors.values():
                self._by_resource[f"{key}#{gpu_id}"] = (gpu_id,)
                self._resource_sets[f"{key}#{gpu_id}"] = frozenset((gpu_id,))

    def by_price(self, ids: Iterable[str]) -> tuple[str, ...]:
        """GPU ids, most expensive first (ties by id, so the order is stable)."""
        return tuple(sorted(set(ids), key=self._price_order))

    def is_gpu_resource(self, name: str) -> bool:
        """Whether `name` requests GPUs, by the one rule the webhooks' matchConditions apply
        too (`gpu_names`): known GPU resources, and names that look like one, so that a GPU
        under an unpriced name cannot slip through as a CPU-only pod. Every name the table
        lists matches the rule (the table is refused otherwise)."""
        known = self.gpu_names.get(name)
        if known is None:
            known = self.gpu_names.put(name, is_gpu_name(name))
        return bool(known)

    def candidates(self, resource: str) -> tuple[str, ...]:
        """GPU types a resource can be, most expensive first; empty for unknown resources."""
        return self._by_resource.get(resource, ())

    def dearest_fitting(self, resource: str, types: frozenset[str]) -> str | None:
        """The dearest of `types` that `resource` can be, or None."""
        allowed = self._resource_sets.get(resource, ())
        fitting = [gpu_id for gpu_id in types if gpu_id in allowed]
        if not fitting:
            return None
        return min(fitting, key=self._price_order)  # the same order as by_price

    def device_resource(self, class_name: str, expressions: Iterable[str]) -> str | None:
        """The GPU resource (DEVICE_PREFIX...) a DRA request for devices of `class_name`,
        with these CEL selectors, is priced as; None for a class whose devices are not GPUs.
        A class the table lacks gives a resource with no candidates: the unknown-gpu rule
        prices it."""
        device_class = self.device_classes.get(class_name)
        key = DEVICE_PREFIX + class_name
        if device_class is None:
            return key
        if not device_class.priced:
            return None
        if device_class.selectors:
            # selectors are ANDed: any one listed pins the type (two that contradict
            # allocate nothing; the dearer reading is the safe one)
            narrowed = [
                gpu_id
                for expression in expressions
                if (gpu_id := device_class.selectors.get(normalize_cel(expression)))
            ]
            if narrowed:
                return f"{key}#{self.by_price(narrowed)[0]}"
        return key

    def device_class_of(self, resource: str) -> str | None:
        """The DeviceClass a DRA GPU resource names; None for an extended resource."""
        if not resource.startswith(DEVICE_PREFIX):
            return None
        return resource[len(DEVICE_PREFIX) :].partition("#")[0]

    def line_types(self, resource: str, candidates: frozenset[str]) -> frozenset[str]:
        """The GPU types one GPU resource of a pod may be, given what its placement pins
        (`candidates`): a DeviceClass of one type pins it whatever the placement says; one of
        several is narrowed by the placement, and pins nothing without it."""
        if not resource.startswith(DEVICE_PREFIX):
            return candidates
        own = self._resource_sets.get(resource, frozenset())
        if len(own) == 1:
            return own
        if not candidates:
            return frozenset()
        return (candidates & own) or own

    def _price_order(self, gpu_id: str) -> tuple[float, str]:
        return (-self.gpus[gpu_id].usd_per_hour, gpu_id)

    def most_expensive(self) -> str:
        return self.by_price(self.gpus)[0]

    def types_for_label(self, key: str, value: str) -> tuple[str, ...] | None:
        """GPU types a node label names; None when the key is not a GPU-naming key,
        () when the key is known but the value names no type in the table."""
        values = self.label_values.get(key)
        if values is not None:
            return values.get(normalize_label_value(value), ())
        if key in self.instance_type_keys:
            gpu = self._instance_types_folded.get(value.strip().lower())
            return (gpu,) if gpu else ()
        return None

    def resolve_alias(self, text: str) -> tuple[str, ...]:
        """GPU ids a free-text type names (the gpu-type annotation): an id, or any alias."""
        folded = normalize_label_value(text)
        if folded in self.gpus:
            return (folded,)
        found: set[str] = set()
        for values in self.label_values.values():
            found.update(values.get(folded, ()))
        gpu = self._instance_types_folded.get(folded)
        if gpu:
            found.add(gpu)
        return self.by_price(found)
