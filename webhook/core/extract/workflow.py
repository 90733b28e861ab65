"""Argo Workflows, CronWorkflows and (Cluster)WorkflowTemplates, read into Workloads.

This module owns the objects: where each kind keeps its WorkflowSpec and metadata, joining a
`workflowTemplateRef` under the Workflow's own spec, and the Workload made of what
workflowspec's reader found in that spec (pod shapes, a Concurrency tree, an exit handler).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import messages
from ..config import Config, TemplateLookup
from ..types import Concurrency, PodShape, Request, Workload
from .argo import merge
from .argoparams import workflow_scope
from .argopod import TemplatePods
from .cron import read_schedule
from .owner import owner_class, run_of
from .podspec import ObjectError, field, identity, pointer, read_deadline, read_metadata
from .workflowspec import WorkflowReader

__all__ = [
    "extract_cronworkflow",
    "extract_workflow",
    "extract_workflow_template",
]


def _join(
    spec: Mapping[str, Any], lookup: TemplateLookup | None, namespace: str
) -> tuple[Mapping[str, Any], str | None]:
    """The spec a Workflow runs: with `workflowTemplateRef`, the referenced template's spec
    under the Workflow's own (Argo's JoinWorkflowSpec: the Workflow wins). The second value
    names the template when it cannot be read here."""
    ref = spec.get("workflowTemplateRef")
    if ref is None:
        return spec, None
    if type(ref) is not dict:
        raise ObjectError("spec.workflowTemplateRef", "object", ref)
    name = str(ref.get("name", ""))
    base = lookup(namespace, name, bool(ref.get("clusterScope"))) if lookup else None
    if not isinstance(base, Mapping):
        return spec, name
    return merge(dict(base), {k: v for k, v in spec.items() if k != "workflowTemplateRef"}), None


def _workflow_workload(
    request: Request,
    spec: Mapping[str, Any],
    path: str,
    *,
    kind: str,
    config: Config,
    metadata: Mapping[str, Any],
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    copy_to: tuple[str, ...],
) -> Workload | None:
    namespace, name, generate_name = identity(request, metadata)
    workload_class = owner_class(metadata, request.username, config.policy, created=kind)
    lookup = config.lookup
    joined, missing = _join(spec, lookup, namespace)
    own = kind in ("Workflow", "CronWorkflow")  # a template's metadata is not its runs'
    parameters = workflow_scope(
        joined,
        # generateName: Argo's name is that and five letters or digits; a stand-in of the
        # same kind is as harmless wherever it lands (no "/", no quote: never a resource)
        name=(name or (generate_name and f"{generate_name}xxxxx")) if kind == "Workflow" else "",
        namespace=namespace,
        labels=labels if own else {},
        annotations=annotations if own else {},
    )
    pods = TemplatePods(
        joined,
        path,
        table=config.table,
        annotations=annotations,
        parse_text=config.parse_text,
        parameters=parameters,
        boundary=config.policy.for_namespace(namespace).argo_boundary_placement,
    )
    reader = WorkflowReader(pods, lookup=lookup, namespace=namespace)
    shapes: tuple[PodShape, ...] = ()
    tree = Concurrency("all")
    exit_tree: Concurrency | None = None
    if missing is not None:
        reader.unresolved.append(messages.workflow_template_ref(missing))
    else:
        shapes, tree, exit_tree = reader.read()
    if not shapes and not reader.problems and not reader.unresolved:
        return None
    return Workload(
        kind=kind,
        namespace=namespace,
        name=name,
        generate_name=generate_name,
        labels=labels,
        annotations=annotations,
        workload_class=workload_class,
        pods=shapes,
        existing_deadline=read_deadline(joined, path),  # a WorkflowTemplate's counts too
        deadline_path=f"{pointer(path)}/activeDeadlineSeconds",
        problems=tuple(dict.fromkeys(reader.problems)),  # a template read per its inputs
        copy_to=copy_to,
        concurrency=tree,
        exit_concurrency=exit_tree,
        notes=tuple(dict.fromkeys(reader.notes)),
        unresolved=tuple(reader.unresolved),
        informational=kind in ("WorkflowTemplate", "ClusterWorkflowTemplate"),
        run_of=run_of(metadata) if workload_class == "run" else "",
    )


def _top_level(
    request: Request, kind: str, copy_to: tuple[str, ...], config: Config
) -> Workload | None:
    """A Workflow or WorkflowTemplate: the spec at the top of the object."""
    metadata, labels, annotations = read_metadata(request.obj)
    return _workflow_workload(
        request,
        field(request.obj, "spec", "", dict, {}),
        "spec",
        kind=kind,
        config=config,
        metadata=metadata,
        labels=labels,
        annotations=annotations,
        copy_to=copy_to,
    )


def extract_workflow(request: Request, config: Config, /) -> Workload | None:
    """A Workflow's GPU workload, or None when none of its templates asks for a GPU.
    The config's `parse_text` reads YAML podSpecPatch, its `lookup` WorkflowTemplates."""
    copy_to = ("/spec/podMetadata",)
    return _top_level(request, "Workflow", copy_to, config)


def extract_workflow_template(request: Request, config: Config, /) -> Workload | None:
    """A (Cluster)WorkflowTemplate: checked for labels and priced for information."""
    return _top_level(request, request.kind, (), config)


def extract_cronworkflow(request: Request, config: Config, /) -> Workload | None:
    """A CronWorkflow: its workflowSpec priced like a Workflow, per run, and its schedule
    (`schedule`, or `schedules` from Argo 3.6) per month. Suspended, it is priced all the
    same: it can be resumed."""
    metadata, labels, annotations = read_metadata(request.obj)
    spec = field(request.obj, "spec", "", dict, {})
    workflow_metadata = field(spec, "workflowMetadata", "spec", dict, {})
    run_labels = field(workflow_metadata, "labels", "spec.workflowMetadata", dict, {})
    run_annotations = field(workflow_metadata, "annotations", "spec.workflowMetadata", dict, {})
    workflow_spec = field(spec, "workflowSpec", "spec", dict, {})
    workload = _workflow_workload(
        request,
        workflow_spec,
        "spec.workflowSpec",
        kind="CronWorkflow",
        config=config,
        metadata=metadata,
        labels={**run_labels, **labels},
        annotations={**run_annotations, **annotations},
        copy_to=("/spec/workflowSpec/podMetadata", "/spec/workflowMetadata"),
    )
    if workload is None:
        return None
    listed = field(spec, "schedules", "spec", list, [])
    schedules = tuple((f"spec.schedules[{i}]", v) for i, v in enumerate(listed))
    if spec.get("schedule") is not None or not schedules:
        schedules = (("spec.schedule", spec.get("schedule", "")), *schedules)
    schedule = read_schedule(
        spec,
        schedules=schedules,
        zone_key="timezone",
        hours_per_month=config.policy.hours_per_month,
    )
    return workload._replace(schedule=schedule)
