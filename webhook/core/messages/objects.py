"""Sentences about what an object says: its labels, run time, GPU requests and types, and
the templates it runs."""

from __future__ import annotations

from collections.abc import Iterable

from ..quantities import format_hours
from ..types import (
    ANNOTATION_GPU_TYPE,
    ANNOTATION_MAX_FANOUT,
    ANNOTATION_MAX_RUNTIME,
)
from .text import (
    MAX_LISTED,
    format_duration,
    money,
    object_name,
    quote,
    warning,
)

__all__ = [
    "annotation_alone_denied",
    "annotation_alone_priced",
    "annotation_outpriced",
    "boundary_placement",
    "deadline_lowered",
    "default_runtime",
    "default_runtime_not_injected",
    "grace_too_long",
    "ignored_patch",
    "invalid_gpu_quantity",
    "invalid_label_value",
    "invalid_max_fanout",
    "invalid_runtime",
    "missing_labels",
    "resource_template",
    "runtime_ignored_for_serving",
    "runtime_too_long",
    "template_ref_unresolved",
    "too_many_gpus",
    "too_much_work",
    "unknown_gpu_annotation",
    "unknown_gpu_denied",
    "unknown_gpu_priced",
    "unknown_template",
    "unreadable_patch",
    "unresolved_denied",
    "unresolved_patch",
    "unresolved_resource",
    "workflow_template_ref",
]


def missing_labels(kind: str, name: str, missing: Iterable[str], required: Iterable[str]) -> str:
    missing = list(missing)
    noun, pronoun = ("label", "it") if len(missing) == 1 else ("labels", "them")
    return (
        f"GPU {object_name(kind, name)} is missing required {noun} {', '.join(missing)} "
        f"(required: {', '.join(required)}, so every GPU hour can be attributed); "
        f"add {pronoun} under metadata.labels"
    )


def invalid_label_value(key: str, value: object) -> str:
    return (
        f"label {key}={quote(value)} is not a valid label value; use at most 63 letters, digits, "
        f"'-', '_' or '.', starting and ending with a letter or digit"
    )


def invalid_runtime(value: object) -> str:
    return (
        f"annotation {ANNOTATION_MAX_RUNTIME}={quote(value)} is not a duration; "
        f"write a positive whole duration such as 90m, 12h, 2d or 3600s"
    )


def runtime_too_long(seconds: int, cap: int, namespace: str) -> str:
    return (
        f"declared max runtime {format_duration(seconds)} ({ANNOTATION_MAX_RUNTIME}) exceeds the "
        f"{format_duration(cap)} cap for namespace {quote(namespace)}; split the work into "
        f"checkpointed runs of at most {format_duration(cap)}"
    )


def invalid_gpu_quantity(container: str, resource: str, value: object) -> str:
    return (
        f"invalid GPU request: container {quote(container)} asks for {resource} {quote(value)}; "
        f"GPU counts must be whole numbers"
    )


def grace_too_long(pod: str, seconds: int, cap: int, namespace: str) -> str:
    return (
        f"GPU pod {quote(pod)} asks for terminationGracePeriodSeconds {quote(seconds)}, above "
        f"the {cap} s a GPU pod may keep its GPUs after its deadline in namespace "
        f"{quote(namespace)} (policy max_grace_seconds); set terminationGracePeriodSeconds to "
        f"at most {cap} and keep preStop hooks within it"
    )


def too_many_gpus(count: int, limit: int) -> str:
    return (
        f"invalid GPU request: one pod asks for {count} GPUs, more than the {limit} a single pod "
        f"may use (policy max_gpus_per_pod); check resources.limits"
    )


def unknown_gpu_annotation(value: str, known: Iterable[str]) -> str:
    return (
        f"annotation {ANNOTATION_GPU_TYPE}={quote(value)} names no GPU type in the pricing table; "
        f"use one of {', '.join(sorted(known))}"
    )


def _unknown_labels(labels: Iterable[str]) -> str:
    labels = list(labels)
    if not labels:
        return ""
    more = len(labels) - MAX_LISTED
    labels = [quote(label) for label in labels[:MAX_LISTED]]
    if more > 0:
        labels.append(f"{more:,} more")
    return f" (no GPU type in the pricing table matches {', '.join(labels)})"


def _pin_it(annotation: bool, example: str = "") -> str:
    """The way to pin a GPU type: a node selector, and the annotation only where the policy
    takes it at its word (gpu_type_annotation: trusted)."""
    way = f"pin it with a GPU nodeSelector{example}"
    return f"{way} or annotation {ANNOTATION_GPU_TYPE}" if annotation else way


def unknown_gpu_denied(namespace: str, labels: Iterable[str], *, annotation: bool = False) -> str:
    return (
        f"the GPU type is not pinned{_unknown_labels(labels)} and namespace {quote(namespace)} "
        f"does not price unknown GPUs; "
        f"{_pin_it(annotation, ' such as nvidia.com/gpu.product')}"
    )


def unknown_gpu_priced(
    gpu: str, usd_per_hour: float, labels: Iterable[str], *, annotation: bool = False
) -> str:
    return warning(
        f"GPU type not pinned{_unknown_labels(labels)}; priced as {gpu} ({money(usd_per_hour)}/h), "
        f"the dearest it could be; {_pin_it(annotation)}"
    )


def _annotation_alone(annotated: str) -> str:
    return f"{ANNOTATION_GPU_TYPE}={annotated} alone does not keep the pod on {annotated} nodes"


