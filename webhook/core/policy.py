"""The policy as the core reads it: cluster defaults, per-namespace overrides, trusted
controllers. Built once from the policy YAML by `webhook.tables`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from .kindspec import KindSpec
from .types import Mode
from .usage import Budget, Quota

_NO_QUOTA = Quota()
_NO_BUDGET = Budget()

__all__ = [
    "ApproverIdentities",
    "BoundaryPlacement",
    "ControllerRole",
    "NamespacePolicy",
    "Policy",
    "TrustedController",
    "UnknownGpuRule",
]

UnknownGpuRule = Literal["most-expensive", "deny"]
# Whether an Argo pod whose template sets no nodeSelector/affinity gets those of the steps or
# DAG template that calls it: Argo 3.6 and later (inherited), up to 3.5 (not-inherited,
# argo-workflows #12568), or not known (safe: priced at the dearer of the two).
BoundaryPlacement = Literal["safe", "inherited", "not-inherited"]
# priced: the owner was priced when it was submitted (Workflow, Job): its pods are not.
# serving: the owner runs pods without end (ReplicaSet, StatefulSet, DaemonSet): price per month.
ControllerRole = Literal["priced", "serving"]


@dataclass(frozen=True, slots=True)
class ApproverIdentities:
    """The Kubernetes identities one approver (a person) submits as: user names (OIDC names,
    service accounts they can impersonate) and groups (all lowercase). A workload submitted
    under any of them is theirs, and their approval does not count for it."""

    users: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class NamespacePolicy:
    """The effective rules for one namespace (defaults with its overrides applied)."""

    required_labels: tuple[str, ...] = ("owner", "experiment")
    default_runtime_seconds: int = 12 * 3600
    max_runtime_seconds: int = 7 * 86400
    threshold_usd: float = 100.0
    serving_threshold_usd_per_month: float = 2000.0
    unknown_gpu: UnknownGpuRule = "most-expensive"
    mode: Mode = "enforce"
    max_gpus_per_pod: int = 64
    # The longest terminationGracePeriodSeconds a GPU pod may ask for: the kubelet keeps a
    # stopped pod's GPUs that long after its deadline (and after a delete).
    max_grace_seconds: int = 300
    # A Workflow that runs a WorkflowTemplate costgate cannot read: deny, or warn and allow.
    unresolved_templates: Literal["deny", "warn"] = "deny"
    # Above the threshold: a valid approval lets the workload through, or nothing does.
    over_threshold: Literal["require-approval", "deny"] = "require-approval"
    # Who may approve here (approver names or key ids); empty: any listed approver.
    approvers: frozenset[str] = frozenset()
    max_approval_usd: float | None = None  # the most one approval may grant here
    # Each approver's other identities, by approver name or key id (the same in every
    # namespace: a person is who they are everywhere).
    approver_identities: Mapping[str, ApproverIdentities] = field(default_factory=dict)
    # Only these GPU types may run here (empty: any type in the table).
    allowed_gpu_types: frozenset[str] = frozenset()
    quota: Quota = _NO_QUOTA  # the namespace as a whole
    owner_quota: Quota = _NO_QUOTA  # each owner (label value), unless named in owner_quotas
    owner_quotas: Mapping[str, Quota] = field(default_factory=dict)
    budget: Budget = _NO_BUDGET  # experiments (label values), alone or together
    quota_warning_ratio: float = 0.8  # warn above this share of a quota or budget
    # checked: the gpu-type annotation counts only where a node selector or affinity allows
    # that type (alone, nothing makes the scheduler honour it); trusted, an explicit opt-in:
    # the annotation alone names the type
    gpu_type_annotation: Literal["trusted", "checked"] = "checked"
    # Which Argo the workflows here run under, as far as placement goes (BoundaryPlacement)
    argo_boundary_placement: BoundaryPlacement = "safe"
    # Whether any quota or budget applies here (else the state store is not read). Derived
    # once: every GPU review asks.
    limits_anything: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        limited = (
            not self.quota.empty
            or not self.owner_quota.empty
            or bool(self.owner_quotas)
            or self.budget.usd is not None
            or bool(self.budget.experiments)
            or self.budget.namespace_usd is not None
        )
        object.__setattr__(self, "limits_anything", limited)

    def quota_for_owner(self, owner: str) -> Quota:
        return self.owner_quotas.get(owner, self.owner_quota)


@dataclass(frozen=True, slots=True)
class TrustedController:
    """Pods owned by `kind` in `api_group` get `role` only when one of `users` creates them:
    anyone can write an ownerReference, only the controller holds its service account."""

    kind: str
    api_group: str
    users: frozenset[str]
    role: ControllerRole
    creates: frozenset[str] = frozenset({"Pod"})  # the kinds it makes for its owner


@dataclass(frozen=True, slots=True)
class Policy:
    default: NamespacePolicy = field(default_factory=NamespacePolicy)
    namespaces: Mapping[str, NamespacePolicy] = field(default_factory=dict)
    exempt_namespaces: frozenset[str] = frozenset()
    trusted_controllers: tuple[TrustedController, ...] = ()
    on_internal_error: Literal["deny", "allow"] = "deny"
    # Quotas and budgets when costgate's state is out of reach (cache not in sync, ledger
    # not writable): deny the workloads they apply to, or allow them unrecorded.
    on_state_unavailable: Literal["deny", "allow"] = "deny"
    hours_per_month: float = 730.0
    approval_clock_skew_seconds: int = 60
    source: str = ""
    # The kinds priced through the kinds table (shipped entries, with the policy's own
    # `kinds:` added or overriding them), by (API group, kind).
    kinds: Mapping[tuple[str, str], KindSpec] = field(default_factory=dict)
    # Every trusted controller's account, derived once: every update asks (two dozen
    # controllers with the kinds table's operators).
    controller_users: frozenset[str] = field(init=False, default=frozenset())

    def __post_init__(self) -> None:
        users = frozenset(u for c in self.trusted_controllers for u in c.users)
        object.__setattr__(self, "controller_users", users)

    def for_namespace(self, namespace: str) -> NamespacePolicy:
        return self.namespaces.get(namespace, self.default)

    def is_controller(self, username: str) -> bool:
        """Whether `username` is one of the trusted controllers' accounts."""
        return username in self.controller_users

    def controller_role(
        self, api_group: str, kind: str, username: str, created: str = "Pod"
    ) -> ControllerRole | None:
        """The role of an owner of `kind` when `username` creates a `created` for it."""
        for controller in self.trusted_controllers:
            if (
                controller.kind == kind
                and controller.api_group == api_group
                and username in controller.users
                and created in controller.creates
            ):
                return controller.role
        return None
