"""The values the decision core passes between its stages: requests, workloads, estimates,
reasons and approvals (decisions are `verdict`'s, usage values `usage`'s).

Everything here is immutable: the core builds them once per request and never mutates them,
so the server and the CLI can share them without copying. The per-request values are typed
NamedTuples rather than frozen dataclasses: a frozen dataclass pays an object.__setattr__
per field at construction (1.5 µs for 14 fields here, against 0.3 µs), and a request builds
about ten of them inside a 30 µs budget.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

__all__ = [
    "ANNOTATION_APPROVAL",
    "ANNOTATION_ESTIMATED_COST",
    "ANNOTATION_GPU_TYPE",
    "ANNOTATION_MAX_FANOUT",
    "ANNOTATION_MAX_NODES",
    "ANNOTATION_MAX_RUNTIME",
    "ANNOTATION_PRICED_BY",
    "COSTGATE_PREFIX",
    "DEFAULT_GRACE_SECONDS",
    "EMPTY",
    "INFINITE",
    "MALFORMED",
    "NOBODY",
    "Approval",
    "ApprovalVerifier",
    "Concurrency",
    "Estimate",
    "EstimateLine",
    "GpuRequest",
    "Mode",
    "Operation",
    "Placement",
    "PodShape",
    "Reason",
    "ReasonCode",
    "Request",
    "Requester",
    "Schedule",
    "Workload",
    "WorkloadClass",
]

COSTGATE_PREFIX = "costgate.io/"
ANNOTATION_MAX_RUNTIME = "costgate.io/max-runtime"
ANNOTATION_GPU_TYPE = "costgate.io/gpu-type"
ANNOTATION_ESTIMATED_COST = "costgate.io/estimated-cost"
ANNOTATION_APPROVAL = "costgate.io/approval"
ANNOTATION_MAX_FANOUT = "costgate.io/max-fanout"  # the most items a withParam loop has
# On the pod templates of an object priced through the kinds table: "<group>/<Kind>" of it.
# Its controllers' pods carrying it are not priced again; quotas count them as they run.
ANNOTATION_PRICED_BY = "costgate.io/priced-by"
# The most nodes a DaemonSet may run on: a DaemonSet is priced per node.
ANNOTATION_MAX_NODES = "costgate.io/max-nodes"

# terminationGracePeriodSeconds when a pod sets none: the API server writes it in.
DEFAULT_GRACE_SECONDS = 30

ReasonCode = Literal[
    "missing-labels",  # no owner/experiment label (or one that is not a label value)
    "invalid-runtime",  # costgate.io/max-runtime is not a duration
    "runtime-too-long",  # longer than the namespace allows
    "invalid-gpu-request",  # GPUs that cannot be read, too many per pod, or unbounded
    "unknown-gpu-type",  # a GPU type the table does not know, where policy denies guessing
    "over-threshold",  # dearer than the namespace's threshold, without an approval
    "invalid-approval",  # an approval that does not cover this workload
    "over-quota",  # more GPUs or committed cost than a quota leaves
    "over-budget",  # more than an experiment's budget leaves
    "gpu-type-not-allowed",  # a GPU type the namespace may not use
    "internal-error",  # costgate failed; the request id is in its log
    # A Workflow runs a WorkflowTemplate costgate cannot read, so it cannot be priced
    # (denied or warned per the policy's unresolved_templates).
    "template-not-found",
    # A review or object the webhook cannot read at all (wrong types, missing object). Kept
    # apart from internal-error because the fix is on the sender's side.
    "invalid-request",
    # Quotas or budgets apply but costgate's state is out of reach (cache not in sync, ledger
    # not writable); the way through is to retry.
    "state-unavailable",
]

# The object cannot be read as written: the mutating webhook refuses it too, since it has
# nothing to patch, whereas policy denials are the validating webhook's (it sees the object
# after every mutation).
MALFORMED: frozenset[ReasonCode] = frozenset(
    {"invalid-request", "invalid-gpu-request", "invalid-runtime"}
)

Mode = Literal["enforce", "warn"]
Operation = Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]

# batch: bounded by a deadline, priced as a total. serving: runs without end, priced per month.
# controlled: made by a trusted controller for an object costgate already priced.
# run: a Job or Workflow a trusted controller made for a CronJob or CronWorkflow, gated per
# month at submission: priced as one run and charged, not gated again.
WorkloadClass = Literal["batch", "serving", "controlled", "run"]


class Reason(NamedTuple):
    """Why a workload is (or, in warn mode, would be) denied: a stable code and one sentence."""

    code: ReasonCode
    message: str


class Request(NamedTuple):
    """The part of an AdmissionReview request the core reads; built by the wire adapter or CLI."""

    uid: str
    operation: Operation
    group: str
    kind: str
    namespace: str
    name: str
    obj: Mapping[str, Any]
    old_obj: Mapping[str, Any] | None = None
    username: str = ""
    groups: tuple[str, ...] = ()
    dry_run: bool = False
    # request.userInfo.extra as the API server sent it (checked to be lists of strings);
    # impersonating proxies put the person they act for there
    extra: Mapping[str, Sequence[str]] = MappingProxyType({})
    # request.resource as "<group>/<plural>" ("pods" in the core group) and
    # request.subResource: a `kubectl scale` or an HPA sends an autoscaling/v1 Scale for
    # resource "apps/deployments", subresource "scale"
    resource: str = ""
    sub_resource: str = ""


class Requester(NamedTuple):
    """Who submits the workload, as the API server authenticated them (request.userInfo):
    the no-self-approval rule compares it with the approver's identities."""

    username: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, Sequence[str]] = MappingProxyType({})


