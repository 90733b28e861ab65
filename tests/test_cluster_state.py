"""The cluster state (watch cache, ConfigMap ledger) through the real `kubernetes` client
against tests/support/fakeapi.py, which speaks the API server's list, watch, 410 and 409."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from tests.support.builders import H100, T4, gpu_pod, review
from tests.support.config import policy_with
from tests.support.fakeapi import FakeApiServer
from tests.support.polling import eventually
from webhook.core.engine import Config
from webhook.core.usage import BudgetCharge
from webhook.service import AdmissionService
from webhook.state import State
from webhook.state.cluster import cluster_state
from webhook.state.ledger import ConfigMapLedger
from webhook.tables import load_pricing

LEDGER_NS = "costgate-system"


def live_pod(name: str, gpus: int = 1, *, selector: dict[str, str] | None = None, **kw: Any):
    obj = gpu_pod(gpus, name=name, selector=selector, **kw)
    obj["spec"]["activeDeadlineSeconds"] = 3600
    return obj


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval=0.2) as server:
        yield server


def make_state(api: FakeApiServer, config: Config | None = None, **kwargs: Any) -> State:
    config = config or Config(table=load_pricing(), policy=policy_with())
    state = cluster_state(
        lambda: config, ledger_namespace=LEDGER_NS, api_client=api.client(), **kwargs
    )
    assert state.cluster is not None
    return state


@pytest.fixture
def started() -> Iterator[list[State]]:
    states: list[State] = []
    yield states
    for state in states:
        assert state.cluster is not None
        state.cluster.stop()


def start(api: FakeApiServer, started: list[State], **kwargs: Any) -> State:
    state = make_state(api, **kwargs)
    assert state.cluster is not None
    state.cluster.start()
    started.append(state)
    assert state.cluster.wait_synced(10)
    return state


def test_first_sync_counts_live_gpu_workloads_only(api: FakeApiServer, started) -> None:
    api.create("pods", live_pod("a", 2))
    api.create("pods", live_pod("b", 1, selector=T4))
    done = live_pod("done", 4)
    done["status"] = {"phase": "Succeeded"}
    api.create("pods", done)
    api.create("pods", {"metadata": {"name": "web", "namespace": "team-a"},
                        "spec": {"containers": [{"name": "c", "image": "nginx"}]}})  # fmt: skip
    state = start(api, started)
    totals = state.namespace_totals("team-a")
    assert totals.gpus == 3 and totals.workloads == 2
    assert dict(totals.gpus_by_type) == {"h100-80gb": 2.0, "t4": 1.0}
    assert state.ready()
    assert state.cluster is not None
    assert state.cluster.sync_state()["pods"] == "synced"


def test_watch_follows_creations_completions_and_deletions(api: FakeApiServer, started) -> None:
    state = start(api, started)
    api.create("pods", live_pod("a", 2))
    eventually(lambda: state.namespace_totals("team-a").gpus == 2)
    api.modify("pods", "team-a", "a", lambda o: o.update(status={"phase": "Failed"}))
    eventually(lambda: state.namespace_totals("team-a").gpus == 0)
    api.create("pods", live_pod("b", 3))
    eventually(lambda: state.namespace_totals("team-a").gpus == 3)
    api.remove("pods", "team-a", "b")
    eventually(lambda: state.namespace_totals("team-a").workloads == 0)


def test_jobs_count_while_running_and_their_pods_do_not_count_twice(
    api: FakeApiServer, started
) -> None:
    job = {
        "metadata": {"name": "train", "namespace": "team-a",
                     "labels": {"owner": "alice", "experiment": "exp-1"}},
        "spec": {"parallelism": 2, "activeDeadlineSeconds": 3600, "template": {"spec": {
            "nodeSelector": H100, "restartPolicy": "Never",
            "containers": [{"name": "m", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}},
    }  # fmt: skip
    created = api.create("jobs", job)
    state = start(api, started)
    assert state.namespace_totals("team-a").gpus == 2
    owner = {"apiVersion": "batch/v1", "kind": "Job", "name": "train",
             "uid": created["metadata"]["uid"], "controller": True}  # fmt: skip
    for i in range(2):
        made = live_pod(f"train-{i}", 1)
        made["metadata"]["ownerReferences"] = [owner]
        del made["metadata"]["annotations"]
        api.create("pods", made)
    time.sleep(0.3)
    assert state.namespace_totals("team-a").gpus == 2
    api.modify(
        "jobs", "team-a", "train",
        lambda o: o.update(status={"conditions": [{"type": "Complete", "status": "True"}]}),
    )  # fmt: skip
    eventually(lambda: state.namespace_totals("team-a").gpus == 0)


def test_410_gone_relists_and_catches_what_was_missed(api: FakeApiServer, started) -> None:
    api.create("pods", live_pod("a", 1))
    api.create("pods", live_pod("b", 2))
    state = start(api, started)
    assert state.cluster is not None
    watcher = next(w for w in state.cluster.watchers if w.resource.name == "pods")
    relists = watcher.relists
    api.down()  # the watch breaks; meanwhile the cluster changes and history is compacted
    api.up()
    api.remove("pods", "team-a", "a")
    api.create("pods", live_pod("c", 4))
    api.compact()
    api.drop_watches()
    eventually(lambda: watcher.relists > relists, timeout=10)
    eventually(lambda: state.namespace_totals("team-a").gpus == 6, timeout=10)
    assert state.namespace_totals("team-a").workloads == 2
    assert state.ready()


def test_missing_argo_crds_are_absent_not_unready(started) -> None:
    missing = {"workflows", "workflowtemplates", "clusterworkflowtemplates"}
    with FakeApiServer(missing=missing) as server:
        state = start(server, started)
        assert state.ready()
        assert state.cluster is not None
        assert state.cluster.sync_state()["workflows"] == "absent"


def test_readiness_drops_while_the_api_is_unreachable_and_recovers(
    api: FakeApiServer, started
) -> None:
    api.create("pods", live_pod("a", 1))
    state = make_state(api)
    assert state.cluster is not None
    assert not state.ready()  # not synced yet
    state.cluster.start()
    started.append(state)
    eventually(state.ready)
    api.down()
    eventually(lambda: state.cluster.sync_state()["pods"] == "failing", timeout=10)
    assert not state.cluster.ready(stale_after=0.0)
    api.up()
    api.create("pods", live_pod("b", 2))
    eventually(lambda: state.namespace_totals("team-a").gpus == 3, timeout=20)
    assert state.ready()


def test_workflow_template_lookup_from_the_cluster(api: FakeApiServer, started) -> None:
    template = {
        "metadata": {"name": "train-tpl", "namespace": "team-a"},
        "spec": {"templates": [{"name": "train", "nodeSelector": H100, "container": {
            "image": "x", "resources": {"limits": {"nvidia.com/gpu": "2"}}}}]},
    }  # fmt: skip
    api.create("workflowtemplates", template)
    state = start(api, started)
    assert state.cluster is not None
    lookup = state.cluster.lookup()
    assert lookup("team-a", "train-tpl", False) == template["spec"]
    assert lookup("team-b", "train-tpl", False) is None
    api.remove("workflowtemplates", "team-a", "train-tpl")
    eventually(lambda: lookup("team-a", "train-tpl", False) is None)


# --- the ledger ------------------------------------------------------------------------


def charge(usd: float, limit: float) -> BudgetCharge:
    return BudgetCharge("team-a", "exp-1", "lifetime", usd, limit)


def test_ledger_creates_then_updates_its_configmap(api: FakeApiServer) -> None:
    from kubernetes import client

    ledger = ConfigMapLedger(client.CoreV1Api(api.client()), LEDGER_NS)
    assert ledger.charge(charge(30, 100), "uid-1", 1.0).ok
    assert ledger.charge(charge(30, 100), "uid-2", 2.0).ok
    refused = ledger.charge(charge(50, 100), "uid-3", 3.0)
    assert not refused.ok and refused.spent == 60 and not refused.error
    stored = api.get("configmaps", LEDGER_NS, "costgate-ledger-team-a")
    doc = orjson.loads(stored["data"]["ledger.json"])
    assert set(doc["pending"]) == {"uid-1", "uid-2"}
    assert stored["metadata"]["labels"]["costgate.io/ledger"] == "true"


def test_ledger_retries_through_a_409_storm_and_gives_up_on_an_endless_one(
    api: FakeApiServer,
) -> None:
    from kubernetes import client

    ledger = ConfigMapLedger(client.CoreV1Api(api.client()), LEDGER_NS, attempts=6)
    assert ledger.charge(charge(10, 100), "uid-1", 1.0).ok
    api.conflict_next(4)
    assert ledger.charge(charge(10, 100), "uid-2", 2.0).ok
    api.conflict_next(100)
    result = ledger.charge(charge(10, 100), "uid-3", 3.0)
    assert not result.ok and "conflicting writes" in result.error


def test_replicas_racing_for_the_last_dollars_never_overspend(api: FakeApiServer) -> None:
    """Four replicas (own clients, own caches) charge 20 × $7 each against a $100 budget:
    the ledger ends at most at $100, and holds exactly the charges that were accepted."""
    from kubernetes import client

    replicas = [ConfigMapLedger(client.CoreV1Api(api.client()), LEDGER_NS) for _ in range(4)]
    accepted: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(replicas))

    def admit(index: int, ledger: ConfigMapLedger) -> None:
        barrier.wait()
        for n in range(20):
            entry = f"r{index}-{n}"
            result = ledger.charge(charge(7, 100), entry, time.time())
            assert result.error == ""  # accepted, or refused for the budget: never an error
            if result.ok:
                with lock:
                    accepted.append(entry)

    threads = [threading.Thread(target=admit, args=(i, r)) for i, r in enumerate(replicas)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = api.get("configmaps", LEDGER_NS, "costgate-ledger-team-a")
    doc = orjson.loads(stored["data"]["ledger.json"])
    assert sorted(doc["pending"]) == sorted(accepted)
    assert len(accepted) == 14  # 14 × $7 = $98; the 15th would pass $100
    assert sum(usd for _, usd, _ in doc["pending"].values()) == pytest.approx(98)


def test_reconcile_confirms_admitted_objects_and_drops_denied_ones(
    api: FakeApiServer, started
) -> None:
    state = start(api, started, reconcile_seconds=3600)
    assert state.cluster is not None
    ledger = state.cluster.ledger
    ledger.grace = 0.0
    kept = api.create("pods", live_pod("kept", 1))
    uid = kept["metadata"]["uid"]
    eventually(lambda: uid in state.tally)
    assert ledger.charge(charge(10, 100), uid, time.time()).ok
    assert ledger.charge(charge(20, 100), "never-created", time.time()).ok
    assert ledger.spent("team-a", "exp-1", "lifetime") == 30
    time.sleep(0.01)
    assert ledger.reconcile(state.cluster.seen, time.time()) == 1
    doc = eventually(lambda: (d := ledger.document("team-a")) and not d["pending"] and d)
    assert doc["spent"] == {"exp-1/lifetime": 10.0}


def test_a_new_replica_rebuilds_the_same_view(api: FakeApiServer, started) -> None:
    first = start(api, started)
    for i in range(5):
        api.create("pods", live_pod(f"p{i}", i + 1, owner=f"o{i % 2}"))
    assert first.ledger.charge(charge(40, 100), "uid-1", time.time()).ok
    eventually(lambda: first.namespace_totals("team-a").gpus == 15)
    second = start(api, started)
    eventually(lambda: second.spent("team-a", "exp-1", "lifetime") == 40)
    for owner in ("o0", "o1"):
        assert second.owner_totals("team-a", owner) == first.owner_totals("team-a", owner)
    assert second.namespace_totals("team-a") == first.namespace_totals("team-a")


# --- admission with the cluster state ----------------------------------------------------


def cluster_service(api: FakeApiServer, started, **policy: Any) -> tuple[AdmissionService, State]:
    config = Config(table=load_pricing(), policy=policy_with(**policy))
    state = make_state(api, config)
    assert state.cluster is not None
    state.cluster.start()
    started.append(state)
    assert state.cluster.wait_synced(10)
    return AdmissionService(config, state=state), state


def validate(service: AdmissionService, obj: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return orjson.loads(service.handle(review(obj, **kw), "validate").body)["response"]


def test_quota_across_the_cluster_and_reservations_before_the_watch(
    api: FakeApiServer, started
) -> None:
    api.create("pods", live_pod("running", 6))
    service, state = cluster_service(api, started, quota={"max_gpus": 8})
    assert state.namespace_totals("team-a").gpus == 6
    assert validate(service, gpu_pod(2, name="a"))["allowed"]
    # not yet in the cluster, but reserved: the next one is measured against 8 already
    denied = validate(service, gpu_pod(1, name="b"))
    assert not denied["allowed"]
    assert "8 held by 2 live workloads" in denied["status"]["message"]


def test_budget_through_the_ledger_and_dry_run_writes_nothing(api: FakeApiServer, started) -> None:
    service, _ = cluster_service(api, started, budget={"usd": 80})
    writes = len([r for r in api.requests if r[0] in ("POST", "PUT")])
    assert validate(service, gpu_pod(1, runtime="5h", name="d"), dry_run=True)["allowed"]
    assert len([r for r in api.requests if r[0] in ("POST", "PUT")]) == writes
    assert validate(service, gpu_pod(1, runtime="5h", name="a"))["allowed"]
    assert validate(service, gpu_pod(1, runtime="5h", name="b"))["allowed"]
    third = validate(service, gpu_pod(1, runtime="5h", name="c"))
    assert not third["allowed"] and "over its lifetime" in third["status"]["message"]
    stored = api.get("configmaps", LEDGER_NS, "costgate-ledger-team-a")
    assert len(orjson.loads(stored["data"]["ledger.json"])["pending"]) == 2


def test_ledger_unreachable_follows_the_policy(api: FakeApiServer, started) -> None:
    service, _ = cluster_service(api, started, budget={"usd": 1000})
    api.fail_next(100, status=503, method="PUT")
    api.fail_next(100, status=503, method="POST")
    denied = validate(service, gpu_pod(1, runtime="5h"))
    assert not denied["allowed"]
    assert denied["auditAnnotations"]["reasons"] == "state-unavailable"
    assert "cannot check this namespace's quotas and budgets" in denied["status"]["message"]


def test_ledger_unreachable_allowed_by_policy_warns(api: FakeApiServer, started) -> None:
    service, _ = cluster_service(api, started, budget={"usd": 1000}, on_state_unavailable="allow")
    api.fail_next(100, status=503, method="PUT")
    api.fail_next(100, status=503, method="POST")
    allowed = validate(service, gpu_pod(1, runtime="5h"))
    assert allowed["allowed"]
    assert any("allowed by policy" in w for w in allowed["warnings"])


def test_costgate_status_reads_the_cluster_with_a_kubeconfig(
    api: FakeApiServer, tmp_path, capsys
) -> None:
    from webhook.cli import main

    api.create("pods", live_pod("a", 2, owner="alice"))
    api.create("pods", live_pod("b", 1, owner="bob", selector=T4))
    from kubernetes import client

    ledger = ConfigMapLedger(client.CoreV1Api(api.client()), LEDGER_NS)
    assert ledger.charge(charge(12.5, 100), "uid-1", time.time()).ok
    kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
    code = main(["status", "--kubeconfig", str(kubeconfig), "-o", "json", "-n", "team-a"])
    assert code == 0
    report = orjson.loads(capsys.readouterr().out)
    [row] = report["namespaces"]
    assert row["gpus"] == 3 and [o["owner"] for o in row["owners"]] == ["alice", "bob"]
    # the ledger's spend shows, with no budget in the bundled policy to compare it with
    assert row["budgets"] == [
        {
            "experiment": "exp-1",
            "period": "lifetime",
            "spent_usd": 12.5,
            "budget_usd": None,
            "draws_on": "none",
        }
    ]
    assert row["shared_budget"] is None and row["namespace_budget"] is None
    assert main(["status", "--kubeconfig", str(kubeconfig)]) == 0
    assert "namespace/team-a" in capsys.readouterr().out
