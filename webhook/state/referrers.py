"""Which live Workflows run which (Cluster)WorkflowTemplates: an index the watch threads keep
and a template review reads (`core.config.Referrers`), so that an edit of a template is
priced against the Workflows it would change.

The index is built as the watch sees objects, never per review: a Workflow is filed under
every template its spec names (`workflowTemplateRef`, each `templateRef`), a template under
the templates it names in turn, so the Workflows reached through other templates are found
too. Finished Workflows are dropped. Only a Workflow's metadata and spec are kept (its
status can be megabytes of node state).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from ..core.holding import finished

__all__ = ["TemplateKey", "WorkflowsByTemplate", "references"]

# (namespace, or "" for a ClusterWorkflowTemplate, name, cluster scope). A namespaced
# template named in a ClusterWorkflowTemplate is looked up in each Workflow's namespace:
# its namespace is then "*".
TemplateKey = tuple[str, str, bool]
_ANY_NAMESPACE = "*"


def _key(ref: Mapping[str, Any], namespace: str) -> TemplateKey:
    cluster = bool(ref.get("clusterScope"))
    scope = "" if cluster else (namespace or _ANY_NAMESPACE)
    return (scope, str(ref.get("name", "")), cluster)


def references(spec: Any, namespace: str) -> frozenset[TemplateKey]:
    """The templates a WorkflowSpec names, read where it stands in `namespace` ("" for a
    ClusterWorkflowTemplate's). Walks the spec with a stack, so nesting cannot overflow."""
    found: set[TemplateKey] = set()
    if not isinstance(spec, dict):
        return frozenset()
    ref = spec.get("workflowTemplateRef")
    if isinstance(ref, dict):
        found.add(_key(ref, namespace))
    stack: list[Any] = [spec.get("templates"), spec.get("hooks")]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            ref = value.get("templateRef")
            if isinstance(ref, dict):
                found.add(_key(ref, namespace))
            stack.extend(v for v in value.values() if isinstance(v, (dict, list)))
        elif isinstance(value, list):
            stack.extend(v for v in value if isinstance(v, (dict, list)))
    return frozenset(found)


class WorkflowsByTemplate:
    """The index, and the `core.config.Referrers` callable that reads it. Written by the
    watch threads, read by review threads: one lock, held for dict operations only."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._workflows: dict[str, tuple[Mapping[str, Any], frozenset[TemplateKey]]] = {}
        self._runs: dict[TemplateKey, set[str]] = {}  # template -> uids of Workflows
        self._named: dict[TemplateKey, frozenset[TemplateKey]] = {}  # template -> it names
        self._named_by: dict[TemplateKey, set[TemplateKey]] = {}  # template -> who names it

    # -- Workflows --------------------------------------------------------------------

    def workflow(self, obj: Mapping[str, Any]) -> str:
        """File a Workflow the watch saw (or drop it: finished, or naming no template)."""
        metadata = obj.get("metadata")
        metadata = metadata if isinstance(metadata, dict) else {}
        uid = str(metadata.get("uid", ""))
        refs = frozenset[TemplateKey]()
        if not finished("Workflow", obj):
            refs = references(obj.get("spec"), str(metadata.get("namespace", "")))
        with self._lock:
            self._drop(uid)
            if refs:
                slim = {k: v for k, v in metadata.items() if k != "managedFields"}
                self._workflows[uid] = ({"metadata": slim, "spec": obj.get("spec")}, refs)
                for ref in refs:
                    self._runs.setdefault(ref, set()).add(uid)
        return uid

    def forget(self, uid: str) -> None:
        with self._lock:
            self._drop(uid)

    def keep_workflows(self, uids: Iterable[str]) -> None:
        """After a relist: drop the Workflows deleted while the watch was away."""
        listed = set(uids)
        with self._lock:
            for uid in [u for u in self._workflows if u not in listed]:
                self._drop(uid)

    def _drop(self, uid: str) -> None:
        held = self._workflows.pop(uid, None)
        if held is None:
            return
        for ref in held[1]:
            users = self._runs.get(ref)
            if users is not None:
                users.discard(uid)
                if not users:
                    del self._runs[ref]

    # -- templates --------------------------------------------------------------------

    def template(self, key: TemplateKey, spec: Any) -> None:
        """File the templates a (Cluster)WorkflowTemplate names."""
        named = references(spec, key[0])
        with self._lock:
            self._unname(key)
            if named:
                self._named[key] = named
                for ref in named:
                    self._named_by.setdefault(ref, set()).add(key)

    def forget_template(self, key: TemplateKey) -> None:
        with self._lock:
            self._unname(key)

    def _unname(self, key: TemplateKey) -> None:
        for ref in self._named.pop(key, ()):
            callers = self._named_by.get(ref)
            if callers is not None:
                callers.discard(key)
                if not callers:
                    del self._named_by[ref]

    # -- what a template review reads -------------------------------------------------

    def __call__(self, namespace: str, name: str, cluster: bool) -> list[Mapping[str, Any]]:
        """The live Workflows that run template `name` (of `namespace`, or cluster-scoped),
        directly or through templates that name it."""
        start: TemplateKey = ("" if cluster else namespace, name, cluster)
        with self._lock:
            reached = {start}
            todo = [start]
            while todo:
                scope, named, scoped = todo.pop()
                callers = set(self._named_by.get((scope, named, scoped), ()))
                if not scoped:  # named by a ClusterWorkflowTemplate, in any namespace
                    callers |= self._named_by.get((_ANY_NAMESPACE, named, False), set())
                for caller in callers - reached:
                    reached.add(caller)
                    todo.append(caller)
            uids: set[str] = set()
            for key in reached:
                uids |= self._runs.get(key, set())
            return [self._workflows[uid][0] for uid in sorted(uids)]

    def __len__(self) -> int:
        with self._lock:
            return len(self._workflows)
