"""The fake API server (tests/support/fakeapi.py), driven by the real ``kubernetes`` client."""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import urllib3
from kubernetes import client, watch
from kubernetes.client.rest import ApiException
from kubernetes.watch.watch import iter_resp_lines

from tests.support.fakeapi import FakeApiServer

ARGO = ("argoproj.io", "v1alpha1")


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval=0.05) as server:
        yield server
    assert server.errors == []


@pytest.fixture
def k8s(api: FakeApiServer) -> Iterator[client.ApiClient]:
    with api.client() as c:
        yield c


def configmap(name: str, namespace: str = "default", **data: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}, "data": data}


def pod(name: str, namespace: str = "default", **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
    }


def workflow(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {"entrypoint": "main", "templates": [{"name": "main"}]},
    }


def status_of(e: ApiException) -> dict[str, Any]:
    return json.loads(e.body)


@contextlib.contextmanager
def raw_watch(func: Any, *args: Any, **kwargs: Any) -> Iterator[tuple[Any, Iterator[dict]]]:
    """A watch through the client with ``_preload_content=False``, read event by event."""
    resp = func(*args, watch=True, _preload_content=False, _request_timeout=10, **kwargs)
    try:
        yield resp, (json.loads(line) for line in iter_resp_lines(resp))
    finally:
        resp.close()
        resp.release_conn()


def watch_requests(api: FakeApiServer) -> list[dict[str, str]]:
    return [q for method, _, q in api.requests if method == "GET" and q.get("watch") == "true"]


