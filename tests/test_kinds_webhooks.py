"""The shipped webhooks send the kinds table's kinds exactly when a pod template asks for a
GPU (issue #14): the `pod-templates-request-gpus` condition is written from the table with
costgate's one GPU rule, evaluated here with cel-python against every captured review and
every upstream sample, and compared with what costgate itself counts."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import cel
from tests.support.paths import ADMISSION_KINDS, ML_OPERATORS, REPO
from webhook.cli import main
from webhook.core.gpu_names import cel_test
from webhook.kinds_cel import requests_gpus
from webhook.tables import load_kinds

WEBHOOKS = REPO / "manifests" / "base" / "webhooks.yaml"
APPS = ("Deployment", "StatefulSet", "ReplicaSet", "DaemonSet")


@functools.cache
def _hooks() -> dict[str, dict[str, Any]]:
    return {
        w["name"]: w for doc in yaml.safe_load_all(WEBHOOKS.read_text()) for w in doc["webhooks"]
    }


def _condition(hook: str) -> str:
    (found,) = [
        c["expression"]
        for c in _hooks()[f"{hook}.validate.costgate.io"]["matchConditions"]
        if c["name"] == "pod-templates-request-gpus"
    ]
    return found


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_the_shipped_conditions_are_written_from_the_table():
    """What `python -m webhook.kinds_cel` prints, pasted: change the table, paste again."""
    table = load_kinds()
    apps = [table[("apps", k)] for k in APPS]
    others = [spec for key, spec in table.items() if key[0] != "apps"]
    for verb in ("mutate", "validate"):
        for hook, specs in (("apps", apps), ("mlkinds", others)):
            (condition,) = [
                c
                for c in _hooks()[f"{hook}.{verb}.costgate.io"]["matchConditions"]
                if c["name"] == "pod-templates-request-gpus"
            ]
            assert _flat(condition["expression"]) == _flat(requests_gpus(specs)), (hook, verb)
    rule = cel_test("r")
    assert _condition("mlkinds").count(".exists(r, ") == _condition("mlkinds").count(
        f".exists(r, {rule})"
    )


def _webhook_for(group: str) -> str:
    return "apps" if group == "apps" else "mlkinds"


def _resources(hook: str) -> set[tuple[str, str]]:
    return {
        (group, resource)
        for rule in _hooks()[f"{hook}.validate.costgate.io"]["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }


def test_the_rules_cover_every_kind_of_the_table_and_tell_volcano_from_batch():
    plural = {
        "Deployment": "deployments",
        "StatefulSet": "statefulsets",
        "ReplicaSet": "replicasets",
        "DaemonSet": "daemonsets",
    }
    for group, kind in load_kinds():
        hook = _webhook_for(group)
        name = plural.get(kind, kind.lower() + "s")
        assert (group, name) in _resources(hook), (group, kind)
    assert ("batch", "jobs") not in _resources("mlkinds")
    request = {"kind": {"group": "batch", "version": "v1", "kind": "Job"}}
    job = {"spec": {"tasks": [{"template": {"spec": {"containers": []}}}]}}
    assert not cel.evaluate(_condition("mlkinds"), request=request, object=job)


def _gpus_by_costgate(tmp_path: Path, capsys, objects: list[dict[str, Any]]) -> list[int]:
    """The GPUs costgate counts in each object (1 for a DaemonSet it refuses as unbounded:
    it found GPUs, on an unknown number of nodes)."""
    path = tmp_path / "objects.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    capsys.readouterr()
    main(["estimate", "-f", str(path), "-o", "json"])
    rows = json.loads(capsys.readouterr().out)
    unbounded = [any(r["code"] == "invalid-gpu-request" for r in row["reasons"]) for row in rows]
    return [max(row["gpus"], int(u)) for row, u in zip(rows, unbounded, strict=True)]


def _sent(obj: dict[str, Any], group: str, kind: str) -> bool:
    request = {"kind": {"group": group, "version": "v1", "kind": kind}}
    return cel.evaluate(_condition(_webhook_for(group)), request=request, object=obj)


def test_captured_reviews_are_sent_exactly_when_costgate_finds_gpus(tmp_path, capsys):
    """Every captured create of a table kind: sent by the API server iff costgate counts a
    GPU in it (the MPIJob has none in its templates), or its pods name DRA claims (the
    DRA-only JobSet: the count is in its claim template, which these reviews do not carry)."""
    table = load_kinds()
    reviews = []
    for path in sorted(ADMISSION_KINDS.glob("validate-*.json")):
        request = json.loads(path.read_text())["request"]
        key = (request["kind"]["group"], request["kind"]["kind"])
        if key in table:
            reviews.append((path.stem, key, request["object"]))
    assert len(reviews) >= 20
    gpus = _gpus_by_costgate(tmp_path, capsys, [obj for _, _, obj in reviews])
    sent = {name: _sent(obj, *key) for name, key, obj in reviews}
    claims = {name: "resourceClaims" in json.dumps(obj) for name, _, obj in reviews}
    assert sent == {
        name: count > 0 or claims[name] for (name, _, _), count in zip(reviews, gpus, strict=True)
    }
    assert not sent["validate-mpijob-create"] and sent["validate-jobset-create-dra"]
    assert sum(sent.values()) >= 15


def test_upstream_samples_are_sent_exactly_when_costgate_finds_gpus(tmp_path, capsys):
    table = load_kinds()
    objects = []
    for path in sorted(ML_OPERATORS.glob("*/examples/**/*.yaml")):
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError:
            continue
        for doc in docs:
            if isinstance(doc, dict) and "apiVersion" in doc:
                group = str(doc["apiVersion"]).rpartition("/")[0]
                if (group, doc.get("kind")) in table:
                    objects.append(doc)
    assert len(objects) >= 60
    gpus = _gpus_by_costgate(tmp_path, capsys, objects)
    # a sample whose pods name DRA claims is sent too: its count is in a claim template the
    # sample does not carry (JobSet's DRA example)
    disagree = [
        (o["kind"], o["metadata"].get("name"))
        for o, count in zip(objects, gpus, strict=True)
        if _sent(o, str(o["apiVersion"]).rpartition("/")[0], o["kind"])
        != (count > 0 or "resourceClaims" in json.dumps(o))
    ]
    assert disagree == []


@pytest.mark.parametrize(
    "obj",
    [
        {},
        {"spec": {}},
        {"spec": {"pytorchReplicaSpecs": {}}},
        {"spec": {"pytorchReplicaSpecs": {"Worker": {}}}},
        {"spec": {"pytorchReplicaSpecs": {"Worker": {"template": {}}}}},
        {"spec": {"workerGroupSpecs": [{}], "headGroupSpec": {}}},
    ],
)
def test_a_condition_never_fails_on_missing_fields(obj):
    """An evaluation error counts as a webhook failure (failurePolicy Fail): every optional
    field is guarded."""
    for group, kind in load_kinds():
        assert not _sent(obj, group, kind), (group, kind)
