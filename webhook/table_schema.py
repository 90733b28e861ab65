"""The schemas of the pricing and policy files (pydantic): what a valid file holds, with
the checks that a field or the file as a whole must pass. `webhook.tables` validates a
file with them and turns the result into the core's types.

The classes keep their underscored names: pydantic puts a model's name in some messages
("Input should be a valid dictionary or instance of _Quota").
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .core.gpu_names import is_gpu_name
from .core.quantities import parse_duration
from .kinds_schema import _Kind

__all__ = ["_ApproverIdentities", "_Budget", "_NamespaceRules", "_Policy", "_Pricing", "_Quota"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_GPU_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


class _Gpu(_Strict):
    name: str
    resource: str
    usd_per_hour: Annotated[float, Field(gt=0, lt=10_000)]
    source: Annotated[str, Field(min_length=1)]
    source_url: str = ""
    as_of: str
    aliases: dict[str, list[str]] = {}

    @field_validator("as_of", mode="before")
    @classmethod
    def _date(cls, value: object) -> str:
        text = str(value)
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            raise ValueError("must be a date YYYY-MM-DD")
        return text


class _Resource(_Strict):
    fraction: str | float = 1.0
    of: list[str] = []
    like: str = ""

    @field_validator("fraction")
    @classmethod
    def _fraction(cls, value: str | float) -> str | float:
        try:
            number = Fraction(str(value))
        except (ValueError, ZeroDivisionError):
            raise ValueError("must be a number or a fraction such as 1/7") from None
        if not 0 < number <= 1:
            raise ValueError("must be more than 0 and at most 1")
        return value


class _Instance(_Strict):
    gpu: str
    count: Annotated[int, Field(ge=1, le=64)]
    usd_per_hour: Annotated[float, Field(gt=0)] | None = None


class _DeviceSelector(_Strict):
    cel: Annotated[str, Field(min_length=1)]  # a claim's CEL selector, as written
    type: str  # the GPU type a device it selects is


class _DeviceClass(_Strict):
    type: str | None = None  # the one GPU type its devices are
    like: str | None = None  # or: any type this GPU resource can be
    selectors: list[_DeviceSelector] = []
    max_devices: Annotated[int, Field(ge=1, le=1024)] | None = None  # bounds allocationMode All
    priced: bool = True  # False: its devices are not GPUs

    @model_validator(mode="after")
    def _one_source(self) -> _DeviceClass:
        if self.priced and (self.type is None) == (self.like is None):
            raise ValueError("give the GPU type (type) or a GPU resource (like), not both")
        if not self.priced and (self.type or self.like or self.selectors):
            raise ValueError("a class that is not priced names no GPU type")
        return self


class _Pricing(_Strict):
    version: Literal[1]
    currency: Literal["USD"]
    basis: str = ""
    label_keys: list[str]
    instance_type_label_keys: list[str] = []
    resources: dict[str, _Resource]
    gpus: dict[str, _Gpu]
    instance_types: dict[str, _Instance] = {}
    device_classes: dict[str, _DeviceClass] = {}  # DRA DeviceClass name -> its GPUs

    @model_validator(mode="after")
    def _references(self) -> _Pricing:
        if not self.gpus:
            raise ValueError("gpus: the table lists no GPU type")
        for gpu_id, gpu in self.gpus.items():
            if not _GPU_ID.fullmatch(gpu_id):
                raise ValueError(f"gpus.{gpu_id}: ids are lowercase letters, digits and '-'")
            if gpu.resource not in self.resources:
                raise ValueError(f"gpus.{gpu_id}.resource: {gpu.resource} is not in resources")
            for key in gpu.aliases:
                if key not in self.label_keys:
                    raise ValueError(f"gpus.{gpu_id}.aliases: {key} is not in label_keys")
        for name, rule in self.resources.items():
            if not is_gpu_name(name):
                # The API server filters by name alone (the manifests' matchConditions) and
                # would never send a pod requesting it: it would run unpriced.
                raise ValueError(
                    f"resources: {name} is not a name the webhooks' matchConditions send "
                    "(a resource of nvidia.com or amd.com, gpu.intel.com/i915 or /xe, or a "
                    "name whose part after the '/' contains 'gpu' or starts with 'mig-'); "
                    "widen webhook/core/gpu_names.py and the manifests together"
                )
            for gpu_id in rule.of:
                if gpu_id not in self.gpus:
                    raise ValueError(f"resources.{name}.of: unknown GPU {gpu_id}")
            if rule.like and rule.like not in self.resources:
                raise ValueError(f"resources.{name}.like: {rule.like} is not in resources")
        for name, instance in self.instance_types.items():
            if instance.gpu not in self.gpus:
                raise ValueError(f"instance_types.{name}.gpu: unknown GPU {instance.gpu}")
        for name, device_class in self.device_classes.items():
            where = f"device_classes.{name}"
            if device_class.type is not None and device_class.type not in self.gpus:
                raise ValueError(f"{where}.type: unknown GPU {device_class.type}")
            if device_class.like is not None and device_class.like not in self.resources:
                raise ValueError(f"{where}.like: {device_class.like} is not in resources")
            for i, selector in enumerate(device_class.selectors):
                if selector.type not in self.gpus:
                    raise ValueError(f"{where}.selectors[{i}].type: unknown GPU {selector.type}")
        return self


_Duration = Annotated[str, Field(min_length=1)]
_Gpus = Annotated[float, Field(ge=0)]
_Usd = Annotated[float, Field(ge=0)]


class _Quota(_Strict):
    max_gpus: _Gpus | None = None
    max_gpus_by_type: dict[str, _Gpus] = {}
    max_committed_usd: _Usd | None = None


class _Budget(_Strict):
    # what experiments not named in `experiments` may spend: together (share), each (default)
    usd: _Usd | None = None
    period: Literal["lifetime", "month"] = "lifetime"
    experiments: dict[str, _Usd] = {}  # experiments with their own budget
    namespace_usd: _Usd | None = None  # all experiments of the namespace together
    # share (safe: a new experiment label buys nothing), default (each unlisted experiment
    # gets `usd`: a new label buys a fresh budget), deny (only the listed ones may spend)
    unlisted_experiments: Literal["share", "default", "deny"] = "share"

    @model_validator(mode="after")
    def _unlisted(self) -> _Budget:
        if self.unlisted_experiments == "deny":
            if not self.experiments:
                raise ValueError("unlisted_experiments: deny needs experiments listed")
            if self.usd is not None:
                raise ValueError(
                    "usd: unlisted experiments are denied (unlisted_experiments: deny), so no "
                    "amount applies to them; remove usd or list the experiments"
                )
        return self


class _NamespaceRules(_Strict):
    required_labels: list[str] | None = None
    default_runtime: _Duration | None = None
    max_runtime: _Duration | None = None
    threshold_usd: Annotated[float, Field(ge=0)] | None = None
    serving_threshold_usd_per_month: Annotated[float, Field(ge=0)] | None = None
    unknown_gpu: Literal["most-expensive", "deny"] | None = None
    mode: Literal["enforce", "warn"] | None = None
    max_gpus_per_pod: Annotated[int, Field(ge=1)] | None = None
    max_grace_seconds: Annotated[int, Field(ge=0)] | None = None
    unresolved_templates: Literal["deny", "warn"] | None = None
    over_threshold: Literal["require-approval", "deny"] | None = None
    approvers: list[str] | None = None  # approver names, key ids, or group:<name>
    max_approval_usd: Annotated[float, Field(gt=0)] | None = None
    allowed_gpu_types: list[str] | None = None
    quota: _Quota | None = None
    owner_quota: _Quota | None = None
    owners: dict[str, _Quota] | None = None
    budget: _Budget | None = None
    quota_warning_ratio: Annotated[float, Field(gt=0, le=1)] | None = None
    gpu_type_annotation: Literal["trusted", "checked"] | None = None
    argo_boundary_placement: Literal["safe", "inherited", "not-inherited"] | None = None

    @field_validator(
        "default_runtime", "max_runtime", "approval_clock_skew", mode="before", check_fields=False
    )
    @classmethod
    def _duration(cls, value: object) -> object:
        if value is not None and parse_duration(str(value)) is None:
            raise ValueError("must be a duration such as 90m, 12h, 7d or 3600")
        return None if value is None else str(value)

    @field_validator("required_labels")
    @classmethod
    def _labels(cls, value: list[str] | None) -> list[str] | None:
        for key in value or ():
            if not re.fullmatch(r"([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?", key):
                raise ValueError(f"{key!r} is not a label key")
        return value


_APPROVER_KEY = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[0-9a-f]{8})?")
# Groups every authenticated (or every anonymous) request carries: listing one would make
# everybody the approver.
_EVERYBODY = {"system:authenticated", "system:unauthenticated"}
_Identity = Annotated[str, Field(min_length=1)]


class _ApproverIdentities(_Strict):
    users: list[_Identity] = []
    groups: list[_Identity] = []

    @field_validator("groups")
    @classmethod
    def _groups(cls, value: list[str]) -> list[str]:
        for group in value:
            if group.strip().lower() in _EVERYBODY:
                raise ValueError(f"{group!r} is every user's group, not one person's")
        return value


class _Controller(_Strict):
    kind: str
    api_group: str
    role: Literal["priced", "serving"]
    users: list[str]
    creates: list[str] = ["Pod"]


class _Policy(_NamespaceRules):
    version: Literal[1]
    on_internal_error: Literal["deny", "allow"] = "deny"
    on_state_unavailable: Literal["deny", "allow"] = "deny"
    hours_per_month: Annotated[float, Field(gt=0, le=744)] = 730.0
    approval_clock_skew: _Duration = "60s"
    approver_groups: dict[str, list[str]] = {}
    # approver name (or key id) -> the users and groups that person submits as
    approver_identities: dict[str, _ApproverIdentities] = {}
    exempt_namespaces: list[str] = []
    controllers: list[_Controller] = []
    # kinds priced through the kinds table, added to (or replacing) the shipped entries
    kinds: list[_Kind] = []
    namespaces: dict[str, _NamespaceRules] = {}

    @field_validator("approver_identities")
    @classmethod
    def _approver_keys(
        cls, value: dict[str, _ApproverIdentities]
    ) -> dict[str, _ApproverIdentities]:
        for key in value:
            if not _APPROVER_KEY.fullmatch(key):
                raise ValueError(
                    f"{key!r} is not an approver name (lowercase letters, digits and '-') "
                    "or key id (<approver>.<8 hex digits>)"
                )
        return value