NOBODY = Requester()  # no user: the CLI's estimate when no --as is given


class GpuRequest(NamedTuple):
    """Effective units of one GPU resource (e.g. nvidia.com/gpu) in one pod."""

    resource: str
    units: int


class Placement(NamedTuple):
    """What a pod says about where it may run, as far as GPU type goes.

    `node_selector` holds (key, value) pairs. `required_terms` are the required node-affinity
    terms: each term is a tuple of (key, operator, values) expressions. Terms are ORed,
    expressions within a term ANDed. All tuples, so a Placement is hashable and the price
    table can remember how it resolved one.
    """

    gpu_type_annotation: str = ""
    node_selector: tuple[tuple[str, str], ...] = ()
    required_terms: tuple[tuple[tuple[str, str, tuple[str, ...]], ...], ...] = ()


class PodShape(NamedTuple):
    """One kind of pod a workload runs: its GPUs, its placement and how many run at once.

    For Workflows, `runs` counts every execution (fan-out × attempts, over every place the
    template is used; None when unbounded) and `deadline` is the per-run limit in seconds
    (None when the template sets none): together they give the per-step upper bound.
    """

    label: str
    gpus: tuple[GpuRequest, ...]
    placement: Placement
    replicas: int = 1
    runs: float | None = None
    deadline: int | None = None
    after_deadline: bool = False  # an exit handler's: runs on after the workflow deadline
    # terminationGracePeriodSeconds as written (None: unset, DEFAULT_GRACE_SECONDS). The
    # kubelet keeps the pod, and its GPUs, that long after the deadline stops it.
    grace: int | None = None
    # Where the pod may run instead, when that depends on the Argo version (a steps/DAG
    # template's nodeSelector reaches its pods from Argo 3.6 on): priced at the dearer.
    alternative: Placement | None = None


INFINITE = float("inf")
EMPTY: Mapping[str, str] = MappingProxyType({})


class Concurrency(NamedTuple):
    """How many pods of each shape can run at once, as a tree evaluated with their prices.

    op `pod`: `times` copies of pods[shape]; `all`: children run together (sum);
    `one`: children run one after another (max); `cap`: at most `limit` pods at once, so
    at most `limit` × the dearest pod below (a Workflow's parallelism); `each`: at most
    `limit` children at once, so at most `limit` × the dearest single invocation of a child
    (a template's parallelism, where a nested steps/dag is one child). `times` multiplies
    any node (fan-out) and may be INFINITE (withParam, recursion) until a cap bounds it.
    """

    op: Literal["pod", "all", "one", "cap", "each"]
    shape: int = -1
    times: float = 1
    limit: int = 0
    children: tuple[Concurrency, ...] = ()
    # Set on a root whose subtrees are shared (a template called from several places is one
    # node): evaluated once per node then, not once per path (2^levels of them). A tree
    # without sharing, the usual one, is evaluated by plain recursion, which is faster.
    shared: bool = False

    def peak(self, rates: Sequence[float]) -> float:
        """The most the tree can cost at once, given each shape's rate (e.g. $/h or GPUs)."""
        if self.shared:
            return _Evaluation(rates).peak(self)
        inner = self.single(rates)
        return 0.0 if inner == 0 else self.times * inner  # 0 × ∞ is 0 here, not NaN

    def single(self, rates: Sequence[float]) -> float:
        """The peak of one invocation (without this node's own fan-out)."""
        if self.shared:
            return _Evaluation(rates).single(self)
        if self.op == "pod":
            return rates[self.shape]
        if self.op == "one":
            return max((child.peak(rates) for child in self.children), default=0.0)
        together = sum(child.peak(rates) for child in self.children)
        if self.op == "cap":
            return min(together, self.limit * max((rates[i] for i in self.shapes()), default=0.0))
        if self.op == "each":
            one_child = max((child.single(rates) for child in self.children), default=0.0)
            return min(together, self.limit * one_child)
        return together

    def shapes(self) -> set[int]:
        """Every shape index under this node."""
        if self.shared:
            return set(_Evaluation(()).shapes(self))
        if self.op == "pod":
            return {self.shape}
        found: set[int] = set()
        for child in self.children:
            found |= child.shapes()
        return found


