"""A WorkflowTemplate edited after admission (issue #13, item 10).

A Workflow priced on `lib`'s `train` (1 × T4, $11.74) runs the template as it reads when the
step starts: Argo resolves `templateRef` then, and the pods it makes are trusted as the
controller's. The template was priced for information only, so editing it to 8 GPUs with no
node selector raised every admitted Workflow past the threshold unseen. An edit (and a
template created again under the same name) is now priced against the live Workflows that
run it, through the watch cache's index, and refused when it takes one of them past what it
may cost. `costgate estimate` has no live Workflows and says so.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from tests.support.builders import LABELS, T4
from tests.support.config import policy_with
from tests.support.fakeapi import FakeApiServer
from tests.support.polling import eventually
from webhook.approvals import Keyring, keygen, mint
from webhook.cli import main
from webhook.core.config import Config
from webhook.core.template_edit import MAX_REPRICED
from webhook.service import AdmissionService
from webhook.state.cluster import cluster_state
from webhook.state.referrers import WorkflowsByTemplate, references
from webhook.tables import load_config

NOW = 1_800_000_000.0
ADMITTED = "11.74"  # 1 × t4 at $0.978/h × 12h, stamped by /mutate at admission


def train(gpus: int = 1, selector: dict[str, str] | None = T4, image: str = "trainer:1"):
    template: dict[str, Any] = {
        "name": "train",
        "container": {"image": image, "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}},
    }
    if selector is not None:
        template["nodeSelector"] = selector
    return template


def library(*templates: dict[str, Any], name: str = "lib", cluster: bool = False):
    metadata: dict[str, Any] = {"name": name, "labels": dict(LABELS)}
    if not cluster:
        metadata["namespace"] = "team-a"
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "ClusterWorkflowTemplate" if cluster else "WorkflowTemplate",
        "metadata": metadata,
        "spec": {"templates": list(templates)},
    }


def running(
    name: str = "nightly",
    *,
    ref: str = "lib",
    cluster: bool = False,
    phase: str = "Running",
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Workflow as it lives in the cluster after admission: deadline set, estimate stamped."""
    template_ref: dict[str, Any] = {"name": ref, "template": "train"}
    if cluster:
        template_ref["clusterScope"] = True
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            "name": name,
            "namespace": "team-a",
            "uid": f"uid-{name}",
            "labels": dict(LABELS),
            "annotations": {"costgate.io/estimated-cost": ADMITTED, **(annotations or {})},
        },
        "spec": {
            "entrypoint": "main",
            "activeDeadlineSeconds": 43200,
            "templates": [
                {"name": "main", "steps": [[{"name": "train", "templateRef": template_ref}]]}
            ],
        },
        "status": {"phase": phase},
    }


class Cache:
    """The watch cache's view, fed by hand: the same index the watch threads keep."""

    def __init__(self, *objects: dict[str, Any]) -> None:
        self.templates: dict[tuple[str, str, bool], Any] = {}
        self.index = WorkflowsByTemplate()
        for obj in objects:
            self.add(obj)

    def add(self, obj: dict[str, Any]) -> None:
        if obj["kind"] == "Workflow":
            self.index.workflow(obj)
            return
        cluster = obj["kind"] == "ClusterWorkflowTemplate"
        key = ("" if cluster else obj["metadata"]["namespace"], obj["metadata"]["name"], cluster)
        self.templates[key] = obj["spec"]
        self.index.template(key, obj["spec"])

    def lookup(self, namespace: str, name: str, cluster: bool) -> Any:
        return self.templates.get(("" if cluster else namespace, name, cluster))

    def config(self, base: Config | None = None) -> Config:
        base = base or load_config()
        return dataclasses.replace(base, lookup=self.lookup, referrers=self.index)


_reviews = iter(range(10**6))


def send(
    service: AdmissionService, obj: dict[str, Any], old: dict[str, Any] | None = None
) -> dict[str, Any]:
    """/validate's response to a CREATE of `obj`, or an UPDATE from `old` to it."""
    kind = obj["kind"]
    request: dict[str, Any] = {
        "uid": f"review-{next(_reviews)}",
        "kind": {"group": "argoproj.io", "version": "v1alpha1", "kind": kind},
        "resource": {"group": "argoproj.io", "version": "v1alpha1", "resource": "x"},
        "name": obj["metadata"]["name"],
        "operation": "UPDATE" if old is not None else "CREATE",
        "userInfo": {"username": "mallory"},
        "object": obj,
    }
    if "namespace" in obj["metadata"]:
        request["namespace"] = obj["metadata"]["namespace"]
    if old is not None:
        request["oldObject"] = old
    body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    answer = service.handle(orjson.dumps(body), "validate")
    assert answer.status == 200
    return orjson.loads(answer.body)["response"]


def service(cache: Cache, base: Config | None = None) -> AdmissionService:
    return AdmissionService(cache.config(base), clock=lambda: NOW)


# -- the attack -------------------------------------------------------------------------