def annotation_alone_denied(annotated: str, namespace: str) -> str:
    return (
        f"{_annotation_alone(annotated)}, and namespace {quote(namespace)} does not price "
        f"unpinned GPUs (policy gpu_type_annotation: checked); pin {annotated} with a GPU "
        f"nodeSelector such as nvidia.com/gpu.product"
    )


def annotation_alone_priced(annotated: str, gpu: str, usd_per_hour: float) -> str:
    return warning(
        f"{_annotation_alone(annotated)} (policy gpu_type_annotation: checked); priced as {gpu} "
        f"({money(usd_per_hour)}/h), the dearest it could be; pin {annotated} with a GPU "
        f"nodeSelector"
    )


def annotation_outpriced(annotated: str, allowed: str) -> str:
    return warning(
        f"{ANNOTATION_GPU_TYPE} says {annotated} but the node selectors allow {allowed}; "
        f"priced as {allowed}"
    )


def default_runtime(seconds: int) -> str:
    return warning(
        f"no {ANNOTATION_MAX_RUNTIME} annotation; default runtime {format_hours(seconds)} injected "
        f"(spec.activeDeadlineSeconds={seconds})"
    )


def default_runtime_not_injected(seconds: int) -> str:
    return warning(
        f"no {ANNOTATION_MAX_RUNTIME} annotation; priced at the default {format_hours(seconds)}, "
        f"which enforce mode would set as spec.activeDeadlineSeconds"
    )


def deadline_lowered(old: int, new: int) -> str:
    return warning(
        f"spec.activeDeadlineSeconds lowered from {old} to {new} (the declared max runtime)"
    )


def runtime_ignored_for_serving() -> str:
    return warning(
        f"{ANNOTATION_MAX_RUNTIME} is ignored for serving pods (owned by a ReplicaSet, StatefulSet "
        f"or DaemonSet): they are priced per month and get no deadline"
    )


def invalid_max_fanout(value: object) -> str:
    return (
        f"annotation {ANNOTATION_MAX_FANOUT}={quote(value)} is not a whole number; declare the "
        f"most items a withParam loop can have, e.g. 50"
    )


def unknown_template(name: str) -> str:
    return f"a step calls template {quote(name)}, which the workflow does not define"


def template_ref_unresolved(where: str, owner: str, template: str) -> str:
    return (
        f"{where} uses template {quote(template)} of WorkflowTemplate {quote(owner)}, which "
        f"costgate cannot read, so its GPUs are not priced"
    )


def workflow_template_ref(name: str) -> str:
    return (
        f"the workflow runs WorkflowTemplate {quote(name)}, which costgate cannot read, so its "
        f"GPUs are not priced; submit the template first, or estimate both together with "
        f"costgate estimate -f template.yaml -f workflow.yaml"
    )


def unresolved_denied(detail: str, namespace: str) -> str:
    return f"{detail}; namespace {quote(namespace)} denies workloads it cannot price"


def resource_template(name: str) -> str:
    return warning(
        f"template {quote(name)} creates an object; its GPUs are priced when it is created"
    )


def unreadable_patch(where: str) -> str:
    return (
        f"{where} cannot be read at admission (it is not JSON or YAML until Argo fills in its "
        f"{{{{...}}}} parameters), so the GPUs it may set cannot be priced; request GPUs in "
        f"the template's resources instead"
    )


def _give_value(tag: str) -> str:
    """How to make an Argo `{{tag}}` known at admission."""
    name = tag.strip("{} ")
    if name.startswith("workflow.parameters."):
        parameter = quote(name.removeprefix("workflow.parameters."))
        return f"give parameter {parameter} a value in spec.arguments.parameters"
    if name.startswith("inputs.parameters."):
        parameter = quote(name.removeprefix("inputs.parameters."))
        return (
            f"pass input {parameter} a value known at submission (the calling step's "
            f"arguments, spec.arguments for the entrypoint, or the input's default)"
        )
    return "write the resources out, or take them from a parameter given a value in spec.arguments"


def unresolved_patch(where: str, tag: str) -> str:
    return (
        f"{where} cannot be read at admission: Argo fills in {quote(tag)} only when it runs the "
        f"workflow, so the GPUs it may set cannot be priced; {_give_value(tag)}"
    )


def unresolved_resource(where: str, container: object, entry: str, tag: str) -> str:
    return (
        f"{where}: container {quote(container)} asks for resources {quote(entry)}, which Argo "
        f"fills in ({quote(tag)}) only when it runs the workflow, so its GPUs cannot be priced; "
        f"{_give_value(tag)}"
    )


def boundary_placement(template: str, caller: str) -> str:
    return warning(
        f"template {quote(template)} pins no node of its own and Argo before 3.6 does not give "
        f"it the nodeSelector/affinity of {quote(caller)} (argo-workflows #12568): priced at "
        f"the dearer (policy argo_boundary_placement: safe); pin {quote(template)} itself"
    )


def ignored_patch(where: str) -> str:
    return warning(f"{where} cannot be read at admission; it names no resources, so ignored")


def too_much_work(cap: int) -> str:
    return (
        f"the workflow takes more than {cap:,} steps to read (templates calling templates, "
        f"each call read again under every caller); a review may take no more, so that it "
        f"cannot hold up the others; call fewer templates per level, or run the levels as "
        f"separate Workflows"
    )
