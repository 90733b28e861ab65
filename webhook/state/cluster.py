"""Cluster state through the official `kubernetes` client: a watch cache of live costed
workloads, WorkflowTemplates for Workflows that reference them (and the live Workflows
filed by the templates they run), the DRA claims and claim templates pods name, the
objects a `scale` subresource resizes, and the budget ledgers.

One Watcher (`.watch`) per resource keeps it current; the cache keeps only a small Usage per
costed workload. Admission never calls the API server for quotas: it reads the sums this
cache keeps.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.config import ClaimLookup, Config, ParentLookup, Referrers, TemplateLookup
from ..core.extract.podspec import ObjectError
from ..core.extract.table import extract_table
from ..core.holding import holding
from ..core.types import ANNOTATION_ESTIMATED_COST, ANNOTATION_PRICED_BY, Request
from . import State
from .ledger import ConfigMapLedger
from .referrers import WorkflowsByTemplate
from .tally import Tally
from .watch import Resource, Watcher

if TYPE_CHECKING:  # the client is imported when the state is made: memory mode never does
    from kubernetes.client import ApiClient

__all__ = ["ClusterState", "Resource", "Watcher", "cluster_state", "load_api_client"]

log = logging.getLogger("costgate.cluster")


class ClusterState:
    """What the webhook knows of the cluster: live usage (a Tally), the templates, the
    ledgers. The admission path only reads memory here."""

    def __init__(
        self,
        api_client: ApiClient,
        *,
        config: Callable[[], Config],
        ledger_namespace: str,
        watch_seconds: int = 300,
        page_size: int = 500,
        stale_after: float = 30.0,
    ) -> None:
        from kubernetes import client

        self.api_client = api_client  # shared with what else asks the API server (/status)
        core = client.CoreV1Api(api_client)
        batch = client.BatchV1Api(api_client)
        apps = client.AppsV1Api(api_client)
        custom = client.CustomObjectsApi(api_client)
        argo = ("argoproj.io", "v1alpha1")
        self.tally = Tally()
        self.ledger = ConfigMapLedger(core, ledger_namespace)
        self._config = config
        self.stale_after = stale_after
        self._templates: dict[tuple[str, str, bool], Any] = {}
        # (group, plural, namespace, name) -> what a Scale of it is priced against: its
        # metadata and spec when its pod templates ask for GPUs, {} when they do not
        self._parents: dict[tuple[str, str, str, str], Mapping[str, Any]] = {}
        self.workflows_by_template = WorkflowsByTemplate()
        self._claims: dict[tuple[str, str, str], Any] = {}  # (kind, namespace, name) -> spec
        self._seen: dict[str, float] = {}  # uid -> when last seen, for ledger reconciliation
        self._stopping = threading.Event()
        self._periodic: list[threading.Thread] = []
        crd = custom.list_cluster_custom_object

        def argo_resource(plural: str, kind: str) -> Resource:
            return Resource(plural, "argoproj.io", kind, crd, (*argo, plural), optional=True)

        running = [
            Resource("pods", "", "Pod", core.list_pod_for_all_namespaces),
            Resource("jobs", "batch", "Job", batch.list_job_for_all_namespaces),
            argo_resource("workflows", "Workflow"),
        ]
        templates = [
            argo_resource("workflowtemplates", "WorkflowTemplate"),
            argo_resource("clusterworkflowtemplates", "ClusterWorkflowTemplate"),
        ]
        # DRA claims and claim templates, for the GPUs of the pods that name them; optional:
        # resource.k8s.io/v1 is served from Kubernetes 1.34
        dra = client.ResourceV1Api(api_client)
        claims = [
            Resource(
                "resourceclaimtemplates",
                "resource.k8s.io",
                "ResourceClaimTemplate",
                dra.list_resource_claim_template_for_all_namespaces,
                optional=True,
            ),
            Resource(
                "resourceclaims",
                "resource.k8s.io",
                "ResourceClaim",
                dra.list_resource_claim_for_all_namespaces,
                optional=True,
            ),
        ]
        # what `kubectl scale` and the HPA resize through the scale subresource
        scalable = [
            Resource("deployments", "apps", "Deployment", apps.list_deployment_for_all_namespaces),
            Resource(
                "statefulsets", "apps", "StatefulSet", apps.list_stateful_set_for_all_namespaces
            ),
            Resource("replicasets", "apps", "ReplicaSet", apps.list_replica_set_for_all_namespaces),
            Resource(
                "leaderworkersets",
                "leaderworkerset.x-k8s.io",
                "LeaderWorkerSet",
                crd,
                ("leaderworkerset.x-k8s.io", "v1", "leaderworkersets"),
                optional=True,
            ),
            Resource(
                "pytorchjobs",
                "kubeflow.org",
                "PyTorchJob",
                crd,
                ("kubeflow.org", "v1", "pytorchjobs"),
                optional=True,
            ),
        ]
        ledgers = Resource(
            "ledgers",
            "",
            "ConfigMap",
            core.list_namespaced_config_map,
            (ledger_namespace,),
            label_selector="costgate.io/ledger=true",
        )
        options = {"watch_seconds": watch_seconds, "page_size": page_size}
        self.watchers = [
            *(self._running_watcher(r, options) for r in running),
            *(self._template_watcher(r, options) for r in templates),
            *(self._claim_watcher(r, options) for r in claims),
            *(self._parent_watcher(r, options) for r in scalable),
            self._ledger_watcher(ledgers, options),
        ]

    # -- lifecycle -------------------------------------------------------------------

    def add_periodic(self, seconds: float, task: Callable[[], object]) -> None:
        """Run `task` every `seconds` once started (ledger reconciliation)."""

        def loop() -> None:
            while not self._stopping.wait(seconds):
                try:
                    task()
                except Exception:
                    log.exception("periodic task failed")

        self._periodic.append(threading.Thread(target=loop, name="costgate-periodic", daemon=True))

    def start(self) -> None:
        for watcher in self.watchers:
            watcher.start()
        for thread in self._periodic:
            thread.start()

    def stop(self) -> None:
        self._stopping.set()
        for watcher in self.watchers:
            watcher._stop.set()
        for watcher in self.watchers:
            watcher.stop()

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(w.synced.wait(max(0.0, deadline - time.monotonic())) for w in self.watchers)

    def ready(self, stale_after: float | None = None) -> bool:
        """Synced once, and no watch failing for longer than `stale_after` seconds (default:
        the state's own)."""
        now = time.monotonic()
        limit = self.stale_after if stale_after is None else stale_after
        return all(
            w.synced.is_set() and (w.failing_since is None or now - w.failing_since < limit)
            for w in self.watchers
        )

    def sync_state(self) -> dict[str, str]:
        """Per resource: synced, absent (CRD not installed), failing or syncing."""
        states = {}
        for w in self.watchers:
            if w.failing_since is not None:
                states[w.resource.name] = "failing"
            elif w.absent:
                states[w.resource.name] = "absent"
            else:
                states[w.resource.name] = "synced" if w.synced.is_set() else "syncing"
        return states

    # -- what admission reads --------------------------------------------------------

    def lookup(self) -> TemplateLookup:
        templates = self._templates

        def find(namespace: str, name: str, cluster: bool) -> Any:
            return templates.get(("" if cluster else namespace, name, cluster))

        return find

    def referrers(self) -> Referrers:
        """The live Workflows that run a template, for a template edit's review."""
        return self.workflows_by_template

    def claims(self) -> ClaimLookup:
        """The DRA claims and claim templates pods name, from the watch cache."""
        claims = self._claims

        def find(kind: str, namespace: str, name: str) -> Any:
            return claims.get((kind, namespace, name))

        return find

    def parents(self) -> ParentLookup:
        """The objects a Scale request resizes, as last seen (a Scale carries no template)."""
        parents = self._parents

        def find(group: str, plural: str, namespace: str, name: str) -> Any:
            return parents.get((group, plural, namespace, name))

        return find

    def seen(self, uid: str) -> bool | None:
        """Whether an object with this uid was seen (for the ledger); None when the cache
        cannot tell because it is not in sync."""
        if uid in self._seen or uid in self.tally:
            return True
        return False if self.ready() else None

    # -- the watchers' handlers ------------------------------------------------------

    def _running_watcher(self, resource: Resource, options: dict[str, int]) -> Watcher:
        uids: set[str] = set()
        group, kind = resource.group, resource.kind
        # Workflows are filed by the templates they run: an edit of one is priced against them
        by_template = self.workflows_by_template if kind == "Workflow" else None

        def record(obj: dict[str, Any]) -> str:
            metadata = obj.get("metadata") or {}
            uid = str(metadata.get("uid", ""))
            usage = holding(group, kind, obj, self._config())
            self.tally.put(uid, usage)
            if by_template is not None:
                by_template.workflow(obj)
            if usage is not None:
                uids.add(uid)
            else:
                uids.discard(uid)
            # what costgate priced carries its stamp, finished or not: the ledger's proof
            # that a charged object exists
            if usage is not None or ANNOTATION_ESTIMATED_COST in (
                metadata.get("annotations") or {}
            ):
                self._seen[uid] = time.time()
            self._owner_seen(metadata)
            return uid

        def on_event(event: str, obj: dict[str, Any]) -> None:
            if event == "DELETED":
                uid = str((obj.get("metadata") or {}).get("uid", ""))
                if uid in uids:
                    self._seen[uid] = time.time()
                self.tally.remove(uid)
                uids.discard(uid)
                if by_template is not None:
                    by_template.forget(uid)
            else:
                record(obj)

        def on_relist(items: Iterator[dict[str, Any]]) -> None:
            before = set(uids)
            listed = {record(obj) for obj in items}
            for uid in before - listed:  # deleted while we were not watching
                self.tally.remove(uid)
                uids.discard(uid)
            if by_template is not None:
                by_template.keep_workflows(listed)

        return Watcher(resource, on_event=on_event, on_relist=on_relist, **options)

    def _template_watcher(self, resource: Resource, options: dict[str, int]) -> Watcher:
        cluster = resource.kind == "ClusterWorkflowTemplate"

        def key(obj: dict[str, Any]) -> tuple[str, str, bool]:
            metadata = obj.get("metadata") or {}
            scope = "" if cluster else str(metadata.get("namespace", ""))
            return (scope, str(metadata.get("name", "")), cluster)

        by_template = self.workflows_by_template

        def on_event(event: str, obj: dict[str, Any]) -> None:
            if event == "DELETED":
                self._templates.pop(key(obj), None)
                by_template.forget_template(key(obj))
            else:
                self._templates[key(obj)] = obj.get("spec")
                by_template.template(key(obj), obj.get("spec"))

        def on_relist(items: Iterator[dict[str, Any]]) -> None:
            fresh = {key(obj): obj.get("spec") for obj in items}
            for stale in [k for k in self._templates if k[2] == cluster and k not in fresh]:
                self._templates.pop(stale, None)
                by_template.forget_template(stale)
            self._templates.update(fresh)
            for template, spec in fresh.items():
                by_template.template(template, spec)

        return Watcher(resource, on_event=on_event, on_relist=on_relist, **options)

    def _claim_watcher(self, resource: Resource, options: dict[str, int]) -> Watcher:
        kind = resource.kind

        def key(obj: dict[str, Any]) -> tuple[str, str, str]:
            metadata = obj.get("metadata") or {}
            return (kind, str(metadata.get("namespace", "")), str(metadata.get("name", "")))

        def on_event(event: str, obj: dict[str, Any]) -> None:
            if event == "DELETED":
                self._claims.pop(key(obj), None)
            else:
                self._claims[key(obj)] = obj.get("spec")

        def on_relist(items: Iterator[dict[str, Any]]) -> None:
            fresh = {key(obj): obj.get("spec") for obj in items}
            for stale in [k for k in self._claims if k[0] == kind and k not in fresh]:
                self._claims.pop(stale, None)
            self._claims.update(fresh)

        return Watcher(resource, on_event=on_event, on_relist=on_relist, **options)

    def _owner_seen(self, metadata: Mapping[str, Any]) -> None:
        """A pod (or Job, ReplicaSet...) made from a template costgate marked, or an object it
        stamped: its controlling owner exists, which confirms the owner's pending charge (the
        watch does not follow every operator's kind: a PyTorchJob is seen through its pods)."""
        annotations = metadata.get("annotations") or {}
        if ANNOTATION_PRICED_BY not in annotations and ANNOTATION_ESTIMATED_COST not in annotations:
            return
        for owner in metadata.get("ownerReferences") or ():
            if isinstance(owner, dict) and owner.get("controller") and owner.get("uid"):
                self._seen[str(owner["uid"])] = time.time()

    def _parent_watcher(self, resource: Resource, options: dict[str, int]) -> Watcher:
        group, plural, kind = resource.group, resource.name, resource.kind

        def key(obj: dict[str, Any]) -> tuple[str, str, str, str]:
            metadata = obj.get("metadata") or {}
            return (
                group,
                plural,
                str(metadata.get("namespace", "")),
                str(metadata.get("name", "")),
            )

        def kept(obj: dict[str, Any]) -> Mapping[str, Any]:
            """What a Scale is priced against: little for the many objects without GPUs."""
            metadata = obj.get("metadata") or {}
            request = Request("", "CREATE", group, kind, "", "", obj)
            try:
                gpus = extract_table(request, self._config()) is not None
            except (ObjectError, RecursionError):
                gpus = True  # priced (and refused) as written when it is scaled
            if not gpus:
                return {}
            keys = ("name", "namespace", "uid", "labels", "annotations", "ownerReferences")
            return {
                "metadata": {k: metadata[k] for k in keys if k in metadata},
                "spec": obj.get("spec"),
            }

        def seen(obj: dict[str, Any]) -> None:
            metadata = obj.get("metadata") or {}
            if ANNOTATION_ESTIMATED_COST in (metadata.get("annotations") or {}):
                self._seen[str(metadata.get("uid", ""))] = time.time()  # its charge: confirmed
            self._owner_seen(metadata)

        def on_event(event: str, obj: dict[str, Any]) -> None:
            if event == "DELETED":
                self._parents.pop(key(obj), None)
            else:
                self._parents[key(obj)] = kept(obj)
                seen(obj)

        def on_relist(items: Iterator[dict[str, Any]]) -> None:
            listed = list(items)
            for obj in listed:
                seen(obj)
            fresh = {key(obj): kept(obj) for obj in listed}
            for stale in [k for k in self._parents if k[:2] == (group, plural) and k not in fresh]:
                self._parents.pop(stale, None)
            self._parents.update(fresh)

        return Watcher(resource, on_event=on_event, on_relist=on_relist, **options)

    def _ledger_watcher(self, resource: Resource, options: dict[str, int]) -> Watcher:
        def on_event(event: str, obj: dict[str, Any]) -> None:
            self.ledger.observe(obj, deleted=event == "DELETED")

        def on_relist(items: Iterator[dict[str, Any]]) -> None:
            for obj in items:
                self.ledger.observe(obj)

        return Watcher(resource, on_event=on_event, on_relist=on_relist, **options)

    def reconcile(self, keep_seconds: float = 3600.0) -> None:
        """Confirm or drop pending ledger charges, then forget uids seen longer ago than any
        charge can stay pending (the set would otherwise grow with every pod ever seen)."""
        now = time.time()
        self.ledger.reconcile(self.seen, now)
        cutoff = now - max(keep_seconds, 2 * self.ledger.grace)
        for uid, when in list(self._seen.items()):
            if when < cutoff:
                self._seen.pop(uid, None)


def cluster_state(
    config: Callable[[], Config],
    *,
    ledger_namespace: str,
    kubeconfig: str | Path | None = None,
    context: str | None = None,
    in_cluster: bool = False,
    api_client: ApiClient | None = None,
    reconcile_seconds: float = 30.0,
    watch_seconds: int = 300,
    stale_after: float = 30.0,
) -> State:
    """The State of a webhook replica in a cluster: the watch cache and the ConfigMap
    ledger, with pending charges reconciled in the background. Not started: call
    `state.cluster.start()`."""
    if api_client is None:
        api_client = load_api_client(kubeconfig=kubeconfig, context=context, in_cluster=in_cluster)
    cluster = ClusterState(
        api_client,
        config=config,
        ledger_namespace=ledger_namespace,
        watch_seconds=watch_seconds,
        stale_after=stale_after,
    )
    state = State(
        cluster.tally, cluster.ledger, mode="cluster", ready=cluster.ready, cluster=cluster
    )
    cluster.add_periodic(reconcile_seconds, cluster.reconcile)
    return state


def load_api_client(
    *, kubeconfig: str | Path | None = None, context: str | None = None, in_cluster: bool = False
) -> ApiClient:
    """An ApiClient from the pod's service account (`in_cluster`) or a kubeconfig."""
    from kubernetes import client
    from kubernetes import config as kube_config

    # kubernetes.config's loaders are not annotated
    if in_cluster:
        kube_config.load_incluster_config()  # type: ignore[no-untyped-call]
    else:
        kube_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig) if kubeconfig else None, context=context
        )
    return client.ApiClient()