def test_the_issues_attack_is_denied_naming_the_workflow() -> None:
    before = library(train())
    after = library(train(8, selector=None))  # 8 GPUs, no selector: the dearest type, gb200
    cache = Cache(before, running("nightly"))
    answer = send(service(cache), after, old=before)
    assert not answer["allowed"]
    message = answer["status"]["message"]
    assert answer["auditAnnotations"]["reasons"] == "over-threshold"
    assert '"team-a/nightly" $11.74 → $2,595.84' in message  # 8 × gb200 $27.04/h × 12h
    assert "exceeds the $100.00 limit" in message
    assert "new template name" in message and "templateReferencing: Secure" in message
    assert "\n" not in message


def test_an_edit_that_keeps_or_lowers_the_cost_is_allowed() -> None:
    before = library(train())
    cache = Cache(before, running("nightly"))
    svc = service(cache)
    assert send(svc, library(train(image="trainer:2")), old=before)["allowed"]
    metadata_only = copy.deepcopy(before)
    metadata_only["metadata"]["labels"]["team"] = "x"
    assert send(svc, metadata_only, old=before)["allowed"]
    assert send(svc, library(train(0)), old=before)["allowed"]  # no GPU at all


def test_an_edit_that_stays_under_the_threshold_is_allowed() -> None:
    # 2 × t4 × 12h = $23.47: dearer, but what the namespace allows without approval
    before = library(train())
    answer = send(service(Cache(before, running())), library(train(2)), old=before)
    assert answer["allowed"]


def test_a_finished_workflow_is_not_counted() -> None:
    before = library(train())
    cache = Cache(before, running("done", phase="Succeeded"), running("failed", phase="Failed"))
    assert send(service(cache), library(train(8, selector=None)), old=before)["allowed"]


def test_every_workflow_running_it_is_named_with_a_count() -> None:
    before = library(train())
    cache = Cache(before, *(running(f"run-{i:02}") for i in range(12)))
    message = send(service(cache), library(train(8, None)), old=before)["status"]["message"]
    assert "raise 12 live Workflows" in message
    assert '"team-a/run-00"' in message and "2 more" in message


def test_a_cluster_workflow_template_edit_is_checked() -> None:
    before = library(train(), cluster=True)
    cache = Cache(before, running("nightly", cluster=True))
    answer = send(service(cache), library(train(8, None), cluster=True), old=before)
    assert not answer["allowed"]
    assert "ClusterWorkflowTemplate" in answer["status"]["message"]
    assert '"team-a/nightly"' in answer["status"]["message"]
    # a namespaced template of the same name is another template: its edit changes nothing
    namespaced = library(train())
    assert send(service(cache), library(train(8, None)), old=namespaced)["allowed"]


def test_a_workflow_reached_through_another_template_counts() -> None:
    # nightly -> pipeline.train (steps) -> lib.train: the edit of lib reaches nightly
    before = library(train())
    pipeline = library(
        {"name": "train", "steps": [[{"name": "t", "templateRef": {"name": "lib",
                                                                   "template": "train"}}]]},
        name="pipeline",
    )  # fmt: skip
    cache = Cache(before, pipeline, running("nightly", ref="pipeline"))
    answer = send(service(cache), library(train(8, None)), old=before)
    assert not answer["allowed"]
    assert '"team-a/nightly"' in answer["status"]["message"]


def test_a_template_deleted_and_created_again_is_checked() -> None:
    # the cache no longer holds lib; the Workflow still runs it by name when its step starts
    cache = Cache(running("nightly"))
    answer = send(service(cache), library(train(8, selector=None)))
    assert not answer["allowed"]
    assert "$11.74 → $2,595.84" in answer["status"]["message"]  # against the admitted stamp
    assert send(service(cache), library(train()))["allowed"]  # the same again: admitted


def test_past_the_cap_the_edit_is_refused_not_passed_unchecked() -> None:
    before = library(train())
    cache = Cache(before, *(running(f"run-{i}") for i in range(MAX_REPRICED + 1)))
    answer = send(service(cache), library(train(image="trainer:2")), old=before)
    assert not answer["allowed"]
    assert f"more than the {MAX_REPRICED:,}" in answer["status"]["message"]


# -- approvals, re-verified -------------------------------------------------------------


@pytest.fixture
def carol(tmp_path: Path) -> tuple[Path, Path]:
    """(carol's private key, the approvers directory holding her public key)."""
    pair = keygen("carol", tmp_path / "private")
    approvers = tmp_path / "approvers"
    approvers.mkdir()
    (approvers / pair.public_path.name).write_bytes(pair.public_path.read_bytes())
    return pair.private_path, approvers


def approval(key: Path, max_usd: float) -> dict[str, str]:
    token = mint(
        key, namespace="team-a", experiment="exp-1", max_usd=max_usd, expires_in=3600, now=NOW
    )
    return {"costgate.io/approval": token}