def wait_for(predicate: Any, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


# --- lifecycle ---------------------------------------------------------------------------------


def test_starts_and_stops_fast_and_stop_ends_open_watches():
    for _ in range(5):
        t0 = time.perf_counter()
        server = FakeApiServer().start()
        started = time.perf_counter() - t0
        with (
            server.client() as c,
            raw_watch(client.CoreV1Api(c).list_pod_for_all_namespaces) as (
                _,
                events,
            ),
        ):
            wait_for(lambda s=server: s.watch_count() == 1)
            t0 = time.perf_counter()
            server.stop()
            stopped = time.perf_counter() - t0
            with pytest.raises(urllib3.exceptions.ProtocolError):
                next(events)
        assert started < 0.05
        assert stopped < 0.05
        assert server.url.startswith("http://127.0.0.1:")
        assert server.errors == []


# --- list --------------------------------------------------------------------------------------


def test_list_pages_share_the_snapshot_resource_version(api, k8s):
    core = client.CoreV1Api(k8s)
    for ns in ("team-b", "team-a"):
        for i in range(4):
            core.create_namespaced_config_map(ns, configmap(f"cm-{i}", ns))
    names, rvs, token = [], set(), None
    while True:
        page = core.list_config_map_for_all_namespaces(limit=3, _continue=token)
        names += [(i.metadata.namespace, i.metadata.name) for i in page.items]
        rvs.add(page.metadata.resource_version)
        token = page.metadata._continue
        if token is None:
            break
        assert page.metadata.remaining_item_count == 8 - len(names)
        # Writes between pages are not in the snapshot.
        api.create("configmaps", configmap(f"late-{len(names)}", "team-a"))
        if len(names) == 6:
            api.remove("configmaps", "team-b", "cm-3")
    assert names == sorted((ns, f"cm-{i}") for ns in ("team-a", "team-b") for i in range(4))
    assert rvs == {"8"}
    assert api.resource_version == "11"

    page = core.list_namespaced_config_map("team-a", limit=2)
    assert [i.metadata.name for i in page.items] == ["cm-0", "cm-1"]
    rest = core.list_namespaced_config_map("team-a", limit=100, _continue=page.metadata._continue)
    assert [i.metadata.name for i in rest.items] == ["cm-2", "cm-3", "late-3", "late-6"]
    assert rest.metadata.resource_version == page.metadata.resource_version == "11"


def test_list_shape_and_label_selector(api, k8s):
    for name, app in (("a", "web"), ("b", "db"), ("c", "web")):
        api.create("pods", pod(name, app=app, tier="x"))
    resp = client.CoreV1Api(k8s).list_namespaced_pod(
        "default", label_selector="app=web,tier=x", _preload_content=False
    )
    body = orjson.loads(resp.data)
    assert body["kind"] == "PodList" and body["apiVersion"] == "v1"
    assert body["metadata"] == {"resourceVersion": "3"}
    assert [i["metadata"]["name"] for i in body["items"]] == ["a", "c"]
    assert all("kind" not in i and "apiVersion" not in i for i in body["items"])
    assert api.requests[-1] == (
        "GET",
        "/api/v1/namespaces/default/pods",
        {"labelSelector": "app=web,tier=x"},
    )
    jobs = orjson.loads(
        client.BatchV1Api(k8s).list_job_for_all_namespaces(_preload_content=False).data
    )
    assert (jobs["kind"], jobs["apiVersion"], jobs["items"]) == ("JobList", "batch/v1", [])


def test_compacted_continue_token_is_410_expired(api, k8s):
    core = client.CoreV1Api(k8s)
    for i in range(5):
        api.create("configmaps", configmap(f"cm-{i}"))
    first = core.list_namespaced_config_map("default", limit=2)
    api.create("configmaps", configmap("cm-9"))
    api.compact()
    with pytest.raises(ApiException) as err:
        core.list_namespaced_config_map("default", limit=2, _continue=first.metadata._continue)
    assert err.value.status == 410
    body = status_of(err.value)
    assert body["reason"] == "Expired" and body["code"] == 410
    assert body["message"].startswith("The provided continue parameter is too old")
    # The token in the 410 continues inconsistently, from the latest state.
    rest = core.list_namespaced_config_map("default", _continue=body["metadata"]["continue"])
    assert [i.metadata.name for i in rest.items] == ["cm-2", "cm-3", "cm-4", "cm-9"]
    assert rest.metadata.resource_version == "6"


# --- watch -------------------------------------------------------------------------------------


def test_raw_watch_replays_then_streams_then_bookmarks(api, k8s):
    api.create("configmaps", configmap("seed"))  # RV "0" would mean "from the current state"
    core = client.CoreV1Api(k8s)
    rv = core.list_pod_for_all_namespaces().metadata.resource_version
    assert rv == "1"
    core.create_namespaced_pod("default", pod("p1", app="web"))
    core.patch_namespaced_pod("p1", "default", {"metadata": {"labels": {"app": "db"}}})
    core.delete_namespaced_pod("p1", "default")
    with raw_watch(
        core.list_pod_for_all_namespaces,
        resource_version=rv,
        allow_watch_bookmarks=True,
        timeout_seconds=5,
    ) as (resp, events):
        assert resp.status == 200
        assert resp.headers["Transfer-Encoding"] == "chunked"
        assert resp.headers["Content-Type"] == "application/json"
        replayed = [next(events) for _ in range(3)]
        assert [e["type"] for e in replayed] == ["ADDED", "MODIFIED", "DELETED"]
        assert [e["object"]["metadata"]["resourceVersion"] for e in replayed] == ["2", "3", "4"]
        assert replayed[0]["object"]["kind"] == "Pod"
        assert replayed[1]["object"]["metadata"]["labels"] == {"app": "db"}
        assert replayed[2]["object"]["metadata"]["name"] == "p1"
        bookmark = next(events)
        assert bookmark == {
            "type": "BOOKMARK",
            "object": {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": "4"}},
        }
        api.create("pods", pod("p2", "other"))  # live
        live = next(events)
        assert (live["type"], live["object"]["metadata"]["namespace"]) == ("ADDED", "other")
        assert live["object"]["metadata"]["resourceVersion"] == "5"
    watched = watch_requests(api)
    assert watched == [
        {
            "allowWatchBookmarks": "true",
            "resourceVersion": rv,
            "timeoutSeconds": "5",
            "watch": "true",
        }
    ]


def test_watch_without_resource_version_starts_with_synthetic_adds_and_times_out(api, k8s):
    api.create("configmaps", configmap("b"))
    api.create("configmaps", configmap("a"))
    api.create("configmaps", configmap("c", "elsewhere"))
    core = client.CoreV1Api(k8s)
    t0 = time.monotonic()
    with raw_watch(core.list_namespaced_config_map, "default", timeout_seconds=1) as (_, events):
        seen = [(e["type"], e["object"]["metadata"]["name"]) for e in events]
    assert seen == [("ADDED", "a"), ("ADDED", "b")]  # sorted, namespaced, then a clean end
    assert 0.9 < time.monotonic() - t0 < 2


def test_watch_list_initial_events_end_with_an_annotated_bookmark(api, k8s):
    api.create("configmaps", configmap("a"))
    api.create("configmaps", configmap("b"))
    with raw_watch(
        client.CoreV1Api(k8s).list_namespaced_config_map,
        "default",
        resource_version="",
        resource_version_match="NotOlderThan",
        send_initial_events=True,
        allow_watch_bookmarks=True,
    ) as (_, events):
        seen = [next(events) for _ in range(3)]
    assert [e["type"] for e in seen] == ["ADDED", "ADDED", "BOOKMARK"]
    assert seen[2]["object"]["metadata"] == {
        "resourceVersion": "2",
        "annotations": {"k8s.io/initial-events-end": "true"},
    }


def test_watch_stream_helper_yields_models(api, k8s):
    api.create("configmaps", configmap("ledger", value="1"))
    core = client.CoreV1Api(k8s)
    w = watch.Watch()
    seen = []
    for event in w.stream(core.list_namespaced_config_map, "default", timeout_seconds=5):
        obj = event["object"]
        assert isinstance(obj, client.V1ConfigMap)
        seen.append((event["type"], obj.data["value"], obj.metadata.resource_version))
        if len(seen) == 1:
            api.modify("configmaps", "default", "ledger", lambda o: o["data"].update(value="2"))
        else:
            w.stop()
    assert seen == [("ADDED", "1", "1"), ("MODIFIED", "2", "2")]
    assert w.resource_version == "2"


def test_watch_label_selector_turns_moves_into_added_and_deleted(api, k8s):
    api.create("pods", pod("web", app="web"))
    rv = api.resource_version
    api.create("pods", pod("db", app="db"))
    api.modify("pods", "default", "db", lambda o: o["metadata"]["labels"].update(app="web"))
    api.modify("pods", "default", "web", lambda o: o["metadata"]["labels"].update(app="db"))
    core = client.CoreV1Api(k8s)
    with raw_watch(
        core.list_namespaced_pod,
        "default",
        resource_version=rv,
        label_selector="app=web",
        timeout_seconds=5,
    ) as (_, events):
        first = list(itertools.islice(events, 2))
        seen = [(e["type"], e["object"]["metadata"]["name"]) for e in first]
        moved_out = first[1]["object"]
        api.create("pods", pod("other", app="other"))
        api.create("pods", pod("web2", app="web"))
        live = next(events)
        seen.append((live["type"], live["object"]["metadata"]["name"]))
    assert seen == [("ADDED", "db"), ("DELETED", "web"), ("ADDED", "web2")]
    # Moving out of the selector: DELETED with the last matching content, at the new version.
    assert moved_out["metadata"]["labels"] == {"app": "web"}
    assert moved_out["metadata"]["resourceVersion"] == "4"


def test_compacted_resource_version_gets_one_410_error_event(api, k8s):
    api.create("configmaps", configmap("a"))
    old = api.resource_version
    api.create("configmaps", configmap("b"))
    api.compact()
    core = client.CoreV1Api(k8s)
    with raw_watch(
        core.list_namespaced_config_map, "default", resource_version=old, timeout_seconds=5
    ) as (_, events):
        assert list(events) == [
            {
                "type": "ERROR",
                "object": {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Failure",
                    "message": "too old resource version: 1 (2)",
                    "reason": "Expired",
                    "code": 410,
                },
            }
        ]
    # The client's Watch retries a 410 once, from the same resourceVersion, then raises.
    w = watch.Watch()
    with pytest.raises(ApiException) as err:
        for _ in w.stream(core.list_namespaced_config_map, "default", resource_version=old):
            pass
    assert err.value.status == 410
    assert "too old resource version" in err.value.reason
    assert [q["resourceVersion"] for q in watch_requests(api)] == [old, old, old]
    # From the compaction point on, watching works.
    with raw_watch(
        core.list_namespaced_config_map,
        "default",
        resource_version=api.resource_version,
        timeout_seconds=1,
    ) as (_, events):
        api.create("configmaps", configmap("c"))
        assert next(events)["object"]["metadata"]["name"] == "c"


def test_bulk_load_restarts_history_for_that_resource(api, k8s):
    api.create("pods", pod("before"))
    before = api.resource_version
    end = api.bulk_load("pods", [pod(f"bulk-{i}") for i in range(3)])
    assert (before, end) == ("1", "4")
    core = client.CoreV1Api(k8s)
    with raw_watch(
        core.list_namespaced_pod, "default", resource_version=before, timeout_seconds=1
    ) as (_, events):
        event = next(events)
    assert event["type"] == "ERROR" and event["object"]["code"] == 410
    api.create("configmaps", configmap("other"))  # other resources keep their history
    with raw_watch(
        core.list_namespaced_config_map, "default", resource_version=before, timeout_seconds=1
    ) as (_, events):
        assert next(events)["type"] == "ADDED"
    names = [p.metadata.name for p in core.list_namespaced_pod("default").items]
    assert names == ["before", "bulk-0", "bulk-1", "bulk-2"]
    wait_for(lambda: api.watch_count() == 0)  # closed by the client: the server notices


def test_drop_watches_cuts_the_stream_mid_flight(api, k8s):
    api.create("pods", pod("p"))
    core = client.CoreV1Api(k8s)
    with raw_watch(core.list_pod_for_all_namespaces, resource_version="0") as (_, events):
        assert next(events)["type"] == "ADDED"
        assert api.watch_count() == 1
        api.drop_watches()
        with pytest.raises(urllib3.exceptions.ProtocolError):
            next(events)
    wait_for(lambda: api.watch_count() == 0)
    # The helper surfaces the broken connection too.
    w = watch.Watch()
    stream = w.stream(core.list_pod_for_all_namespaces, resource_version="0")
    assert next(stream)["type"] == "ADDED"
    api.drop_watches()
    with pytest.raises(urllib3.exceptions.ProtocolError):
        next(stream)
    assert core.list_pod_for_all_namespaces().items  # plain requests are unaffected


def test_down_refuses_and_drops_then_up_serves_on_the_same_port(api, k8s):
    core = client.CoreV1Api(k8s)
    api.create("configmaps", configmap("a"))
    port = api.port
    with raw_watch(core.list_config_map_for_all_namespaces) as (_, events):
        assert next(events)["type"] == "ADDED"
        api.down()
        with pytest.raises(urllib3.exceptions.ProtocolError):
            next(events)
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        core.list_namespaced_config_map("default")
    api.up()
    assert api.port == port
    assert [i.metadata.name for i in core.list_namespaced_config_map("default").items] == ["a"]


# --- writes ------------------------------------------------------------------------------------


def test_replace_with_stale_resource_version_is_409(api, k8s):
    core = client.CoreV1Api(k8s)
    created = core.create_namespaced_config_map("default", configmap("ledger", total="0"))
    assert created.metadata.resource_version == "1"
    api.modify("configmaps", "default", "ledger", lambda o: o["data"].update(total="5"))
    created.data["total"] = "7"
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("ledger", "default", created)
    assert err.value.status == 409
    assert status_of(err.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'Operation cannot be fulfilled on configmaps "ledger": the object has been '
        "modified; please apply your changes to the latest version and try again",
        "reason": "Conflict",
        "details": {"name": "ledger", "kind": "configmaps"},
        "code": 409,
    }
    fresh = core.read_namespaced_config_map("ledger", "default")
    fresh.data["total"] = "12"
    done = core.replace_namespaced_config_map("ledger", "default", fresh)
    assert int(done.metadata.resource_version) > int(fresh.metadata.resource_version)
    assert api.get("configmaps", "default", "ledger")["data"] == {"total": "12"}
    # No resourceVersion in the body: an unconditional update. Unchanged: a no-op, same RV.
    same = core.replace_namespaced_config_map("ledger", "default", configmap("ledger", total="12"))
    assert same.metadata.resource_version == done.metadata.resource_version


def test_conflict_storm_then_success(api, k8s):
    core = client.CoreV1Api(k8s)
    core.create_namespaced_config_map("default", configmap("ledger", total="1"))
    api.conflict_next(3)
    attempts = 0
    while True:
        attempts += 1
        current = core.read_namespaced_config_map("ledger", "default")
        current.data["total"] = str(int(current.data["total"]) + 1)
        try:
            core.replace_namespaced_config_map("ledger", "default", current)
            break
        except ApiException as e:
            assert e.status == 409 and status_of(e)["reason"] == "Conflict"
    assert attempts == 4
    assert api.get("configmaps", "default", "ledger")["data"]["total"] == "2"
    assert api.get("configmaps", "default", "ledger")["metadata"]["resourceVersion"] == "2"


def test_clear_faults_ends_a_storm_and_pending_failures(api, k8s):
    core = client.CoreV1Api(k8s)
    core.create_namespaced_config_map("default", configmap("ledger", total="1"))
    api.conflict_next(10**6)
    api.fail_next(10**6, status=503, method="GET")
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("ledger", "default", configmap("ledger", total="2"))
    assert err.value.status == 409
    api.clear_faults()
    core.replace_namespaced_config_map("ledger", "default", configmap("ledger", total="2"))
    assert core.read_namespaced_config_map("ledger", "default").data == {"total": "2"}


def test_create_twice_is_409_already_exists_and_generate_name(api, k8s):
    core = client.CoreV1Api(k8s)
    first = core.create_namespaced_config_map("default", configmap("x"))
    assert first.metadata.uid and first.metadata.creation_timestamp
    assert first.metadata.namespace == "default"
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("default", configmap("x"))
    assert err.value.status == 409
    body = status_of(err.value)
    assert (body["reason"], body["message"]) == ("AlreadyExists", 'configmaps "x" already exists')
    generated = core.create_namespaced_config_map("default", {"metadata": {"generateName": "run-"}})
    assert generated.metadata.name.startswith("run-") and len(generated.metadata.name) == 9


def test_missing_object_is_404_status(api, k8s):
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(k8s).read_namespaced_pod("x", "default")
    assert err.value.status == 404
    assert status_of(err.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'pods "x" not found',
        "reason": "NotFound",
        "details": {"name": "x", "kind": "pods"},
        "code": 404,
    }
    for call in (
        lambda: client.CoreV1Api(k8s).delete_namespaced_pod("x", "default"),
        lambda: client.CoreV1Api(k8s).replace_namespaced_config_map("x", "default", {}),
    ):
        with pytest.raises(ApiException) as err:
            call()
        assert err.value.status == 404


def test_patch_kinds(api, k8s):
    core = client.CoreV1Api(k8s)
    core.create_namespaced_config_map("default", configmap("p", a="1", b="2"))
    # A dict body goes out as a strategic merge patch, served as a merge patch.
    out = core.patch_namespaced_config_map("p", "default", {"data": {"a": None, "c": "3"}})
    assert out.data == {"b": "2", "c": "3"}
    out = core.patch_namespaced_config_map(
        "p", "default", [{"op": "replace", "path": "/data/b", "value": "20"}]
    )
    assert out.data == {"b": "20", "c": "3"}
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_config_map(
            "p", "default", [{"op": "test", "path": "/data/b", "value": "nope"}]
        )
    assert err.value.status == 422
    # A resourceVersion in a patch is a precondition.
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_config_map("p", "default", {"metadata": {"resourceVersion": "1"}})
    assert err.value.status == 409


def test_fail_next_and_delay(api, k8s):
    core = client.CoreV1Api(k8s)
    api.fail_next(2, status=503, method="GET", plural="pods")
    for _ in range(2):
        with pytest.raises(ApiException) as err:
            core.list_namespaced_pod("default")
        assert err.value.status == 503
        assert status_of(err.value)["reason"] == "ServiceUnavailable"
    core.list_namespaced_config_map("default")  # not matched, not consumed
    assert core.list_namespaced_pod("default").items == []
    api.fail_next(1, status=500, method="POST")
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("default", configmap("x"))
    assert err.value.status == 500 and api.objects("configmaps") == []

    api.delay(0.3)
    with pytest.raises(urllib3.exceptions.HTTPError):  # a read timeout, after urllib3's retries
        core.list_namespaced_pod("default", _request_timeout=0.05)
    t0 = time.monotonic()
    core.list_namespaced_pod("default")
    assert time.monotonic() - t0 >= 0.3
    api.delay(0)


# --- other resources ---------------------------------------------------------------------------


def test_missing_crd_is_404(k8s):
    with FakeApiServer(missing={"workflows"}) as api, api.client() as c:
        custom = client.CustomObjectsApi(c)
        for call in (
            lambda: custom.list_cluster_custom_object(*ARGO, "workflows"),
            lambda: custom.list_namespaced_custom_object(*ARGO, "default", "workflows"),
            lambda: custom.create_namespaced_custom_object(
                *ARGO, "default", "workflows", workflow("w")
            ),
        ):
            with pytest.raises(ApiException) as err:
                call()
            assert err.value.status == 404
            assert status_of(err.value)["reason"] == "NotFound"
        assert custom.list_cluster_custom_object(*ARGO, "workflowtemplates")["items"] == []
        assert api.errors == []


def test_custom_objects_create_list_watch_patch_delete(api, k8s):
    custom = client.CustomObjectsApi(k8s)
    created = custom.create_namespaced_custom_object(*ARGO, "default", "workflows", workflow("w1"))
    assert created["kind"] == "Workflow" and created["metadata"]["resourceVersion"] == "1"
    listed = custom.list_namespaced_custom_object(*ARGO, "default", "workflows")
    assert listed["kind"] == "WorkflowList" and listed["apiVersion"] == "argoproj.io/v1alpha1"
    assert [(i["kind"], i["apiVersion"]) for i in listed["items"]] == [
        ("Workflow", "argoproj.io/v1alpha1")
    ]
    rv = listed["metadata"]["resourceVersion"]

    def writer() -> None:
        wait_for(lambda: api.watch_count() == 1)
        custom.patch_namespaced_custom_object(
            *ARGO, "default", "workflows", "w1", {"status": {"phase": "Running"}}
        )
        api.create("workflows", workflow("w2"))

    thread = threading.Thread(target=writer)
    thread.start()
    w = watch.Watch()
    seen = []
    for event in w.stream(
        custom.list_namespaced_custom_object,
        *ARGO,
        "default",
        "workflows",
        resource_version=rv,
        timeout_seconds=5,
    ):
        seen.append((event["type"], event["object"]["metadata"]["name"]))
        if len(seen) == 2:
            w.stop()
    thread.join()
    assert seen == [("MODIFIED", "w1"), ("ADDED", "w2")]
    assert api.get("workflows", "default", "w1")["status"] == {"phase": "Running"}
    gone = custom.delete_namespaced_custom_object(*ARGO, "default", "workflows", "w1")
    assert gone["metadata"]["name"] == "w1"  # the custom resource store returns the object

    cwft = {"metadata": {"name": "shared"}, "spec": {"templates": []}}
    custom.create_cluster_custom_object(*ARGO, "clusterworkflowtemplates", cwft)
    items = custom.list_cluster_custom_object(*ARGO, "clusterworkflowtemplates")["items"]
    assert [i["metadata"]["name"] for i in items] == ["shared"]
    assert "namespace" not in items[0]["metadata"]


def test_batch_jobs_and_cronjobs(api, k8s):
    batch = client.BatchV1Api(k8s)
    job = client.V1Job(
        metadata=client.V1ObjectMeta(name="train"),
        spec=client.V1JobSpec(
            template=client.V1PodTemplateSpec(
                spec=client.V1PodSpec(
                    containers=[client.V1Container(name="main", image="busybox")],
                    restart_policy="Never",
                )
            )
        ),
    )
    created = batch.create_namespaced_job("ml", job)
    assert created.metadata.namespace == "ml" and created.metadata.generation == 1
    assert [j.metadata.name for j in batch.list_job_for_all_namespaces().items] == ["train"]
    api.put(
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": "nightly", "namespace": "ml"},
            "spec": {
                "schedule": "0 0 * * *",
                "jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}},
            },
        }
    )
    assert batch.read_namespaced_cron_job("nightly", "ml").spec.schedule == "0 0 * * *"
    batch.delete_namespaced_job("train", "ml")
    assert batch.list_namespaced_job("ml").items == []


def test_fifty_thousand_pods_in_pages_of_500(api, k8s):
    end = api.bulk_load(
        "pods", [pod(f"pod-{i:05d}", f"ns-{i % 20:02d}", app="x") for i in range(50_000)]
    )
    assert end == "50000"
    core = client.CoreV1Api(k8s)
    count, pages, rvs, token = 0, 0, set(), None
    while True:
        resp = core.list_pod_for_all_namespaces(limit=500, _continue=token, _preload_content=False)
        body = orjson.loads(resp.data)
        count += len(body["items"])
        pages += 1
        rvs.add(body["metadata"]["resourceVersion"])
        token = body["metadata"].get("continue")
        if not token:
            break
    assert (count, pages, rvs) == (50_000, 100, {"50000"})


def test_every_error_is_a_status_and_discovery_is_served(api, k8s):
    http = urllib3.PoolManager(retries=False)
    try:
        for method, path, body, code in (
            ("GET", "/api/v1/nothings", None, 404),
            ("GET", "/apis/example.com/v1/things", None, 404),
            ("POST", "/api/v1/pods", b"{}", 405),
            ("POST", "/api/v1/namespaces/default/pods", b"{not json", 400),
            ("GET", "/api/v1/pods?labelSelector=a+in+(b", None, 400),
            ("GET", "/api/v1/pods?continue=garbage", None, 400),
            ("GET", "/api/v1/pods?watch=true&resourceVersion=abc", None, 400),
            ("FOO", "/api/v1/pods", None, 501),
        ):
            resp = http.request(method, api.url + path, body=body)
            assert resp.status == code, (method, path)
            assert resp.headers["Content-Type"] == "application/json"
            body = json.loads(resp.data)
            assert (body["kind"], body["status"], body["code"]) == ("Status", "Failure", code)
    finally:
        http.clear()
    assert client.CoreApi(k8s).get_api_versions().versions == ["v1"]
    groups = client.ApisApi(k8s).get_api_versions().groups
    assert {g.name for g in groups} == {
        "batch",
        "argoproj.io",
        "resource.k8s.io",
        "apps",
        "leaderworkerset.x-k8s.io",
        "kubeflow.org",
    }
    resources = client.BatchV1Api(k8s).get_api_resources().resources
    assert {r.name for r in resources} == {"jobs", "cronjobs"}
    assert client.VersionApi(k8s).get_code().major == "1"