class _Evaluation:
    """One evaluation of a Concurrency tree. A template called from many places is one
    node shared by its callers, so each node is evaluated once (by identity: hashing or
    comparing a shared tree by value walks every path, 2^levels of them)."""

    __slots__ = ("_peaks", "_shapes", "_singles", "rates")

    def __init__(self, rates: Sequence[float]) -> None:
        self.rates = rates
        self._peaks: dict[int, float] = {}
        self._singles: dict[int, float] = {}
        self._shapes: dict[int, frozenset[int]] = {}

    def peak(self, node: Concurrency) -> float:
        if node.op == "pod":
            inner = self.rates[node.shape]
            return 0.0 if inner == 0 else node.times * inner
        found = self._peaks.get(id(node))
        if found is None:
            inner = self.single(node)
            found = 0.0 if inner == 0 else node.times * inner  # 0 × ∞ is 0 here, not NaN
            self._peaks[id(node)] = found
        return found

    def single(self, node: Concurrency) -> float:
        if node.op == "pod":
            return self.rates[node.shape]
        found = self._singles.get(id(node))
        if found is None:
            found = self._single(node)
            self._singles[id(node)] = found
        return found

    def _single(self, node: Concurrency) -> float:
        rates = self.rates
        if node.op == "one":
            return max((self.peak(child) for child in node.children), default=0.0)
        together = sum(self.peak(child) for child in node.children)
        if node.op == "cap":
            most = max((rates[i] for i in self.shapes(node)), default=0.0)
            return min(together, node.limit * most)
        if node.op == "each":
            one_child = max((self.single(child) for child in node.children), default=0.0)
            return min(together, node.limit * one_child)
        return together

    def shapes(self, node: Concurrency) -> frozenset[int]:
        found = self._shapes.get(id(node))
        if found is None:
            if node.op == "pod":
                found = frozenset((node.shape,))
            else:
                found = frozenset().union(*(self.shapes(child) for child in node.children))
            self._shapes[id(node)] = found
        return found


class Schedule(NamedTuple):
    """When a CronJob or CronWorkflow starts its runs, as far as cost goes: how many a month,
    and the fire times that say how many can overlap (`at_once`)."""

    text: str  # the schedule(s) as written, for messages
    runs_per_month: float
    concurrency_policy: str  # Allow, Forbid or Replace
    # minutes after midnight of every fire in a day (several schedules: all of them), and
    # the seconds between runs of each `@every` schedule
    times: tuple[int, ...] = ()
    every: tuple[int, ...] = ()

    def at_once(self, seconds: float) -> int:
        """The most runs of `seconds` each that can run at the same moment: one unless the
        policy is Allow; else the most fires in any window of that length (every day taken
        to fire, so an upper bound)."""
        if self.concurrency_policy != "Allow" or seconds <= 0:
            return 1
        every = sum(math.ceil(seconds / interval) for interval in self.every)
        if not self.times:
            return max(1, every)
        days, rest = divmod(seconds / 60, 1440)
        return max(1, int(days) * len(self.times) + _most_within(self.times, rest) + every)


@functools.lru_cache(maxsize=256)
def _most_within(times: tuple[int, ...], minutes: float) -> int:
    """The most of these sorted daily fire times (minutes after midnight) in any window of
    `minutes` (< a day) that starts at one of them, the next day's fires included. Two
    pointers over the times and the next day's: linear, and remembered (a minute schedule
    has 1,440 times a day, and its CronJob is reviewed again on every update)."""
    ahead = times + tuple(t + 1440 for t in times)
    most = end = 0
    for start, first in enumerate(times):
        end = max(end, start)
        while end < len(ahead) and ahead[end] < first + minutes:
            end += 1
        most = max(most, end - start)
    return most


