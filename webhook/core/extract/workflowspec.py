"""A WorkflowSpec walked from its entrypoint into pod shapes and a Concurrency tree.

Each template that makes a pod (`container`, `script`, `containerSet`) becomes a PodShape
with its GPUs (after `templateDefaults` and `podSpecPatch`), its placement, how often it can
run (fan-out × attempts) and its per-run deadline. `steps` and `dag` templates become a
Concurrency tree: step groups run one after another, the steps of a group and the tasks of a
DAG together, `withItems`/`withSequence` multiply, `parallelism` caps. Templates of other
(Cluster)WorkflowTemplates (`templateRef`) are read through the config's lookup. Pricing
evaluates the tree; nothing here knows a price.

Argo fills in each template's parameters before it runs it: the walk carries what each call
passes (`arguments`, known at admission) and reads the template filled in (argoparams).

Each template is walked once per placement it inherits and inputs it is given (memoised): a
DAG whose levels each call the next level twice is read in linear time, not in 2^levels. Its
subtree (a shared Concurrency node) and how often one invocation runs each pod shape are
reused wherever it is called. The reading is capped at MAX_VISITS units of work (templates
entered, steps read, pod counts carried, containers read, each 4 KiB of template scanned
for parameters): past that the object is refused (`invalid-request`), the same way in
`costgate estimate` and in the webhook.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from .. import messages
from ..config import TemplateLookup
from ..types import ANNOTATION_MAX_FANOUT, INFINITE, Concurrency, PodShape, Reason
from .argo import attempts, defaults_for, fanout, int_or_string, merge, times
from .argoparams import Scope, inputs_for, substitute
from .argopod import NO_PLACEMENT as _NO_PLACEMENT
from .argopod import Inherited, TemplatePods
from .podspec import ObjectError, field

__all__ = ["MAX_VISITS", "WorkflowReader"]

_NOTHING = Concurrency("all")
# Units of work per object read, at most. A legitimate workflow of a thousand steps takes a
# few thousand; the cap keeps the worst object to a fraction of a second of CPU.
MAX_VISITS = 50_000

# shape index -> runs of that pod shape per single invocation of a template
Counts = dict[int, float]
Inputs = tuple[tuple[str, str], ...]  # ("inputs.parameters.X", value) given to one call
Walked = tuple[Concurrency, Counts]
_NONE: Walked = (_NOTHING, {})


class WorkflowReader:
    """Walks one WorkflowSpec from its entrypoint. One instance per request."""

    def __init__(
        self, pods: TemplatePods, *, lookup: TemplateLookup | None, namespace: str
    ) -> None:
        """`pods` reads the pods of this spec's templates (its spec, path and annotations
        are the walk's)."""
        self.pods = pods
        self.spec = spec = pods.spec
        self.path = path = pods.path
        annotations = pods.annotations
        self.lookup = lookup
        self.namespace = namespace
        self.recursive: set[str] = set()
        self.loaded: set[str] = set()  # scopes of other WorkflowTemplates already looked up
        self.unresolved: list[str] = []  # templates in other objects that cannot be read
        self.problems = pods.problems
        self.notes = pods.notes
        self.shapes: list[PodShape] = []
        self.shape_of: dict[tuple[str, str, Inputs], int] = {}
        self.index_of: dict[PodShape, int] = {}  # calls that build the same pod share it
        # (template key, ids of the inherited placement, inputs) -> what walking it found;
        # only walks that met no recursion are kept (those depend on the calling stack)
        self.walked: dict[str | tuple[str, int, int, Inputs], Walked] = {}
        # templates filled in with their inputs, kept for the read: the placement dicts in
        # them are keyed by identity
        self.filled: dict[tuple[str, Inputs], dict[str, Any]] = {}
        self.tagged: dict[str, bool] = {}  # template key -> whether it holds any {{...}}
        self.arguments = any(k.startswith("workflow.parameters.") for k in pods.parameters)
        self.cycles = 0  # recursive calls met so far
        self.forever: set[int] = set()  # shapes under a recursive template: unbounded runs
        self.visits = 0
        self.exhausted = False
        self.reused = False  # some walk was reused: the trees read share subtrees
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

    def _spend(self, units: int) -> bool:
        """Count work; False (and one problem) once the object has used up MAX_VISITS."""
        self.visits += units
        if self.visits <= MAX_VISITS:
            return True
        if not self.exhausted:
            self.exhausted = True
            self.problems.append(Reason("invalid-request", messages.too_much_work(MAX_VISITS)))
        return False

    def node(
        self,
        name: str,
        stack: tuple[str, ...],
        inherited: Inherited = _NO_PLACEMENT,
        inputs: Inputs = (),
    ) -> Walked:
        """The concurrency of one invocation of template `name`, and how often it runs each
        pod shape. `inherited` is the placement of the enclosing steps/dag template, which
        Argo (3.6 on) uses for pods whose own template sets none; `inputs` the values of
        its input parameters known here."""
        self.visits += 1
        if self.visits > MAX_VISITS and not self._spend(0):
            return _NONE
        found = self.templates.get(name)
        if found is None:
            self.problems.append(Reason("invalid-request", messages.unknown_template(name)))
            return _NONE
        if name in stack:
            # Recursion: how deep it goes is known only at run time. The first visit of the
            # template marks its whole subtree unbounded (below).
            self.recursive.add(name)
            self.cycles += 1
            return _NONE
        # Keyed by identity: the placement dicts live in the object for the whole read.
        key = (
            name
            if inherited is _NO_PLACEMENT and not inputs
            else (name, id(inherited[0]), id(inherited[1]), inputs)
        )
        known = self.walked.get(key)
        if known is not None:
            self.reused = True
            return known if self._spend(len(known[1])) else _NONE
        cycles = self.cycles
        walked = self._walk(name, self._fill(name, found, inputs), stack, inherited, inputs)
        if self.cycles == cycles:
            self.walked[key] = walked
        return walked

    def _fill(
        self, name: str, found: tuple[int, dict[str, Any], str], inputs: Inputs
    ) -> tuple[int, dict[str, Any], str]:
        """The template as Argo runs it for this call: the known parameters filled in."""
        index, template, scope = found
        if not inputs and not self.arguments:
            # Nothing a template could ask for but the workflow's own name and metadata,
            # which only a podSpecPatch needs (TemplatePods fills those in): no GPU
            # workflow without parameters pays for reading its templates twice.
            return found
        tagged = self.tagged.get(name)
        if tagged is None:
            text = json.dumps(template, default=str, skipkeys=True)
            self.visits += len(text) // 4096  # a large template costs its size to read
            tagged = self.tagged[name] = "{{" in text
        if not tagged:
            return found
        filled = self.filled.get((name, inputs))
        if filled is None:
            params = {**self.pods.parameters, **dict(inputs)}
            filled = self.filled[(name, inputs)] = substitute(template, params)
        return index, filled, scope

    def _walk(
        self,
        name: str,
        found: tuple[int, dict[str, Any], str],
        stack: tuple[str, ...],
        inherited: Inherited,
        inputs: Inputs,
    ) -> Walked:
        index, template, scope = found
        where = f"{self.path}.templates[{index}]" if index >= 0 else name
        tries = attempts(template)
        stack = (*stack, name)
        parallelism = int_or_string(template.get("parallelism"))
        if any(k in template for k in ("container", "script", "containerSet")):
            node, counts = self._pod(name, template, where, inherited, inputs)
        elif "steps" in template or "dag" in template:
            # Argo 3.6 gives a pod the placement of its boundary, the steps/dag template
            # right above it (workflowpod.go addSchedulingConstraints); before, none.
            selector, affinity = template.get("nodeSelector"), template.get("affinity")
            placement = (
                (selector, affinity, name)
                if (selector or affinity) and self.pods.boundary != "not-inherited"
                else _NO_PLACEMENT
            )
            params = {**self.pods.parameters, **dict(inputs)} if inputs else self.pods.parameters
            groups, counts = self._children(template, where, stack, scope, placement, params)
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
            return _NONE  # resource, suspend, http, plugin, data: no pod of the user's
        if name in self.recursive:
            node = Concurrency("all", times=INFINITE, children=(node,))
            self.forever.update(counts)
        return node, counts if tries == 1 else _scaled(counts, tries)

    def _children(
        self,
        template: Mapping[str, Any],
        where: str,
        stack: tuple[str, ...],
        scope: str,
        inherited: Inherited,
        params: Scope,
    ) -> tuple[list[tuple[Concurrency, ...]], Counts]:
        """Step groups (run one after another) or the DAG's tasks (one group), and the runs
        of each pod shape under them all."""
        lists: list[tuple[list[Any], str]] = []
        if "steps" in template:
            for g, group in enumerate(field(template, "steps", where, list, ())):
                if type(group) is not list:
                    raise ObjectError(f"{where}.steps[{g}]", "list", group)
                lists.append((group, f"{where}.steps[{g}]"))
        else:
            dag = field(template, "dag", where, dict, {})
            lists.append((field(dag, "tasks", f"{where}.dag", list, ()), f"{where}.dag.tasks"))
        groups: list[tuple[Concurrency, ...]] = []
        counts: Counts = {}
        for steps, prefix in lists:
            group = []
            for i, step in enumerate(steps):
                if self.exhausted:
                    break
                node, found = self._step(step, f"{prefix}[{i}]", stack, scope, inherited, params)
                group.append(node)
                self._add(counts, found)
            groups.append(tuple(group))
        return groups, counts

    def _add(self, total: Counts, counts: Counts) -> None:
        """Adds `counts` into `total`, counting the work."""
        if not total:  # the first: copied, since walks are shared
            if counts and self._spend(len(counts)):
                total.update(counts)
        elif counts and self._spend(len(counts)):
            for shape, runs in counts.items():
                total[shape] = total.get(shape, 0) + runs

    def call(
        self,
        target: Mapping[str, Any],
        where: str,
        stack: tuple[str, ...],
        scope: str,
        inherited: Inherited = _NO_PLACEMENT,
        params: Scope | None = None,
    ) -> Walked | None:
        """What a step, task or hook invokes: `template`, `templateRef` or `inline`, with
        the `arguments` it passes (filled in from `params`, the caller's parameters)."""
        if target.get("templateRef") is not None:
            key = self._external(target["templateRef"], where)
            if key is None:
                return None
        elif isinstance(target.get("inline"), dict):
            key = f"{stack[-1] if stack else ''}/{target.get('name', 'inline')}"
            self.templates.setdefault(key, (-1, target["inline"], scope))
        elif target.get("template") is not None:
            key = self._key(str(target["template"]), scope)
        else:
            return None
        found = self.templates.get(key)
        inputs: Inputs = ()
        if found is not None and "inputs" in found[1]:
            caller = self.pods.parameters if params is None else params
            inputs = inputs_for(found[1], target.get("arguments"), caller, self.pods.parameters)
        return self.node(key, stack, inherited, inputs)

    def _step(
        self,
        step: Any,
        where: str,
        stack: tuple[str, ...],
        scope: str,
        inherited: Inherited,
        params: Scope,
    ) -> Walked:
        if type(step) is not dict:
            raise ObjectError(where, "object", step)
        count = fanout(step, where, self.max_fanout)
        targets: list[Mapping[str, Any]] = [step]
        hooks = step.get("hooks")
        targets += [
            h for h in (hooks.values() if isinstance(hooks, dict) else ()) if isinstance(h, dict)
        ]
        if isinstance(step.get("onExit"), str) and step["onExit"]:
            targets.append({"template": step["onExit"]})
        if len(targets) == 1:  # the usual step: its template's counts, as they are
            child = self.call(step, where, stack, scope, inherited, params)
            if child is None:
                return Concurrency("all", times=count), {}
            runs = child[1] if count == 1 else _scaled(child[1], count)
            return Concurrency("all", times=count, children=(child[0],)), runs
        children = []
        counts: Counts = {}
        for target in targets:
            child = self.call(target, where, stack, scope, inherited, params)
            if child is not None:
                children.append(child[0])
                self._add(counts, child[1])
        return Concurrency("all", times=count, children=tuple(children)), _scaled(counts, count)

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
        inherited: Inherited,
        inputs: Inputs,
    ) -> Walked:
        # no placement inherited (the usual case): no JSON to build for the key
        plain = inherited is _NO_PLACEMENT
        key = (name, "" if plain else json.dumps(inherited, sort_keys=True, default=str), inputs)
        index = self.shape_of.get(key)
        if index is None:
            shape, units = self.pods.read(name, template, where, inherited)
            self.visits += units  # checked at the next template
            if shape is None:
                return _NONE
            index = self.index_of.get(shape)
            if index is None:
                index = self.index_of[shape] = len(self.shapes)
                self.shapes.append(shape)
            self.shape_of[key] = index
        return Concurrency("pod", shape=index), {index: 1}

    def read(self) -> tuple[tuple[PodShape, ...], Concurrency, Concurrency | None]:
        """(pod shapes, what runs within the deadline, the exit handler that runs after)."""
        runs: Counts = {}
        roots = []
        entrypoint = self.spec.get("entrypoint")
        # The entrypoint and the exit handler get the workflow's arguments as their inputs.
        arguments = self.spec.get("arguments")
        if isinstance(entrypoint, str) and entrypoint:
            roots.append(
                self.call({"template": entrypoint, "arguments": arguments}, self.path, (), "")
            )
        hooks = self.spec.get("hooks")
        hooks = hooks if isinstance(hooks, dict) else {}
        for hook_name, hook in hooks.items():
            if hook_name != "exit" and isinstance(hook, dict):
                roots.append(self.call(hook, f"{self.path}.hooks.{hook_name}", (), ""))
        for root in roots:
            if root is not None:
                self._add(runs, root[1])
        shared = self.reused  # the main tree's, before the exit handler is read
        tree = Concurrency(
            "all", children=tuple(r[0] for r in roots if r is not None), shared=shared
        )
        parallelism = int_or_string(self.spec.get("parallelism"))
        if parallelism is not None:  # workflow parallelism counts pods
            tree = Concurrency("cap", limit=parallelism, children=(tree,), shared=shared)

        # The exit handler ignores the workflow deadline (workflowpod.go): its pods are
        # bounded only by their own template deadlines.
        exits = []
        on_exit = self.spec.get("onExit")
        if isinstance(on_exit, str) and on_exit:
            target = {"template": on_exit, "arguments": arguments}
            exits.append(self.call(target, f"{self.path}.onExit", (), ""))
        if isinstance(hooks.get("exit"), dict):
            exits.append(self.call(hooks["exit"], f"{self.path}.hooks.exit", (), ""))
        after_deadline: set[int] = set()
        for handler in exits:
            if handler is not None:
                self._add(runs, handler[1])
                after_deadline.update(handler[1])
        if self.exhausted:  # a part read is no bound: the problem alone is the answer
            return (), _NOTHING, None
        exit_tree = Concurrency(
            "all", children=tuple(e[0] for e in exits if e is not None), shared=self.reused
        )
        shapes = tuple(
            s._replace(
                runs=INFINITE if i in self.forever else runs.get(i, 0),
                after_deadline=i in after_deadline,
            )
            for i, s in enumerate(self.shapes)
        )
        return shapes, tree, exit_tree if after_deadline else None


def _scaled(counts: Counts, factor: float) -> Counts:
    """The runs of `factor` invocations (zero wins over infinity, as in `times`)."""
    return counts if factor == 1 else {shape: times(runs, factor) for shape, runs in counts.items()}
