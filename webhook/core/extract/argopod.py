"""The pod Argo builds for one template, as far as GPUs and placement go, read into a
PodShape: its containers (`container`, `script`, `containerSet`, sidecars, init containers),
the placement it inherits (its own, else the enclosing steps/dag template's, else the
workflow's) and the `podSpecPatch`es applied (the workflow's, then the template's).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .. import messages
from ..catalog import PriceTable
from ..config import ParseText
from ..quantities import parse_duration
from ..types import PodShape, Reason
from .argo import int_or_string, merge
from .podspec import field, read_gpus, read_grace, read_placement

__all__ = ["NO_PLACEMENT", "Inherited", "TemplatePods"]

# YAML podSpecPatch text read per object, at most. A patch is a few lines; YAML parses at
# about 2 s a megabyte even in C, so a 3 MiB object of patches would outlast the webhook's
# timeout and hold up every other review. Beyond this a patch is unreadable (handled).
_YAML_BUDGET = 64 * 1024

Inherited = tuple[Any, Any]  # (nodeSelector, affinity) of the enclosing steps/dag template
NO_PLACEMENT: Inherited = (None, None)


class TemplatePods:
    """Reads the pods of one WorkflowSpec's templates; one instance per request (the YAML
    budget is per object). The WorkflowReader that walks the spec shares its problems and
    notes."""

    def __init__(
        self,
        spec: Mapping[str, Any],
        path: str,
        *,
        table: PriceTable,
        annotations: Mapping[str, str],
        parse_text: ParseText | None,
    ) -> None:
        self.spec = spec
        self.path = path
        self.table = table
        self.annotations = annotations
        self.parse_text = parse_text
        self.yaml_budget = _YAML_BUDGET
        self.problems: list[Reason] = []  # what cannot be read: the walk adds its own
        self.notes: list[str] = []  # facts worth a warning
        self.units = 0  # containers read by the current `read`

    def read(
        self, name: str, template: Mapping[str, Any], where: str, inherited: Inherited
    ) -> tuple[PodShape | None, int]:
        """The template's pod shape (None: it asks for no GPU), and the units of work it
        took (containers read) for the reader's cap."""
        self.units = 0
        return self._shape(name, template, where, inherited), self.units

    def _pod_spec(
        self, template: Mapping[str, Any], where: str, inherited: Inherited
    ) -> dict[str, Any]:
        """The pod Argo builds for a template, as far as GPUs and placement go."""
        if "containerSet" in template:
            container_set = field(template, "containerSet", where, dict, {})
            containers = list(field(container_set, "containers", f"{where}.containerSet", list, ()))
        else:
            kind = "container" if "container" in template else "script"
            main = field(template, kind, where, dict, {})
            containers = [{**main, "name": "main"}]
        containers += list(field(template, "sidecars", where, list, ()))
        init = list(field(template, "initContainers", where, list, ()))
        self.units += len(containers) + len(init)
        pod: dict[str, Any] = {"containers": containers, "initContainers": init}
        # The template's own, else the enclosing steps/dag template's, else the workflow's;
        # empty counts as unset (Argo checks the length).
        for position, key in enumerate(("nodeSelector", "affinity")):
            value = template.get(key) or inherited[position] or self.spec.get(key)
            if value:
                pod[key] = value
        for origin, patch in (
            (self.path, self.spec.get("podSpecPatch")),
            (where, template.get("podSpecPatch")),
        ):
            if patch:
                pod = self._apply_patch(pod, patch, f"{origin}.podSpecPatch")
        return pod

    def _apply_patch(self, pod: dict[str, Any], patch: Any, where: str) -> dict[str, Any]:
        parsed = self._parse(patch) if isinstance(patch, str) else patch
        if isinstance(parsed, dict):
            patched: dict[str, Any] = merge(pod, parsed)  # a map merged into a map is a map
            return patched
        if any(word in str(patch).lower() for word in ("gpu", "resources", "mig-")):
            # It may set GPUs that only exist at run time: nothing here can bound them.
            self.problems.append(Reason("invalid-gpu-request", messages.unreadable_patch(where)))
        else:
            self.notes.append(messages.ignored_patch(where))
        return pod

    def _parse(self, text: str) -> Any:
        try:
            return json.loads(text)
        except ValueError:
            pass
        if self.parse_text is None or len(text) > self.yaml_budget:
            return None
        self.yaml_budget -= len(text)
        try:
            return self.parse_text(text)
        except Exception:  # any YAML error: the patch is unreadable, which is handled
            return None

    def _shape(
        self, name: str, template: Mapping[str, Any], where: str, inherited: Inherited
    ) -> PodShape | None:
        pod = self._pod_spec(template, where, inherited)
        gpus = read_gpus(pod, where, self.table, self.problems)
        if not gpus:
            return None
        metadata = field(template, "metadata", where, dict, {})
        annotations = {
            **self.annotations,
            **field(metadata, "annotations", f"{where}.metadata", dict, {}),
        }
        placement = read_placement(pod, where, annotations)
        deadlines = [
            d
            for d in (
                int_or_string(template.get("activeDeadlineSeconds")),
                parse_duration(template["timeout"])
                if type(template.get("timeout")) is str
                else None,
            )
            if d is not None
        ]
        return PodShape(
            label=name,
            gpus=gpus,
            placement=placement,
            deadline=min(deadlines) if deadlines else None,
            grace=read_grace(pod, where),
        )