def test_an_approval_that_covers_the_new_cost_lets_the_edit_through(carol) -> None:
    key, approvers = carol
    base = dataclasses.replace(load_config(), verify_approval=Keyring(approvers).verify)
    before, after = library(train()), library(train(8, None))
    covered = Cache(before, running(annotations=approval(key, 3000)))
    assert send(service(covered, base), after, old=before)["allowed"]
    short = Cache(before, running(annotations=approval(key, 2000)))
    answer = send(service(short, base), after, old=before)
    assert not answer["allowed"]
    assert answer["auditAnnotations"]["reasons"] == "invalid-approval"
    assert "$2,595.84" in answer["status"]["message"]


def test_a_workflow_in_a_warn_namespace_does_not_block_the_edit() -> None:
    before = library(train())
    warn = dataclasses.replace(load_config(), policy=policy_with(mode="warn"))
    assert send(service(Cache(before, running()), warn), library(train(8, None)), old=before)[
        "allowed"
    ]


# -- offline, and the index -------------------------------------------------------------


def _estimate(capsys, path: Path) -> list[dict[str, Any]]:
    main(["estimate", "-f", str(path), "-o", "json"])
    return json.loads(capsys.readouterr().out)


def test_costgate_estimate_says_it_cannot_see_live_workflows_and_otherwise_agrees(
    tmp_path: Path, capsys
) -> None:
    main_steps = {"name": "main", "steps": [[{"name": "t", "template": "train"}]]}
    template = library(train(8, None), main_steps)
    template["spec"]["entrypoint"] = "main"
    path = tmp_path / "lib.yaml"
    path.write_text(yaml.safe_dump(template))
    [row] = _estimate(capsys, path)
    assert row["allowed"]
    assert any("not priced against them" in w for w in row["warnings"])
    # the webhook with a cache of no live Workflows: the same answer, without the note
    served = send(service(Cache()), template)
    assert served["allowed"]
    assert served["auditAnnotations"].get("estimated-cost-usd") == f"{row['cost_usd']:.2f}"
    assert not any("not priced against them" in w for w in served.get("warnings", []))


def test_the_index_files_workflows_by_every_template_they_name() -> None:
    spec = {
        "workflowTemplateRef": {"name": "base"},
        "templates": [
            {"name": "a", "dag": {"tasks": [{"name": "x", "templateRef": {"name": "lib"}}]}},
            {"name": "b", "steps": [[{"name": "y", "hooks": {"exit": {"templateRef": {
                "name": "tools", "clusterScope": True}}}}]]},
        ],
    }  # fmt: skip
    assert references(spec, "team-a") == {
        ("team-a", "base", False),
        ("team-a", "lib", False),
        ("", "tools", True),
    }
    deep: Any = {"templateRef": {"name": "deep"}}
    for _ in range(5000):  # deeper than Python recurses: read with a stack
        deep = [deep]
    assert references({"templates": deep}, "ns") == {("ns", "deep", False)}


# -- the cache, from the API server ------------------------------------------------------


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval=0.2) as server:
        yield server


def test_the_watch_cache_serves_the_workflows_that_run_a_template(api: FakeApiServer) -> None:
    before = library(train())
    api.create("workflowtemplates", before)
    api.create("workflows", running("nightly"))
    api.create("workflows", running("other", ref="elsewhere"))
    config_now: list[Config] = []
    state = cluster_state(
        lambda: config_now[0], ledger_namespace="costgate-system", api_client=api.client()
    )
    cluster = state.cluster
    assert cluster is not None
    config_now.append(
        dataclasses.replace(load_config(), lookup=cluster.lookup(), referrers=cluster.referrers())
    )
    cluster.start()
    try:
        assert cluster.wait_synced(10)
        svc = AdmissionService(lambda: config_now[0], clock=lambda: NOW, state=state)
        after = library(train(8, None))
        denied = send(svc, after, old=before)
        assert not denied["allowed"]
        assert '"team-a/nightly"' in denied["status"]["message"]
        assert "other" not in denied["status"]["message"]
        # the Workflow finishes: it no longer runs anything, and the edit passes
        api.modify(
            "workflows", "team-a", "nightly", lambda o: o.update(status={"phase": "Succeeded"})
        )
        eventually(lambda: send(svc, after, old=before)["allowed"])
        # a new Workflow of the template is filed as the watch sees it
        api.create("workflows", running("again"))
        eventually(lambda: not send(svc, after, old=before)["allowed"])
        api.remove("workflows", "team-a", "again")
        eventually(lambda: send(svc, after, old=before)["allowed"])
    finally:
        cluster.stop()


def test_reviews_of_other_kinds_never_ask_the_index() -> None:
    calls: list[tuple[str, str, bool]] = []

    def referrers(namespace: str, name: str, cluster: bool) -> list[Any]:
        calls.append((namespace, name, cluster))
        return []

    config = dataclasses.replace(load_config(), referrers=referrers)
    svc = AdmissionService(config, clock=lambda: NOW)
    workflow = running("fresh")
    del workflow["status"]
    send(svc, workflow)
    assert calls == []
    send(svc, library(train()))
    assert calls == [("team-a", "lib", False)]
