"""Pricing and policy files: YAML -> validated once (pydantic) -> the core's frozen types.

A bad file is refused with a message naming the file and the field, e.g.
`pricing/default.yaml: gpus.h100-80gb.usd_per_hour: Input should be greater than 0`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from fractions import Fraction
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from .core.catalog import (
    DeviceClass,
    GpuType,
    PriceTable,
    ResourceRule,
    normalize_cel,
    normalize_label_value,
)
from .core.config import Config
from .core.extract.kinds import EXTRACTORS
from .core.kindspec import Factor, KindSpec, TemplateSpec
from .core.policy import ApproverIdentities, NamespacePolicy, Policy, TrustedController
from .core.quantities import parse_duration
from .core.types import ApprovalVerifier
from .core.usage import Budget, Quota
from .embedded_yaml import parse_embedded_yaml
from .kinds_schema import _Kind, _KindsFile
from .table_schema import _Budget, _NamespaceRules, _Policy, _Pricing, _Quota

__all__ = [
    "BUNDLED_KINDS",
    "BUNDLED_POLICY",
    "BUNDLED_PRICING",
    "TableError",
    "check_gpu_names",
    "load_config",
    "load_kinds",
    "load_policy",
    "load_pricing",
    "parse_policy",
    "parse_pricing",
]

_DEFAULTS = Path(__file__).parent / "defaults"
BUNDLED_PRICING = _DEFAULTS / "pricing.yaml"  # a link to pricing/default.yaml in the repository
BUNDLED_POLICY = _DEFAULTS / "policy.yaml"
BUNDLED_KINDS = _DEFAULTS / "kinds.yaml"  # the kinds table entries costgate ships


class TableError(ValueError):
    """A pricing or policy file that cannot be used; the message names file and field."""


def _read(path: Path, what: str) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TableError(f"{path}: cannot read the {what} file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise TableError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TableError(f"{path}: not valid YAML: {exc}") from None


_M = TypeVar("_M", bound=BaseModel)


def _validate(model: type[_M], data: object, origin: str) -> _M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise TableError(f"{origin}: {where}: {first['msg']}{more}") from None


def parse_pricing(data: object, origin: str = "pricing") -> PriceTable:
    """A validated PriceTable from parsed YAML; TableError naming `origin` and the field."""
    model = _validate(_Pricing, data, origin)
    gpus = {
        gpu_id: GpuType(
            id=gpu_id,
            name=g.name,
            resource=g.resource,
            usd_per_hour=g.usd_per_hour,
            source=g.source,
            as_of=g.as_of,
        )
        for gpu_id, g in model.gpus.items()
    }
    resources = {}
    for name, rule in model.resources.items():
        of = tuple(rule.of)
        if rule.like:
            of = tuple(g.id for g in gpus.values() if g.resource == rule.like)
        resources[name] = ResourceRule(
            name=name,
            fraction=float(Fraction(str(rule.fraction))),
            of=of,
        )
    label_values: dict[str, dict[str, tuple[str, ...]]] = {key: {} for key in model.label_keys}
    for gpu_id, g in model.gpus.items():
        for key, values in g.aliases.items():
            for value in values:
                folded = normalize_label_value(value)
                label_values[key][folded] = (*label_values[key].get(folded, ()), gpu_id)
    device_classes = {}
    for name, device in model.device_classes.items():
        if device.type is not None:
            types: tuple[str, ...] = (device.type,)
        elif device.like is not None:
            like = resources[device.like]
            types = like.of or tuple(g.id for g in gpus.values() if g.resource == device.like)
        else:
            types = ()
        device_classes[name] = DeviceClass(
            name=name,
            types=types,
            selectors={normalize_cel(s.cel): s.type for s in device.selectors},
            max_devices=device.max_devices,
            priced=device.priced,
        )
    return PriceTable(
        gpus=gpus,
        resources=resources,
        label_values=label_values,
        instance_type_keys=tuple(model.instance_type_label_keys),
        instance_types={n: (i.gpu, i.count) for n, i in model.instance_types.items()},
        source=origin,
        device_classes=device_classes,
    )


def _kind_spec(model: _Kind, origin: str) -> KindSpec:
    return KindSpec(
        group=model.group,
        kind=model.kind,
        workload_class=model.workload_class,
        templates=tuple(
            TemplateSpec(
                label=t.label,
                each=t.each,
                template="" if t.pod_spec else t.template,
                pod_spec=t.pod_spec,
                containers=tuple(t.containers),
                replicas=t.replicas,
                default_replicas=t.default_replicas,
                max_replicas=t.max_replicas,
                autoscaling=t.autoscaling,
                min_replicas=t.min_replicas,
                count_annotation=t.count_annotation,
                unbounded=t.unbounded,
                factors=tuple(
                    Factor(f.path, f.default, f.minus, f.minus_unless) for f in t.factors
                ),
            )
            for t in model.templates
        ),
        deadline=model.deadline,
        suspend=model.suspend,
        source=origin,
        resource=model.resource,
        scale=model.scale,
    )


def _kinds(
    models: Iterable[_Kind], origin: str, where: str = "kinds"
) -> dict[tuple[str, str], KindSpec]:
    found: dict[tuple[str, str], KindSpec] = {}
    for i, model in enumerate(models):
        key = (model.group, model.kind)
        if key in EXTRACTORS:
            # Pods, Jobs and Argo's kinds are read by code that knows their semantics
            raise TableError(
                f"{origin}: {where}.{i}: {model.group or 'core'}/{model.kind} has a reader of "
                "its own and cannot be described in the kinds table"
            )
        if key in found:
            raise TableError(f"{origin}: {where}.{i}: {model.group}/{model.kind} is listed twice")
        found[key] = _kind_spec(model, origin)
    return found


def parse_kinds(data: object, origin: str = "kinds") -> Mapping[tuple[str, str], KindSpec]:
    """The kinds table entries of a kinds file; TableError naming `origin` and the field."""
    return _kinds(_validate(_KindsFile, data, origin).kinds, origin)


@functools.cache
def load_kinds(path: Path | None = None) -> Mapping[tuple[str, str], KindSpec]:
    """The shipped kinds table (read once: it is part of the package)."""
    path = path or BUNDLED_KINDS
    return parse_kinds(_read(path, "kinds"), str(path))


def _quota(rules: _Quota) -> Quota:
    return Quota(
        rules.max_gpus, tuple(sorted(rules.max_gpus_by_type.items())), rules.max_committed_usd
    )


def _budget(rules: _Budget) -> Budget:
    return Budget(
        rules.usd,
        rules.period,
        tuple(sorted(rules.experiments.items())),
        rules.namespace_usd,
        rules.unlisted_experiments,
    )


def _approvers(names: list[str] | None, groups: dict[str, list[str]], where: str) -> frozenset[str]:
    found: set[str] = set()
    for name in names or ():
        if name.startswith("group:"):
            group = name.removeprefix("group:")
            if group not in groups:
                raise TableError(f"{where}: approvers: unknown group {group!r}")
            found.update(groups[group])
        else:
            found.add(name)
    return frozenset(found)


def _namespace_policy(
    rules: _NamespaceRules, base: NamespacePolicy, groups: dict[str, list[str]], where: str
) -> NamespacePolicy:
    def seconds(text: str | None, fallback: int) -> int:
        return fallback if text is None else parse_duration(text) or fallback

    return NamespacePolicy(
        required_labels=tuple(rules.required_labels)
        if rules.required_labels is not None
        else base.required_labels,
        default_runtime_seconds=seconds(rules.default_runtime, base.default_runtime_seconds),
        max_runtime_seconds=seconds(rules.max_runtime, base.max_runtime_seconds),
        threshold_usd=base.threshold_usd if rules.threshold_usd is None else rules.threshold_usd,
        serving_threshold_usd_per_month=base.serving_threshold_usd_per_month
        if rules.serving_threshold_usd_per_month is None
        else rules.serving_threshold_usd_per_month,
        unknown_gpu=rules.unknown_gpu or base.unknown_gpu,
        gpu_type_annotation=rules.gpu_type_annotation or base.gpu_type_annotation,
        argo_boundary_placement=rules.argo_boundary_placement or base.argo_boundary_placement,
        mode=rules.mode or base.mode,
        max_gpus_per_pod=rules.max_gpus_per_pod or base.max_gpus_per_pod,
        max_grace_seconds=base.max_grace_seconds
        if rules.max_grace_seconds is None
        else rules.max_grace_seconds,
        unresolved_templates=rules.unresolved_templates or base.unresolved_templates,
        over_threshold=rules.over_threshold or base.over_threshold,
        approvers=base.approvers
        if rules.approvers is None
        else _approvers(rules.approvers, groups, where),
        approver_identities=base.approver_identities,
        max_approval_usd=base.max_approval_usd
        if rules.max_approval_usd is None
        else rules.max_approval_usd,
        # each block replaces the default's block as a whole: a namespace's quota is its own
        allowed_gpu_types=base.allowed_gpu_types
        if rules.allowed_gpu_types is None
        else frozenset(rules.allowed_gpu_types),
        quota=base.quota if rules.quota is None else _quota(rules.quota),
        owner_quota=base.owner_quota if rules.owner_quota is None else _quota(rules.owner_quota),
        owner_quotas=base.owner_quotas
        if rules.owners is None
        else {name: _quota(q) for name, q in rules.owners.items()},
        budget=base.budget if rules.budget is None else _budget(rules.budget),
        quota_warning_ratio=base.quota_warning_ratio
        if rules.quota_warning_ratio is None
        else rules.quota_warning_ratio,
    )


def parse_policy(data: object, origin: str = "policy") -> Policy:
    """A validated Policy from parsed YAML; TableError naming `origin` and the field."""
    model = _validate(_Policy, data, origin)
    groups = model.approver_groups
    identities = {
        key: ApproverIdentities(
            frozenset(u.strip().lower() for u in entry.users),
            frozenset(g.strip().lower() for g in entry.groups),
        )
        for key, entry in model.approver_identities.items()
    }
    base = NamespacePolicy(approver_identities=identities)
    default = _namespace_policy(model, base, groups, origin)
    namespaces = {}
    for name, rules in model.namespaces.items():
        effective = _namespace_policy(rules, default, groups, f"{origin}: namespaces.{name}")
        if effective.default_runtime_seconds > effective.max_runtime_seconds:
            raise TableError(f"{origin}: namespaces.{name}: default_runtime exceeds max_runtime")
        namespaces[name] = effective
    if default.default_runtime_seconds > default.max_runtime_seconds:
        raise TableError(f"{origin}: default_runtime exceeds max_runtime")
    return Policy(
        default=default,
        namespaces=namespaces,
        exempt_namespaces=frozenset(model.exempt_namespaces),
        trusted_controllers=tuple(
            TrustedController(c.kind, c.api_group, frozenset(c.users), c.role, frozenset(c.creates))
            for c in model.controllers
        ),
        on_internal_error=model.on_internal_error,
        on_state_unavailable=model.on_state_unavailable,
        hours_per_month=model.hours_per_month,
        approval_clock_skew_seconds=parse_duration(model.approval_clock_skew) or 60,
        source=origin,
        kinds={**load_kinds(), **_kinds(model.kinds, origin)},
    )


def load_config(
    pricing: Path | None = None,
    policy: Path | None = None,
    verify_approval: ApprovalVerifier | None = None,
) -> Config:
    """The core's Config from the pricing and policy files (bundled ones by default)."""
    table = load_pricing(pricing)
    loaded = load_policy(policy)
    check_gpu_names(loaded, table)
    return Config(
        table=table, policy=loaded, parse_text=parse_embedded_yaml, verify_approval=verify_approval
    )


