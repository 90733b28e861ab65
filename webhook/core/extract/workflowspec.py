"""A WorkflowSpec walked from its entrypoint into pod shapes and a Concurrency tree.

Each template that makes a pod (`container`, `script`, `containerSet`) becomes a PodShape
with its GPUs (after `templateDefaults` and `podSpecPatch`), its placement, how often it can
run (fan-out × attempts) and its per-run deadline. `steps` and `dag` templates become a
Concurrency tree: step groups run one after another, the steps of a group and the tasks of a
DAG together, `withItems`/`withSequence` multiply, `parallelism` caps. Templates of other
(Cluster)WorkflowTemplates (`templateRef`) are read through the config's lookup. Pricing
evaluates the tree; nothing here knows a price.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from .. import messages
from ..catalog import PriceTable
from ..config import ParseText, TemplateLookup
from ..quantities import parse_duration
from ..types import ANNOTATION_MAX_FANOUT, INFINITE, Concurrency, PodShape, Reason
from .argo import attempts, defaults_for, fanout, int_or_string, merge, times
from .podspec import ObjectError, field, read_gpus, read_grace, read_placement

__all__ = ["WorkflowReader"]

_NOTHING = Concurrency("all")
# YAML podSpecPatch text read per object, at most. A patch is a few lines; YAML parses at
# about 2 s a megabyte even in C, so a 3 MiB object of patches would outlast the webhook's
# timeout and hold up every other review. Beyond this a patch is unreadable (handled).
_YAML_BUDGET = 64 * 1024

Inherited = tuple[Any, Any]  # (nodeSelector, affinity) of the enclosing steps/dag template
_NO_PLACEMENT: Inherited = (None, None)


class WorkflowReader:
    """Walks one WorkflowSpec from its entrypoint. One instance per request."""

    def __init__(
        self,
        spec: Mapping[str, Any],
        path: str,
        *,
        table: PriceTable,
        annotations: Mapping[str, str],
        parse_text: ParseText | None,
        lookup: TemplateLookup | None,
        namespace: str,
    ) -> None:
        self.spec = spec
        self.lookup = lookup
        self.namespace = namespace
        self.recursive: set[str] = set()
        self.loaded: set[str] = set()  # scopes of other WorkflowTemplates already looked up
        self.unresolved: list[str] = []  # templates in other objects that cannot be read
        self.path = path
        self.table = table
        self.annotations = annotations
        self.parse_text = parse_text
        self.yaml_budget = _YAML_BUDGET
        self.problems: list[Reason] = []
        self.notes: list[str] = []
        self.shapes: list[PodShape] = []
        self.runs: list[float] = []
        self.shape_of: dict[tuple[str, str], int] = {}
        self.exiting = False  # reading the exit handler, which outlives the deadline
        self.after_deadline: set[int] = set()
        # key -> (index in spec.templates or -1, template, scope). Templates of another
        # WorkflowTemplate are keyed "owner/name" and call their siblings in that scope.
        self.templates: dict[str, tuple[int, dict[str, Any], str]] = {}
        defaults = field(spec, "templateDefaults", path, dict, {})
        retry = field(spec, "retryStrategy", path, dict, None)
        for i, template in enumerate(field(spec, "templates", path, list, ())):
            if type(template) is not dict:
                raise ObjectError(f"{path}.templates[{i}]", "object", template)
            merged = merge(defaults_for(defaults, template), template) if defaults else template
            if retry is not None and "retryStrategy" not in merged:
                merged = {**merged, "retryStrategy": retry}
            self.templates[str(template.get("name", ""))] = (i, merged, "")
        declared = annotations.get(ANNOTATION_MAX_FANOUT)
        self.max_fanout = int_or_string(declared) if declared is not None else None
        if declared is not None and self.max_fanout is None:
            self.problems.append(
                Reason("invalid-gpu-request", messages.invalid_max_fanout(declared))
            )

    # -- templates ------------------------------------------------------------------------

    def node(
        self,
        name: str,
        multiplier: float,
        stack: tuple[str, ...],
        inherited: Inherited = _NO_PLACEMENT,
    ) -> Concurrency:
        """The concurrency of invoking template `name`, counting `multiplier` invocations.
        `inherited` is the placement of the enclosing steps/dag template, which Argo uses for
        pods whose own template sets none."""
        found = self.templates.get(name)
        if found is None:
            self.problems.append(Reason("invalid-request", messages.unknown_template(name)))
            return _NOTHING
        if name in stack:
            # Recursion: how deep it goes is known only at run time. The first visit of the
            # template marks its whole subtree unbounded (below).
            self.recursive.add(name)
            return _NOTHING
        index, template, scope = found
        where = f"{self.path}.templates[{index}]" if index >= 0 else name
        runs = times(multiplier, attempts(template))
        stack = (*stack, name)
        parallelism = int_or_string(template.get("parallelism"))
        if any(k in template for k in ("container", "script", "containerSet")):
            node = self._pod(name, template, where, runs, inherited)
        elif "steps" in template or "dag" in template:
            placement = (
                template.get("nodeSelector") or inherited[0],
                template.get("affinity") or inherited[1],
            )
            groups = self._children(template, where, runs, stack, scope, placement)
            # Template parallelism caps running children (a nested steps/dag counts as one).
            op: Literal["each", "all"] = "each" if parallelism is not None else "all"
            limit = parallelism or 0
            if "steps" in template:
                node = Concurrency(
                    "one", children=tuple(Concurrency(op, limit=limit, children=g) for g in groups)
                )
            else:
                node = Concurrency(op, limit=limit, children=groups[0] if groups else ())
        else:
            if "resource" in template:
                self.notes.append(messages.resource_template(name))
            return _NOTHING  # resource, suspend, http, plugin, data: no pod of the user's
        if name in self.recursive:
            node = Concurrency("all", times=INFINITE, children=(node,))
            for shape in node.shapes():
                self.runs[shape] = INFINITE
        return node

    def _children(
        self,
        template: Mapping[str, Any],
        where: str,
        runs: float,
        stack: tuple[str, ...],
        scope: str,
        inherited: Inherited,
    ) -> list[tuple[Concurrency, ...]]:
        """Step groups (run one after another) or the DAG's tasks (one group)."""
        lists: list[tuple[list[Any], str]] = []
        if "steps" in template:
            for g, group in enumerate(field(template, "steps", where, list, ())):
                if type(group) is not list:
                    raise ObjectError(f"{where}.steps[{g}]", "list", group)
                lists.append((group, f"{where}.steps[{g}]"))
        else:
            dag = field(template, "dag", where, dict, {})
            lists.append((field(dag, "tasks", f"{where}.dag", list, ()), f"{where}.dag.tasks"))
        return [
            tuple(
                self._step(step, f"{prefix}[{i}]", runs, stack, scope, inherited)
                for i, step in enumerate(steps)
            )
            for steps, prefix in lists
        ]

    def call(
        self,
        target: Mapping[str, Any],
        where: str,
        runs: float,
        stack: tuple[str, ...],
        scope: str,
        inherited: Inherited = _NO_PLACEMENT,
    ) -> Concurrency | None:
        """What a step, task or hook invokes: `template`, `templateRef` or `inline`."""
        if target.get("templateRef") is not None:
            key = self._external(target["templateRef"], where)
            return None if key is None else self.node(key, runs, stack, inherited)
        if isinstance(target.get("inline"), dict):
            inline_name = f"{stack[-1] if stack else ''}/{target.get('name', 'inline')}"
            self.templates.setdefault(inline_name, (-1, target["inline"], scope))
            return self.node(inline_name, runs, stack, inherited)
        if target.get("template") is not None:
            return self.node(self._key(str(target["template"]), scope), runs, stack, inherited)
        return None

    def _step(
        self,
        step: Any,
        where: str,
        multiplier: float,
        stack: tuple[str, ...],
        scope: str,
        inherited: Inherited,
    ) -> Concurrency:
        if type(step) is not dict:
            raise ObjectError(where, "object", step)
        count = fanout(step, where, self.max_fanout)
        runs = times(multiplier, count)
        targets: list[Mapping[str, Any]] = [step]
        hooks = step.get("hooks")
        targets += [
            h for h in (hooks.values() if isinstance(hooks, dict) else ()) if isinstance(h, dict)
        ]
        if isinstance(step.get("onExit"), str) and step["onExit"]:
            targets.append({"template": step["onExit"]})
        children = []
        for target in targets:
            child = self.call(target, where, runs, stack, scope, inherited)
            if child is not None:
                children.append(child)
        return Concurrency("all", times=count, children=tuple(children))

    def _key(self, name: str, scope: str) -> str:
        """A template name as called from `scope`: a sibling in the same WorkflowTemplate."""
        return f"{scope}{name}" if scope and f"{scope}{name}" in self.templates else name

    def _external(self, ref: Any, where: str) -> str | None:
        """The key of a template in another (Cluster)WorkflowTemplate, whose templates are
        loaded through the lookup; None (and a note) when it cannot be read here."""
        if type(ref) is not dict:
            raise ObjectError(f"{where}.templateRef", "object", ref)
        owner, template = str(ref.get("name", "")), str(ref.get("template", ""))
        cluster = bool(ref.get("clusterScope"))
        scope = f"{'cluster:' if cluster else ''}{owner}/"
        if scope not in self.loaded:
            self.loaded.add(scope)
            spec = self.lookup(self.namespace, owner, cluster) if self.lookup else None
            templates = spec.get("templates") if isinstance(spec, Mapping) else None
            for candidate in templates if isinstance(templates, list) else ():
                if isinstance(candidate, dict):
                    key = f"{scope}{candidate.get('name', '')}"
                    self.templates[key] = (-1, candidate, scope)
        if f"{scope}{template}" not in self.templates:
            self.unresolved.append(messages.template_ref_unresolved(where, owner, template))
            return None
        return f"{scope}{template}"

    def _pod(
        self,
        name: str,
        template: Mapping[str, Any],
        where: str,
        runs: float,
        inherited: Inherited,
    ) -> Concurrency:
        # no placement inherited (the usual case): no JSON to build for the key
        plain = inherited == _NO_PLACEMENT
        key = (name, "" if plain else json.dumps(inherited, sort_keys=True, default=str))
        index = self.shape_of.get(key)
        if index is None:
            shape = self._shape(name, template, where, inherited)
            if shape is None:
                return _NOTHING
            index = len(self.shapes)
            self.shape_of[key] = index
            self.shapes.append(shape)
            self.runs.append(0)
        self.runs[index] += runs
        if self.exiting:
            self.after_deadline.add(index)
        return Concurrency("pod", shape=index)

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
        pod: dict[str, Any] = {
            "containers": containers,
            "initContainers": list(field(template, "initContainers", where, list, ())),
        }
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

    def read(self) -> tuple[tuple[PodShape, ...], Concurrency, Concurrency | None]:
        """(pod shapes, what runs within the deadline, the exit handler that runs after)."""
        roots = []
        entrypoint = self.spec.get("entrypoint")
        if isinstance(entrypoint, str) and entrypoint:
            roots.append(self.call({"template": entrypoint}, self.path, 1, (), ""))
        hooks = self.spec.get("hooks")
        hooks = hooks if isinstance(hooks, dict) else {}
        for hook_name, hook in hooks.items():
            if hook_name != "exit" and isinstance(hook, dict):
                roots.append(self.call(hook, f"{self.path}.hooks.{hook_name}", 1, (), ""))
        tree = Concurrency("all", children=tuple(r for r in roots if r is not None))
        parallelism = int_or_string(self.spec.get("parallelism"))
        if parallelism is not None:  # workflow parallelism counts pods
            tree = Concurrency("cap", limit=parallelism, children=(tree,))

        # The exit handler ignores the workflow deadline (workflowpod.go): its pods are
        # bounded only by their own template deadlines.
        exits = []
        self.exiting = True
        on_exit = self.spec.get("onExit")
        if isinstance(on_exit, str) and on_exit:
            exits.append(self.call({"template": on_exit}, f"{self.path}.onExit", 1, (), ""))
        if isinstance(hooks.get("exit"), dict):
            exits.append(self.call(hooks["exit"], f"{self.path}.hooks.exit", 1, (), ""))
        self.exiting = False
        exit_tree = Concurrency("all", children=tuple(e for e in exits if e is not None))
        shapes = tuple(
            s._replace(runs=self.runs[i], after_deadline=i in self.after_deadline)
            for i, s in enumerate(self.shapes)
        )
        return shapes, tree, exit_tree if exit_tree.shapes() else None
