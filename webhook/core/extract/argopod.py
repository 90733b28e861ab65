"""The pod Argo builds for one template, as far as GPUs and placement go, read into a
PodShape: its containers (`container`, `script`, `containerSet`, sidecars, init containers),
the placement it inherits (its own, else the enclosing steps/dag template's, else the
workflow's) and the `podSpecPatch`es applied (the workflow's, then the template's).

Templates come here with the parameters known at admission filled in (argoparams). A
`{{...}}` still left where it can carry GPUs (a podSpecPatch, a resource name or quantity)
is a problem (`invalid-gpu-request`): nothing bounds what Argo will put there. The enclosing
template's placement reaches the pod only from Argo 3.6 on: under the policy's
`argo_boundary_placement: safe` the pod's placement without it is kept as the shape's
alternative, and pricing takes the dearer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .. import messages
from ..catalog import PriceTable
from ..config import ParseText
from ..policy import BoundaryPlacement
from ..quantities import parse_duration
from ..types import PodShape, Reason
from .argo import int_or_string, merge
from .argoparams import NO_PARAMETERS, Scope, substitute, tag_in
from .podspec import field, read_gpus, read_grace, read_placement

__all__ = ["NO_PLACEMENT", "Inherited", "TemplatePods"]

# YAML podSpecPatch text read per object, at most. A patch is a few lines; YAML parses at
# about 2 s a megabyte even in C, so a 3 MiB object of patches would outlast the webhook's
# timeout and hold up every other review. Beyond this a patch is unreadable (handled).
_YAML_BUDGET = 64 * 1024

# (nodeSelector, affinity, name) of the enclosing steps/dag template
Inherited = tuple[Any, Any, str]
NO_PLACEMENT: Inherited = (None, None, "")
_PLACEMENT = ("nodeSelector", "affinity")


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
        parameters: Scope = NO_PARAMETERS,
        boundary: BoundaryPlacement = "inherited",
    ) -> None:
        """`parameters`: the workflow's global parameters known here; `boundary`: whether a
        pod gets its enclosing steps/dag template's placement (policy
        argo_boundary_placement)."""
        self.spec = spec
        self.path = path
        self.parameters = parameters
        self.boundary = boundary
        # Argo fills the workflow's podSpecPatch in with the global parameters (once)
        self.spec_patch = substitute(spec.get("podSpecPatch"), parameters)
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
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The pod Argo builds for a template, as far as GPUs and placement go; and under
        `safe`, when the enclosing template's placement makes a difference, the pod an Argo
        before 3.6 builds (None otherwise)."""
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
        with_boundary = self._placement(template, inherited)
        patches = self._patches(template, where)
        other = None
        if inherited is not NO_PLACEMENT and self.boundary == "safe":
            without = self._placement(template, NO_PLACEMENT)
            if without != with_boundary:
                other = {**pod, **without}
                for patch in patches:
                    other = merge(other, patch)
        pod.update(with_boundary)
        for patch in patches:
            pod = merge(pod, patch)
        self._check_resources(pod, where)
        return pod, other

    def _placement(self, template: Mapping[str, Any], inherited: Inherited) -> dict[str, Any]:
        """The template's own nodeSelector and affinity, else the enclosing steps/dag
        template's, else the workflow's; empty counts as unset (Argo checks the length)."""
        placement = {}
        for position, key in enumerate(_PLACEMENT):
            value = template.get(key) or inherited[position] or self.spec.get(key)
            if value:
                placement[key] = value
        return placement

    def _patches(self, template: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
        """The podSpecPatches Argo applies, in order (the workflow's, then the template's),
        as maps; a patch that cannot be read is a problem or a note."""
        own = template.get("podSpecPatch")
        if not own and not self.spec_patch:
            return []
        found = []
        for origin, patch in (
            (f"{self.path}.podSpecPatch", self.spec_patch),
            (f"{where}.podSpecPatch", substitute(own, self.parameters)),
        ):
            if not patch:
                continue
            tag = tag_in(patch)
            if tag is not None:
                # Argo puts the parameter's text in before reading the patch: it may be
                # anything, GPUs included.
                self.problems.append(
                    Reason("invalid-gpu-request", messages.unresolved_patch(origin, tag))
                )
                continue
            parsed = self._parse(patch) if isinstance(patch, str) else patch
            if isinstance(parsed, dict):
                found.append(parsed)
            elif any(word in str(patch).lower() for word in ("gpu", "resources", "mig-")):
                # It may set GPUs that only exist at run time: nothing here can bound them.
                self.problems.append(
                    Reason("invalid-gpu-request", messages.unreadable_patch(origin))
                )
            else:
                self.notes.append(messages.ignored_patch(origin))
        return found

    def _check_resources(self, pod: Mapping[str, Any], where: str) -> None:
        """A problem for each resource name that is still a `{{...}}`: Argo fills it in
        later, with any resource, a GPU included. (A GPU count left as one is an invalid
        quantity, which read_gpus refuses.)"""
        lists = (pod.get("containers"), pod.get("initContainers"))  # a patch may set anything
        for listed in lists:
            for container in listed if type(listed) is list else ():
                resources = container.get("resources") if type(container) is dict else None
                if type(resources) is not dict:
                    continue
                for section in ("limits", "requests"):
                    entries = resources.get(section)
                    if type(entries) is not dict:
                        continue
                    for key, value in entries.items():
                        if type(key) is str and "{{" in key:
                            tag = tag_in(key) or key
                            entry = f"{section}: {key}: {value}"
                            text = messages.unresolved_resource(
                                where, container.get("name", ""), entry, tag
                            )
                            self.problems.append(Reason("invalid-gpu-request", text))

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
        pod, other = self._pod_spec(template, where, inherited)
        gpus = read_gpus(pod, where, self.table, self.problems)
        if not gpus:
            return None
        metadata = field(template, "metadata", where, dict, {})
        annotations = {
            **self.annotations,
            **field(metadata, "annotations", f"{where}.metadata", dict, {}),
        }
        placement = read_placement(pod, where, annotations)
        alternative = None if other is None else read_placement(other, where, annotations)
        if alternative == placement:
            alternative = None
        elif alternative is not None:
            self.notes.append(messages.boundary_placement(name, inherited[2]))
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
            alternative=alternative,
        )
