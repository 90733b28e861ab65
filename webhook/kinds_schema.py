"""The schema of a kinds table entry (pydantic): the shipped `webhook/defaults/kinds.yaml`
and the policy's own `kinds:` validate against it; `webhook.tables` turns the result into
the core's KindSpec values."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["_Factor", "_Kind", "_KindsFile", "_Template"]

# dotted field names, `*` for every value of a map, `name[*]` for every item of a list;
# `$.` (in a template entry) starts from the object's root
_PATH = re.compile(
    r"(\$\.)?[A-Za-z_][A-Za-z0-9_-]*(\[\*\])?(\.([A-Za-z_][A-Za-z0-9_-]*(\[\*\])?|\*))*"
)
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _path(value: str, *, wildcards: bool = True, root: bool = True) -> str:
    pattern = _PATH if wildcards else _FIELD
    text = value if root or not value.startswith("$.") else "\0"
    if value and not pattern.fullmatch(text):
        raise ValueError(
            f"{value!r} is not a field path (dotted names; `*` for a map's values, "
            "`name[*]` for a list's items)"
        )
    return value


class _Factor(_Strict):
    path: str
    default: Annotated[int, Field(ge=0)] = 1
    minus: Annotated[int, Field(ge=0)] = 0
    minus_unless: str = ""

    @field_validator("path", "minus_unless")
    @classmethod
    def _paths(cls, value: str) -> str:
        return _path(value)


class _Template(_Strict):
    label: str = ""
    each: Annotated[str, Field(min_length=1)]
    template: str = "template"
    pod_spec: str = ""
    containers: list[str] = []
    replicas: str = ""
    default_replicas: Annotated[int, Field(ge=0)] = 1
    max_replicas: str = ""
    autoscaling: str = ""
    min_replicas: str = ""
    count_annotation: str = ""
    unbounded: bool = False
    factors: list[_Factor] = []

    @field_validator("each")
    @classmethod
    def _each(cls, value: str) -> str:
        if value.startswith("$."):
            raise ValueError("`each` is a path from the object's root; write it without `$.`")
        return _path(value)

    @field_validator("template", "replicas", "max_replicas", "autoscaling", "min_replicas")
    @classmethod
    def _relative(cls, value: str) -> str:
        return _path(value)

    @model_validator(mode="after")
    def _one_pod_spec(self) -> _Template:
        if self.pod_spec and self.pod_spec != "." and not _FIELD.fullmatch(self.pod_spec):
            raise ValueError(f"pod_spec: {self.pod_spec!r} is not a field name (or '.')")
        if self.unbounded and not self.count_annotation:
            raise ValueError("unbounded needs count_annotation: the way to bound it")
        return self


class _Kind(_Strict):
    group: str
    kind: Annotated[str, Field(min_length=1)]
    workload_class: Literal["batch", "serving"]
    templates: Annotated[list[_Template], Field(min_length=1)]
    deadline: str = ""
    suspend: str = ""
    resource: str = ""
    scale: str = ""

    @field_validator("deadline", "suspend", "scale")
    @classmethod
    def _plain(cls, value: str) -> str:
        return _path(value, wildcards=False, root=False)

    @model_validator(mode="after")
    def _scaled(self) -> _Kind:
        if self.scale and not self.resource:
            raise ValueError("scale needs resource: the plural its scale subresource names")
        return self


class _KindsFile(_Strict):
    version: Literal[1]
    kinds: list[_Kind]
