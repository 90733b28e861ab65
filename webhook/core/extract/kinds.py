"""The kinds the core prices, as data: (API group, kind) -> the extractor that reads it.

Pods, Jobs and Argo's kinds have readers of their own (their semantics need code); every
other kind the policy's kinds table describes is read by the table's generic reader. An
object of any other kind is not the core's to judge (the webhook lets it through).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from ..config import Extractor
from ..policy import Policy
from .claims import extract_resource_claim, extract_resource_claim_template
from .job import extract_cronjob, extract_job
from .pod import extract_pod
from .table import extract_table
from .workflow import extract_cronworkflow, extract_workflow, extract_workflow_template

__all__ = ["EXTRACTORS", "extract_table", "extractor_for", "handles"]

EXTRACTORS: Mapping[tuple[str, str], Extractor] = MappingProxyType(
    {
        ("", "Pod"): extract_pod,
        ("batch", "Job"): extract_job,
        ("batch", "CronJob"): extract_cronjob,
        ("argoproj.io", "Workflow"): extract_workflow,
        ("argoproj.io", "CronWorkflow"): extract_cronworkflow,
        ("argoproj.io", "WorkflowTemplate"): extract_workflow_template,
        ("argoproj.io", "ClusterWorkflowTemplate"): extract_workflow_template,
        ("resource.k8s.io", "ResourceClaim"): extract_resource_claim,
        ("resource.k8s.io", "ResourceClaimTemplate"): extract_resource_claim_template,
    }
)


def extractor_for(group: str, kind: str, policy: Policy | None = None) -> Extractor | None:
    """The extractor for objects of this API group and kind (the kinds table's reader for
    the kinds `policy` describes); None when the core does not price them."""
    found = EXTRACTORS.get((group, kind))
    if found is None and policy is not None and (group, kind) in policy.kinds:
        return extract_table
    return found


def handles(group: str, kind: str, policy: Policy | None = None) -> bool:
    """Whether the core prices objects of this API group and kind."""
    return (group, kind) in EXTRACTORS or (policy is not None and (group, kind) in policy.kinds)
