"""What a decision depends on besides the request: the price table, the policy, and the few
things the core cannot do purely, passed in as plain functions by the edges.

Loaded once and swapped whole when a file changes, so a review never sees half of a reload.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .catalog import PriceTable
from .policy import Policy
from .types import ApprovalVerifier, Request, Workload

__all__ = [
    "ClaimLookup",
    "Config",
    "Extractor",
    "ParentLookup",
    "ParseText",
    "Referrers",
    "TemplateLookup",
]

# Reads YAML embedded in objects (Argo's podSpecPatch).
ParseText = Callable[[str], Any]
# (namespace, name, cluster scope) -> that WorkflowTemplate's spec, or None if unknown here.
TemplateLookup = Callable[[str, str, bool], "Mapping[str, Any] | None"]
# (namespace, name, cluster scope) -> the live Workflows that run that WorkflowTemplate,
# directly or through other templates (their metadata and spec).
Referrers = Callable[[str, str, bool], "Sequence[Mapping[str, Any]]"]
# (kind: ResourceClaimTemplate or ResourceClaim, namespace, name) -> that object's spec, or
# None if unknown here (DRA claims a pod names: resource.k8s.io).
ClaimLookup = Callable[[str, str, str], "Mapping[str, Any] | None"]
# (API group, resource plural, namespace, name) -> that object as the watch cache last saw it
# (a Deployment a Scale request resizes), or None if unknown here.
ParentLookup = Callable[[str, str, str, str], "Mapping[str, Any] | None"]


@dataclass(frozen=True, slots=True)
class Config:
    """The table and policy, and five functions: `parse_text` reads YAML in objects,
    `lookup` finds a WorkflowTemplate's spec, `referrers` the live Workflows that run one
    (None: they cannot be seen here, as offline), `claims` a DRA claim's or claim
    template's, `verify_approval` checks an approval token's signature. The core thus
    imports no YAML or crypto library, holds no key and reads no cluster."""

    table: PriceTable
    policy: Policy
    parse_text: ParseText | None = None
    lookup: TemplateLookup | None = None
    verify_approval: ApprovalVerifier | None = None
    referrers: Referrers | None = None
    claims: ClaimLookup | None = None
    parents: ParentLookup | None = None


class Extractor(Protocol):
    """Reads one kind of object into the GPU workload it runs: None when it asks for no GPU.
    Raises ObjectError for an object that cannot be read as written."""

    def __call__(self, request: Request, config: Config, /) -> Workload | None: ...