def check_gpu_names(policy: Policy, table: PriceTable) -> None:
    """GPU types the policy names (allowed types, per-type quotas) must be in the table: a
    typo would otherwise allow nothing, or cap nothing."""
    scopes = [("", policy.default)]
    scopes += [(f"namespaces.{name}.", rules) for name, rules in policy.namespaces.items()]
    for where, rules in scopes:
        quotas = [("quota", rules.quota), ("owner_quota", rules.owner_quota)]
        quotas += [(f"owners.{name}", q) for name, q in rules.owner_quotas.items()]
        named = [(f"{where}allowed_gpu_types", t) for t in sorted(rules.allowed_gpu_types)]
        for field, quota in quotas:
            named += [(f"{where}{field}.max_gpus_by_type", t) for t, _ in quota.max_gpus_by_type]
        for field, gpu_type in named:
            if gpu_type not in table.gpus:
                raise TableError(
                    f"{policy.source}: {field}: {gpu_type!r} is not a GPU type of "
                    f"{table.source} (its types: {', '.join(sorted(table.gpus))})"
                )


def load_pricing(path: Path | None = None) -> PriceTable:
    path = path or BUNDLED_PRICING
    return parse_pricing(_read(path, "pricing"), str(path))


def load_policy(path: Path | None = None) -> Policy:
    path = path or BUNDLED_POLICY
    return parse_policy(_read(path, "policy"), str(path))
