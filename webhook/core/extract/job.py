"""batch/v1 Jobs and CronJobs, read into Workloads.

A Job runs at most `parallelism` pods at once (never more than `completions`), and its own
`activeDeadlineSeconds` bounds the whole Job however many pods it retries, so the cost is
pod GPUs × concurrent pods × the Job's deadline. Gating the Job, not its pods, puts the
denial in `kubectl apply` rather than in events on the Job nobody reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..catalog import PriceTable
from ..config import ClaimLookup, Config
from ..policy import Policy
from ..types import PodShape, Reason, Request, Workload
from .claims import with_claims
from .cron import read_schedule
from .owner import owner_class, run_of
from .podspec import (
    ObjectError,
    field,
    identity,
    pointer,
    read_deadline,
    read_gpus,
    read_grace,
    read_metadata,
    read_placement,
)

__all__ = ["extract_cronjob", "extract_job"]


def _count(spec: Mapping[str, Any], key: str, path: str) -> int | None:
    value = spec.get(key)
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise ObjectError(f"{path}.{key}", "int", value)
    return value


def _job_workload(
    request: Request,
    job_spec: Mapping[str, Any],
    path: str,
    *,
    kind: str,
    table: PriceTable,
    policy: Policy,
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    metadata: Mapping[str, Any],
    claims_lookup: ClaimLookup | None = None,
) -> Workload | None:
    template = field(job_spec, "template", path, dict, {})
    pod_spec = field(template, "spec", f"{path}.template", dict, {})
    problems: list[Reason] = []
    gpus = read_gpus(pod_spec, f"{path}.template.spec", table, problems)
    unresolved: tuple[str, ...] = ()
    claims = pod_spec.get("resourceClaims")
    if claims:  # DRA: a claim template is one claim per pod; a ResourceClaim is shared
        namespace = identity(request, metadata)[0]
        gpus, unresolved = with_claims(
            gpus,
            claims,
            f"{path}.template.spec",
            namespace,
            problems,
            table=table,
            lookup=claims_lookup,
        )
    if not gpus and not problems and not unresolved:
        return None
    _, pod_labels, pod_annotations = read_metadata(template, f"{path}.template")
    parallelism = _count(job_spec, "parallelism", path)
    completions = _count(job_spec, "completions", path)
    concurrent = 1 if parallelism is None else parallelism
    if completions is not None:
        concurrent = min(concurrent, completions)
    # The Job's labels, or failing that its pod template's, attribute it; declarations may
    # sit on either too (the Job's win).
    merged_labels = {**pod_labels, **labels}
    merged_annotations = {**pod_annotations, **annotations}
    placement = read_placement(pod_spec, f"{path}.template.spec", merged_annotations)
    namespace, name, generate_name = identity(request, metadata)
    workload_class = owner_class(metadata, request.username, policy, created=kind)
    return Workload(
        kind=kind,
        namespace=namespace,
        name=name,
        generate_name=generate_name,
        labels=merged_labels,
        annotations=merged_annotations,
        workload_class=workload_class,
        pods=(
            PodShape(
                label="pod",
                gpus=gpus,
                placement=placement,
                replicas=concurrent,
                grace=read_grace(pod_spec, f"{path}.template.spec"),
            ),
        ),
        existing_deadline=read_deadline(job_spec, path),
        deadline_path=f"{pointer(path)}/activeDeadlineSeconds",
        problems=tuple(problems),
        unresolved=unresolved,
        copy_to=(f"{pointer(path)}/template/metadata",),
        # a CronJob's jobTemplate.spec.suspend only makes its Jobs start suspended
        suspended=kind == "Job" and field(job_spec, "suspend", path, bool, False),
        run_of=run_of(metadata) if workload_class == "run" else "",
    )


def extract_job(request: Request, config: Config, /) -> Workload | None:
    """A Job's GPU workload, or None when its pods ask for no GPU."""
    metadata, labels, annotations = read_metadata(request.obj)
    spec = field(request.obj, "spec", "", dict, {})
    return _job_workload(
        request,
        spec,
        "spec",
        kind="Job",
        table=config.table,
        policy=config.policy,
        claims_lookup=config.claims,
        labels=labels,
        annotations=annotations,
        metadata=metadata,
    )


def extract_cronjob(request: Request, config: Config, /) -> Workload | None:
    """A CronJob: its jobTemplate priced like a Job, per run, and its schedule per month.
    A suspended CronJob is priced all the same: it can be resumed without a review that
    raises its cost (`spec.suspend` is not read)."""
    metadata, labels, annotations = read_metadata(request.obj)
    spec = field(request.obj, "spec", "", dict, {})
    job_template = field(spec, "jobTemplate", "spec", dict, {})
    _, job_labels, job_annotations = read_metadata(job_template, "spec.jobTemplate")
    job_spec = field(job_template, "spec", "spec.jobTemplate", dict, {})
    workload = _job_workload(
        request,
        job_spec,
        "spec.jobTemplate.spec",
        kind="CronJob",
        table=config.table,
        policy=config.policy,
        claims_lookup=config.claims,
        labels={**job_labels, **labels},
        annotations={**job_annotations, **annotations},
        metadata=metadata,
    )
    if workload is None:
        return None  # no GPU: its schedule is not costgate's to read
    schedule = read_schedule(
        spec,
        schedules=(("spec.schedule", spec.get("schedule", "")),),
        zone_key="timeZone",
        hours_per_month=config.policy.hours_per_month,
    )
    return workload._replace(schedule=schedule)