class Workload(NamedTuple):
    """A GPU workload as read from its object, before pricing."""

    kind: str
    namespace: str
    name: str  # "" when the API server has not generated it yet
    generate_name: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    workload_class: WorkloadClass
    pods: tuple[PodShape, ...]
    existing_deadline: int | None  # spec.activeDeadlineSeconds as submitted
    deadline_path: str  # JSON pointer of the deadline the webhook manages
    problems: tuple[Reason, ...] = ()  # what could not be read (invalid-gpu-request, ...)
    # Pointers of the pod metadata the owner stamps on its pods (a Job's pod template, a
    # Workflow's podMetadata): attribution labels are copied there so the pods carry them.
    copy_to: tuple[str, ...] = ()
    # Workflows: how pods overlap. None: every shape's replicas run at once for the deadline.
    concurrency: Concurrency | None = None
    # A Workflow's exit handler: it runs after the deadline, for its own templates' deadlines.
    exit_concurrency: Concurrency | None = None
    notes: tuple[str, ...] = ()  # facts worth a warning (e.g. a template that creates objects)
    unresolved: tuple[str, ...] = ()  # templates in other objects that could not be read
    informational: bool = False  # priced for information only (WorkflowTemplates)
    # A Job with spec.suspend: it runs no pod, so it holds and spends nothing until resumed,
    # and a resume starts its deadline again (Kubernetes resets the timer): a new run.
    suspended: bool = False
    # A CronJob's or CronWorkflow's schedule: priced per month, each run for one run.
    schedule: Schedule | None = None
    # A run (workload_class "run"): what made it, e.g. "CronJob 'nightly'" (for messages).
    run_of: str = ""

    @property
    def display_name(self) -> str:
        """How messages name the object: its name, or its generateName prefix with a star."""
        if self.name:
            return self.name
        return f"{self.generate_name}*" if self.generate_name else "(unnamed)"

    @property
    def total_gpus(self) -> float:
        """GPUs running at once at the busiest moment (INFINITE when unbounded)."""
        per_pod = [sum(g.units for g in p.gpus) * p.replicas for p in self.pods]
        if self.concurrency is None:
            return sum(per_pod)
        return self.concurrency.peak(per_pod)


class EstimateLine(NamedTuple):
    """One priced line: `units` of one GPU type at a unit price per hour.

    For Workflows `shape` names the template, `units` are per pod, and `runs`/`hours` are
    that template's executions and per-run hours when the per-step bound applies."""

    units: int
    label: str  # e.g. "h100-80gb" or "h100-80gb/mig-1g.10gb"
    usd_per_hour: float  # per unit
    gpu_type: str
    resolved: bool  # False when the type was unknown and priced by the unknown-gpu rule
    shape: str = ""
    runs: float | None = None
    hours: float | None = None


class Estimate(NamedTuple):
    """An upper bound on what a workload can spend: Σ lines × hours."""

    lines: tuple[EstimateLine, ...]
    hours: float
    usd: float
    per_month: bool = False  # serving workloads are priced per month (730 h)
    # runtime: Σ lines × hours. peak: the dearest moment ($/h) × hours (Workflows).
    # steps: Σ per template runs × price × per-run hours (Workflows with step deadlines).
    basis: Literal["runtime", "peak", "steps"] = "runtime"
    peak_usd_per_hour: float = 0.0
    # Hours the pods may hold their GPUs after the deadline (their grace period), priced on
    # top of `hours` (runtime and peak bases; the steps basis has it in each line's hours).
    grace_hours: float = 0.0
    # A schedule's: the estimate of one run, how many run at once, and how often it fires.
    run: Estimate | None = None
    at_once: int = 0
    schedule: Schedule | None = None


class Approval(NamedTuple):
    """The claims of an approval token whose signature has been verified (outside the core,
    which holds no keys): who approved, for what, up to what cost, until when."""

    key_id: str
    approver: str
    namespace: str
    experiment: str  # "" when the approval names a workload instead
    name: str  # "" when the approval names an experiment
    max_usd: float
    expires_at: int  # Unix seconds
    issued_at: int
    reason: str = ""
    # The token's id: what is admitted under it is added up in the ledger (a spend allowance)
    jti: str = ""
    uses: int | None = None  # the most workloads it may admit; None: no limit but max_usd


# Verifies the token in annotation costgate.io/approval: its claims, or why it is no good.
ApprovalVerifier = Callable[[str], "Approval | Reason"]
