"""Hostile input: whatever bytes reach /mutate or /validate, the answer is well formed.

Fuzzed with hypothesis (arbitrary JSON, and the captured reviews with random subtrees replaced
by random values of random types) through `AdmissionService.handle` for both endpoints, and a
smaller share through the ASGI app over HTTP; then one test per known-hostile shape: giant
arrays, deep nesting, huge numbers, unicode and newlines in user-controlled strings, JSON
Pointer escapes in patch paths, oversized, empty, non-UTF-8 and non-object bodies.

Every answer must hold the invariants of tests/support/invariants.py (`check_answer`: the
request's uid, or an HTTP 400/413 JSON error when there is none; never a 500; one printable
line per warning and denial; a patch that applies), and here also: no internal-error answer,
since bad input is the sender's to fix and gets a clear denial, never a logged traceback.

The atheris harness tests/fuzz/fuzz_review.py checks the same invariants on raw bytes;
`test_the_atheris_harness_runs_clean` runs it for a bounded number of inputs.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.answers import patch_ops, patched
from tests.support.builders import gpu_product_affinity
from tests.support.captures import all_captures, capture
from tests.support.config import policy_with
from tests.support.invariants import check_answer
from tests.support.paths import ADMISSION, FIXTURES
from tests.support.tools import require_module
from webhook.core.engine import Config
from webhook.server.app import create_app
from webhook.service import AdmissionService, Answer, Endpoint
from webhook.settings import Settings
from webhook.state import memory_state
from webhook.tables import load_config

ENDPOINTS: tuple[Endpoint, ...] = ("mutate", "validate")
MIB = 1024 * 1024


def check(service: AdmissionService, body: bytes, endpoint: Endpoint) -> dict[str, Any] | None:
    answer: Answer = service.handle(body, endpoint)
    assert answer.outcome != "error", "bad input must not be an internal error"
    return check_answer(answer.status, answer.body, body, endpoint)


# --- services under test -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def services() -> list[AdmissionService]:
    """The configurations the fuzz runs against: the bundled default as `costgate serve` loads
    it (YAML podSpecPatch reader included), warn mode (allows what enforce denies, so denied
    shapes reach the patch and every reason becomes a warning), and quotas with a budget
    over in-memory state."""
    base = load_config()
    warn = Config(
        table=base.table,
        policy=policy_with(mode="warn", unresolved_templates="warn", unknown_gpu="deny"),
        parse_text=base.parse_text,
    )
    limited = Config(
        table=base.table,
        policy=policy_with(
            quota={"max_gpus": 16, "max_committed_usd": 5000},
            owner_quota={"max_gpus": 8},
            budget={"usd": 2000, "period": "month"},
        ),
        parse_text=base.parse_text,
    )
    return [
        AdmissionService(base),
        AdmissionService(warn),
        AdmissionService(limited, state=memory_state()),
    ]


@pytest.fixture(scope="module")
def service(services: list[AdmissionService]) -> AdmissionService:
    return services[0]


# --- seeds: every kind the engine routes ---------------------------------------------------------

GPU = {"nvidia.com/gpu": "2"}
LABELS = {"owner": "alice", "experiment": "exp-1"}


def _review(obj: dict[str, Any], *, group: str, kind: str, uid: str) -> dict[str, Any]:
    metadata = obj.setdefault("metadata", {})
    metadata.setdefault("namespace", "team-a")
    metadata.setdefault("labels", dict(LABELS))
    return {
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": uid,
            "kind": {"group": group, "version": "v1", "kind": kind},
            "resource": {"group": group, "version": "v1", "resource": kind.lower() + "s"},
            "namespace": metadata["namespace"],
            "name": metadata.get("name", ""),
            "operation": "CREATE",
            "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
            "object": obj,
            "dryRun": False,
        },
    }


def _with_gpus(node: Any) -> Any:
    """Every container and script template of an Argo spec asks for 2 GPUs, so
    the examples reach pricing rather than stopping at "no GPU"."""
    if isinstance(node, dict):
        for key in ("container", "script"):
            if isinstance(node.get(key), dict):
                node[key].setdefault("resources", {})["limits"] = dict(GPU)
        for value in node.values():
            _with_gpus(value)
    elif isinstance(node, list):
        for value in node:
            _with_gpus(value)
    return node


def _argo_seeds() -> list[dict[str, Any]]:
    examples = FIXTURES / "argo-examples"
    wanted = {
        "Workflow": ["dag-diamond-steps.yaml", "pod-spec-patch.yaml", "exit-handlers.yaml"],
        "CronWorkflow": ["cron-workflow.yaml"],
        "WorkflowTemplate": ["workflow-template/templates.yaml"],
        "ClusterWorkflowTemplate": ["cluster-workflow-template/clustertemplates.yaml"],
    }
    seeds = []
    for kind, files in wanted.items():
        for name in files:
            docs = [d for d in yaml.safe_load_all((examples / name).read_text()) if d]
            obj = next(d for d in docs if d.get("kind") == kind)
            obj["metadata"].setdefault("name", obj["metadata"].pop("generateName", "wf"))
            review = _review(_with_gpus(obj), group="argoproj.io", kind=kind, uid=f"seed-{name}")
            seeds.append(json.loads(json.dumps(review, default=str)))  # YAML dates as strings
    return seeds


def _batch_seeds() -> list[dict[str, Any]]:
    job = capture("validate-job-create-gpu")
    cron_job = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "nightly", "namespace": "team-a"},
        "spec": {
            "schedule": "0 3 * * *",
            "jobTemplate": {
                "metadata": {"labels": dict(LABELS)},
                "spec": copy.deepcopy(job["request"]["object"]["spec"]),
            },
        },
    }
    return [_review(cron_job, group="batch", kind="CronJob", uid="seed-cronjob")]


def _gpu_container(name: str, gpus: str = "1", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": "cuda",
        "resources": {"limits": {"nvidia.com/gpu": gpus}},
        **extra,
    }


AFFINITY = gpu_product_affinity("NVIDIA-A100-SXM4-80GB", "NVIDIA-H100-80GB-HBM3")


def _kitchen_sink_seeds() -> list[dict[str, Any]]:
    """A Pod and a Workflow using every field their extractors read, so that random edits
    (and renames) land on each of them."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "sink",
            "annotations": {"costgate.io/max-runtime": "2h", "costgate.io/gpu-type": "a100-80gb"},
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "controller": True}
            ],
        },
        "spec": {
            "containers": [_gpu_container("main", "2"), _gpu_container("aux", "1")],
            "initContainers": [
                _gpu_container("sidecar", "1", restartPolicy="Always"),
                _gpu_container("setup", "4"),
            ],
            "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
            "affinity": AFFINITY,
            "activeDeadlineSeconds": 3600,
        },
    }
    train = {"name": "train", "container": _gpu_container("main", "2"), "timeout": "1h"}
    workflow = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            "name": "sink",
            "annotations": {"costgate.io/max-runtime": "6h", "costgate.io/max-fanout": "4"},
        },
        "spec": {
            "entrypoint": "main",
            "onExit": "cleanup",
            "parallelism": 3,
            "templateDefaults": {"retryStrategy": {"limit": 1}},
            "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
            "podMetadata": {"labels": {"team": "ml"}},
            "hooks": {
                "running": {"template": "train", "expression": "true"},
                "report": {"templateRef": {"name": "library", "template": "report"}},
            },
            "templates": [
                {
                    "name": "main",
                    "steps": [
                        [{"name": "fan", "template": "train", "withItems": [1, 2, 3]}],
                        [
                            {"name": "seq", "template": "dag", "withSequence": {"count": "2"}},
                            {"name": "param", "template": "script", "withParam": "{{x}}"},
                            {
                                "name": "inline",
                                "inline": {
                                    "container": _gpu_container("main"),
                                    "podSpecPatch": "{{inputs.parameters.patch}}",
                                },
                            },
                        ],
                    ],
                },
                {
                    "name": "dag",
                    "parallelism": 2,
                    "affinity": AFFINITY,
                    "dag": {
                        "tasks": [
                            {
                                "name": "a",
                                "template": "train",
                                "hooks": {"exit": {"template": "set"}},
                            },
                            {"name": "b", "template": "set", "dependencies": ["a"]},
                        ]
                    },
                },
                train,
                {"name": "script", "script": {**_gpu_container("main"), "source": "print()"}},
                {
                    "name": "set",
                    "containerSet": {"containers": [_gpu_container("x"), _gpu_container("y")]},
                    "sidecars": [_gpu_container("side")],
                    "initContainers": [_gpu_container("init", "2")],
                    "podSpecPatch": json.dumps({"containers": [_gpu_container("x", "2")]}),
                    "retryStrategy": {"limit": "2"},
                    "activeDeadlineSeconds": "600",
                },
                {
                    "name": "cleanup",
                    "container": _gpu_container("main"),
                    "activeDeadlineSeconds": 60,
                },
                {"name": "make", "resource": {"action": "create", "manifest": "kind: Job"}},
            ],
        },
    }
    return [
        _review(pod, group="", kind="Pod", uid="seed-sink-pod"),
        _review(workflow, group="argoproj.io", kind="Workflow", uid="seed-sink-workflow"),
    ]


def _dra_seeds() -> list[dict[str, Any]]:
    """DRA: a pod naming a claim template and one naming a claim, the claim and the template
    (captured; tests/fixtures/admission-kinds)."""
    names = [
        "validate-pod-create-dra-template",
        "validate-pod-create-dra-claim",
        "validate-resourceclaim-create",
        "validate-resourceclaimtemplate-create",
    ]
    return [json.loads((FIXTURES / "admission-kinds" / f"{n}.json").read_text()) for n in names]


def _seeds() -> list[dict[str, Any]]:
    captured = [capture(name) for name in all_captures()]
    return captured + _batch_seeds() + _argo_seeds() + _dra_seeds() + KITCHEN_SINKS


KITCHEN_SINKS = _kitchen_sink_seeds()
SEEDS = _seeds()
# a third of the examples start from the two objects that use every field
seeds = st.sampled_from(SEEDS) | st.sampled_from(KITCHEN_SINKS)
ROUTED = {
    (s["request"]["kind"]["group"], s["request"]["kind"]["kind"])
    for s in SEEDS
    if isinstance(s.get("request"), dict)
}


def test_the_seeds_cover_every_kind_the_engine_routes() -> None:
    """The fuzz starts from a review of each kind `evaluate` has an extractor for."""
    from webhook.core.extract.kinds import EXTRACTORS

    assert set(EXTRACTORS) <= ROUTED


# --- strategies ----------------------------------------------------------------------------------

HOSTILE_STRINGS = [
    "",
    " ",
    "\n",
    "a\nb",
    "x\r\nWarning: costgate: approved by the platform team",
    "\x00",
    "\u202eevil",  # right-to-left override
    "a\u200bb",  # zero-width space
    "\ufeff",
    "e\u0301\u0301\u0301",  # combining accents
    "🚀💸",
    "\u2028\u2029",  # line and paragraph separators
    "\x1b[31mred\x1b[0m",  # an ANSI escape
    "\ud800",  # a lone surrogate (json.dumps writes it escaped)
    "1e999",
    "99999999999999999999999",
    "-0",
    "NaN",
    "Infinity",
    "0x10",
    "1_000",
    "８",  # fullwidth digit
    "²",
    "500m",
    "1Ki",
    "12h",
    "999999999d",
    "{{workflow.parameters.gpus}}",
    "costgate.io/x~1y",
    "a/b~c",
    "x" * 5000,
]
HOSTILE_NUMBERS = [
    0,
    -1,
    2**31,
    2**63 - 1,
    2**63,
    2**64,
    10**30,
    -(10**30),
    1e308,
    -1e308,
    -0.0,
    0.5,
    5e-324,
    True,
    False,
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from(HOSTILE_NUMBERS)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(HOSTILE_STRINGS)
)
# the fields the parser and the extractors read, so that added keys land where they are looked at
FIELDS = [
    *("uid", "kind", "operation", "object", "oldObject", "userInfo", "dryRun", "namespace"),
    *("metadata", "name", "generateName", "labels", "annotations", "ownerReferences"),
    *("controller", "apiVersion", "spec", "containers", "initContainers", "restartPolicy"),
    *("resources", "limits", "requests", "nvidia.com/gpu", "amd.com/gpu", "nvidia.com/mig-1g.10gb"),
    *("nodeSelector", "affinity", "nodeAffinity", "nodeSelectorTerms", "matchExpressions"),
    *("activeDeadlineSeconds", "parallelism", "completions", "template", "jobTemplate"),
    *("entrypoint", "templates", "steps", "dag", "tasks", "container", "script", "containerSet"),
    *("sidecars", "withItems", "withSequence", "withParam", "count", "retryStrategy", "limit"),
    *("templateRef", "inline", "hooks", "exit", "onExit", "podSpecPatch", "templateDefaults"),
    *("workflowTemplateRef", "clusterScope", "timeout", "workflowSpec", "workflowMetadata"),
    *("podMetadata", "nvidia.com/gpu.product", "costgate.io/max-runtime", "costgate.io/gpu-type"),
    *("costgate.io/approval", "costgate.io/max-fanout", "costgate.io/x~1y", "costgate.io/a/b"),
]
keys = st.text(max_size=12) | st.sampled_from(FIELDS + HOSTILE_STRINGS[:14])
hostile_names = st.sampled_from(HOSTILE_STRINGS) | st.text(
    st.characters(codec="utf-8", categories=["Cc", "Cf", "Zl", "Zp", "Mn", "So", "L"]),
    min_size=1,
    max_size=8,
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=20,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*prefix, i))


def _at(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        doc = doc[key]
    return doc


_NAMED_BY = frozenset({"name", "template", "entrypoint", "onExit", "namespace", "generateName"})
_KEYED = frozenset({"hooks", "labels", "annotations", "nodeSelector", "limits", "requests"})


def _names(node: Any, key: Any = None) -> Iterator[str]:
    """The strings a user names things with: names and references to them, hook names,
    label and annotation keys and values."""
    if isinstance(node, dict):
        if key in _KEYED:
            yield from node
        for k, value in node.items():
            yield from _names(value, k)
    elif isinstance(node, list):
        for value in node:
            yield from _names(value, key)
    elif isinstance(node, str) and (key in _NAMED_BY or key in _KEYED):
        yield node


def _renamed(node: Any, old: str, new: str) -> Any:
    if isinstance(node, dict):
        return {(new if k == old else k): _renamed(v, old, new) for k, v in node.items()}
    if isinstance(node, list):
        return [_renamed(v, old, new) for v in node]
    return new if node == old else node


def mutate(doc: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    """The review with 1-4 random edits: a subtree replaced by a random value (or the same
    value as the wrong type), a key deleted, a random key added, or a string renamed to a
    hostile one everywhere it occurs (keys too), so that a template, hook or container name
    changes consistently and the object still reads."""
    doc = copy.deepcopy(doc)
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        paths = list(_paths(doc))[1:]
        if not paths:
            break
        path = data.draw(st.sampled_from(paths), label="path")
        parent, last = _at(doc, path[:-1]), path[-1]
        old = parent[last]
        edit = data.draw(
            st.sampled_from(["value", "retype", "delete", "add", "rename"]), label="edit"
        )
        if edit == "rename":
            names = sorted(set(_names(doc.get("request"))))
            if names:
                name = data.draw(st.sampled_from(names), label="renamed")
                doc = _renamed(doc, name, data.draw(hostile_names, label="name"))
        elif edit == "value":
            parent[last] = data.draw(json_values, label="value")
        elif edit == "retype":
            parent[last] = data.draw(
                st.sampled_from([[old], {"x": old}, str(old), None, {}, [], 1e308, -(2**64)])
            )
        elif edit == "delete" and isinstance(parent, dict):
            del parent[last]
        elif isinstance(old, dict):
            old[data.draw(keys, label="key")] = data.draw(json_values, label="value")
        elif isinstance(old, list):
            old.append(data.draw(json_values, label="value"))
    return doc


def encode(doc: Any, data: st.DataObject) -> bytes:
    """JSON as the stdlib writes it (ints beyond 64 bits, lone surrogates escaped), ASCII or not."""
    ascii_only = data.draw(st.booleans(), label="ascii")
    return json.dumps(doc, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


# CI runs the same examples every time (derandomize, no database): a fuzz failure must reproduce
# on the next run, not turn up once and vanish. FUZZ_EXAMPLES=5000 searches further with fresh
# random examples (hypothesis prints the seed of a failure); the atheris harness keeps a corpus.
_SEARCH = os.environ.get("FUZZ_EXAMPLES")
FUZZ = settings(
    max_examples=int(_SEARCH or 300),
    deadline=None,
    derandomize=_SEARCH is None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(data=st.data())
def test_mutated_reviews_always_get_a_well_formed_answer(data, services) -> None:
    """The captured reviews of every kind, randomly edited, through both endpoints and
    every configuration."""
    body = encode(mutate(data.draw(seeds, label="seed"), data), data)
    for service in services:
        for endpoint in ENDPOINTS:
            check(service, body, endpoint)


@FUZZ
@given(value=json_values, seed=st.sampled_from(SEEDS))
def test_arbitrary_json_always_gets_a_well_formed_answer(value, seed, service) -> None:
    """Any JSON value as the body, as the review's request, and as a captured review's object."""
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": value}
    host = {**seed, "request": {**seed["request"], "object": value}}
    for body in (json.dumps(value), json.dumps(review), json.dumps(host)):
        for endpoint in ENDPOINTS:
            check(service, body.encode(), endpoint)


@FUZZ
@given(body=st.binary(max_size=300), data=st.data())
def test_arbitrary_bytes_always_get_a_well_formed_answer(body, data, service) -> None:
    """Random bytes, alone and spliced into a captured review (truncated, corrupted)."""
    seed = json.dumps(data.draw(st.sampled_from(SEEDS), label="seed")).encode()
    at = data.draw(st.integers(0, len(seed)), label="at")
    for candidate in (body, seed[:at] + body, seed[:at] + body + seed[at:]):
        for endpoint in ENDPOINTS:
            check(service, candidate, endpoint)


# --- builders for the specific cases -------------------------------------------------------------


A100_FOR_AN_HOUR = {"costgate.io/max-runtime": "1h", "costgate.io/gpu-type": "a100-80gb"}
# the annotation counts where a nodeSelector allows its type (gpu_type_annotation: checked)
ON_A100 = {"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}}


def pod_review(
    *,
    gpus: Any = "1",
    labels: dict[str, Any] | None = None,
    annotations: dict[str, Any] | None = None,
    spec: dict[str, Any] | None = None,
    name: str = "train",
    uid: str = "hostile-pod",
) -> dict[str, Any]:
    """A one-GPU Pod for an hour on an A100 (about $4: allowed), with edits."""
    obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": dict(LABELS) if labels is None else labels,
            "annotations": {**A100_FOR_AN_HOUR, **(annotations or {})},
        },
        "spec": {"containers": [_gpu_container("main", gpus)], **ON_A100, **(spec or {})},
    }
    return _review(obj, group="", kind="Pod", uid=uid)


def workflow_review(
    templates: list[dict[str, Any]],
    *,
    entrypoint: str = "main",
    annotations: dict[str, Any] | None = None,
    spec: dict[str, Any] | None = None,
    uid: str = "hostile-workflow",
) -> dict[str, Any]:
    """A Workflow of these templates, declared to run an hour on A100s."""
    obj = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            "name": "wf",
            "annotations": {**A100_FOR_AN_HOUR, **(annotations or {})},
        },
        "spec": {"entrypoint": entrypoint, "templates": templates, **(spec or {})},
    }
    return _review(obj, group="argoproj.io", kind="Workflow", uid=uid)


def gpu_template(name: str, gpus: str = "1", **extra: Any) -> dict[str, Any]:
    return {"name": name, "container": _gpu_container("main", gpus), **extra}


def steps_template(name: str, *calls: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "steps": [list(calls)], **extra}


def both(service: AdmissionService, body: bytes) -> dict[Endpoint, dict[str, Any] | None]:
    """The checked answer of each endpoint."""
    return {endpoint: check(service, body, endpoint) for endpoint in ENDPOINTS}


def deny_message(response: dict[str, Any] | None) -> str:
    assert response is not None and response["allowed"] is False
    return response["status"]["message"]


def deep(levels: int, leaf: str = '"x"', *, open_: str = "[", close: str = "]") -> bytes:
    """JSON nested `levels` deep, written directly (json.dumps itself stops near 1,000)."""
    return (open_ * levels + leaf + close * levels).encode()


def with_raw(doc: dict[str, Any], setter: Any, raw: bytes) -> bytes:
    """The review as JSON with the value `setter` places replaced by raw JSON bytes."""
    doc = copy.deepcopy(doc)
    setter(doc, "@@RAW@@")
    return json.dumps(doc).encode().replace(b'"@@RAW@@"', raw)


@pytest.fixture(scope="module")
def warn_service(services: list[AdmissionService]) -> AdmissionService:
    return services[1]


# --- giant arrays --------------------------------------------------------------------------------

N = 10_000


def _containers(make: Any) -> Any:
    return lambda o: o["spec"].update(containers=[make(i) for i in range(N)])


def _calls(template: Any) -> Any:
    def edit(o: dict[str, Any]) -> None:
        o["spec"]["templates"] += [template(i) for i in range(N)]
        o["spec"]["templates"][0]["steps"].append(
            [{"name": f"s{i}", "template": f"t{i}"} for i in range(N)]
        )

    return edit


GIANT = [
    pytest.param(
        _containers(lambda i: _gpu_container(f"c{i}")),
        "one pod asks for 10000 GPUs",
        id="10,000 GPU containers are one pod of too many GPUs",
    ),
    pytest.param(
        _containers(lambda i: _gpu_container(f"c{i}", "500m")),
        "10000 problems",
        id="10,000 containers with invalid GPU counts are counted, not listed",
    ),
    pytest.param(
        lambda o: o["spec"].update(
            initContainers=[_gpu_container(f"i{i}", restartPolicy="Always") for i in range(N)]
        ),
        "one pod asks for 10001 GPUs",
        id="10,000 GPU sidecars add up",
    ),
    pytest.param(
        lambda o: o["spec"]["containers"][0].update(
            env=[{"name": f"E{i}", "value": "v"} for i in range(100_000)]
        ),
        None,
        id="100,000 env entries change nothing",
    ),
    pytest.param(
        lambda o: o["metadata"]["labels"].update({f"example.com/k{i}": "v" for i in range(N)}),
        None,
        id="10,000 labels change nothing",
    ),
]


@pytest.mark.parametrize(("edit", "denied"), GIANT)
def test_giant_pods_get_a_prompt_brief_answer(edit, denied, service) -> None:
    """A pod with thousands of containers or env entries is answered in well under the
    webhook's 5 s timeout, in a few KiB however many problems it has. Regression: 10,000
    invalid GPU counts were compared with each other (seconds) and all listed (a megabyte)."""
    doc = pod_review()
    edit(doc["request"]["object"])
    body = json.dumps(doc).encode()
    started = time.perf_counter()
    answers = both(service, body)
    assert time.perf_counter() - started < 2.0
    for response in answers.values():
        assert len(json.dumps(response)) < 8 * 1024
    if denied is None:
        assert answers["validate"]["allowed"] and "patch" in answers["mutate"]
    else:
        assert denied in deny_message(answers["validate"])


WORKFLOW_GIANT = [
    pytest.param(_calls(lambda i: gpu_template(f"t{i}")), id="10,000 GPU steps in one group"),
    pytest.param(_calls(lambda i: gpu_template(f"t{i}", "1.5")), id="10,000 invalid GPU steps"),
    pytest.param(
        lambda o: o["spec"]["templates"][0]["steps"].append(
            [{"name": f"s{i}", "template": f"missing{i}"} for i in range(N)]
        ),
        id="10,000 calls of templates that do not exist",
    ),
    pytest.param(
        lambda o: o["spec"]["templates"][0]["steps"].append(
            [
                {"name": f"s{i}", "templateRef": {"name": f"lib{i}", "template": "t"}}
                for i in range(N)
            ]
        ),
        id="10,000 references to templates costgate cannot read",
    ),
    pytest.param(
        _calls(lambda i: {"name": f"t{i}", "resource": {"action": "create"}}),
        id="10,000 resource templates, one note each",
    ),
    pytest.param(
        lambda o: o["spec"]["templates"][0]["steps"].append(
            [{"name": "many", "template": "train", "withItems": list(range(1_000_000))}]
        ),
        id="a withItems of 1,000,000 items",
    ),
]


@pytest.mark.parametrize("edit", WORKFLOW_GIANT)
def test_giant_workflows_get_a_prompt_brief_answer(edit, services) -> None:
    """Thousands of templates, steps, unresolved references or loop items: answered
    promptly in both modes, with at most 16 warnings and a note of how many more (the API
    server may truncate many anyway), and a denial that lists ten problems and counts the
    rest. Regression: one warning or problem per template, megabytes of answer."""
    doc = workflow_review([steps_template("main", {"name": "a", "template": "train"})])
    doc["request"]["object"]["spec"]["templates"].append(gpu_template("train"))
    edit(doc["request"]["object"])
    body = json.dumps(doc).encode()
    for service in services[:2]:  # enforce and warn
        started = time.perf_counter()
        answers = both(service, body)
        assert time.perf_counter() - started < 5.0  # both endpoints within one timeout
        for response in answers.values():
            assert len(response.get("warnings", ())) <= 17
            assert len(response.get("status", {}).get("message", "")) < 4096


# --- deep nesting --------------------------------------------------------------------------------


@pytest.mark.parametrize("open_,close", [("[", "]"), ('{"a":', "}")], ids=["lists", "objects"])
def test_a_nesting_bomb_is_refused_with_its_uid(open_, close, service) -> None:
    """100,000 levels inside the object: orjson stops at 1,024 and the uid, written first,
    is recovered: a clean 400 answer carrying it, on both endpoints."""
    body = with_raw(
        pod_review(uid="deep-uid"),
        lambda d, v: d["request"]["object"]["metadata"].update(bomb=v),
        deep(100_000, open_=open_, close=close),
    )
    for response in both(service, body).values():
        assert response["uid"] == "deep-uid"
        assert response["status"]["code"] == 400
        assert "is not JSON (depth limit exceeded" in response["status"]["message"]


def test_a_nesting_bomb_without_a_uid_gets_an_http_400(service) -> None:
    body = b'{"apiVersion":"admission.k8s.io/v1","request":{"x":' + deep(100_000) + b"}}"
    for endpoint in ENDPOINTS:
        answer = service.handle(body, endpoint)
        assert answer.status == 400
        check_answer(answer.status, answer.body, body, endpoint)


def _limits(d: dict[str, Any], v: Any) -> None:
    d["request"]["object"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = v


def _owner(d: dict[str, Any], v: Any) -> None:
    d["request"]["object"]["metadata"]["labels"]["owner"] = v


def _runtime(d: dict[str, Any], v: Any) -> None:
    d["request"]["object"]["metadata"]["annotations"]["costgate.io/max-runtime"] = v


def _selector(d: dict[str, Any], v: Any) -> None:
    d["request"]["object"]["spec"]["templates"][0]["nodeSelector"] = {"k": v}


def _chain(levels: int) -> dict[str, Any]:
    templates = [
        steps_template(f"t{i}", {"name": "s", "template": f"t{i + 1}"}) for i in range(levels)
    ]
    return workflow_review([*templates, gpu_template(f"t{levels}")], entrypoint="t0")


def _deep_patch(text: str) -> dict[str, Any]:
    return workflow_review(
        [steps_template("main", {"name": "a", "template": "train"}), gpu_template("train")],
        spec={"podSpecPatch": text},
    )


_PLAIN_WORKFLOW = workflow_review(
    [steps_template("main", {"name": "a", "template": "train"}), gpu_template("train")]
)

# Deeper than Python recurses (about 1,000 frames) yet within what orjson reads (1,024)
JUST_READABLE = 1_000
NESTED = [
    pytest.param(
        with_raw(pod_review(), _limits, deep(JUST_READABLE)),
        "invalid GPU request",
        id="a GPU count nested 1,000 lists deep",
    ),
    pytest.param(
        with_raw(pod_review(), _owner, deep(JUST_READABLE)),
        "is not a valid label value",
        id="an owner label nested 1,000 lists deep",
    ),
    pytest.param(
        with_raw(pod_review(), _runtime, deep(JUST_READABLE)),
        "is not a duration",
        id="a max-runtime nested 1,000 lists deep",
    ),
    pytest.param(
        with_raw(_PLAIN_WORKFLOW, _selector, deep(JUST_READABLE, open_='{"a":', close="}")),
        "nested too deeply",
        id="a steps template nodeSelector nested 1,000 objects deep",
    ),
    pytest.param(
        json.dumps(_deep_patch("[" * 100_000 + "]" * 100_000)).encode(),
        "nested too deeply",
        id="a JSON podSpecPatch nested 100,000 deep",
    ),
    pytest.param(
        json.dumps(_chain(1_000)).encode(),
        "nested too deeply",
        id="a chain of 1,000 templates each calling the next",
    ),
]


@pytest.mark.parametrize(("body", "expected"), NESTED)
def test_nesting_deeper_than_python_recurses_is_a_clear_denial(body, expected, service) -> None:
    """Input the JSON parser reads but Python cannot walk recursively is denied saying what
    is wrong, never answered as an internal error (which would log a traceback). The label
    is a policy denial, which is the validating webhook's alone."""
    answers = both(service, body)
    assert expected in deny_message(answers["validate"])
    if "label" not in expected:
        assert expected in deny_message(answers["mutate"])


def test_a_deep_but_reasonable_chain_of_templates_is_priced(service) -> None:
    """The recursion limit is no policy: steps templates nested 50 deep are read and priced."""
    response = both(service, json.dumps(_chain(50)).encode())["validate"]
    assert response["allowed"] and "estimated cost $" in response["warnings"][0]


def test_a_yaml_alias_bomb_in_a_podspecpatch_is_not_expanded(service) -> None:
    """Nine levels of YAML aliases are 10^9 nodes once expanded (billion laughs): the
    embedded YAML reader refuses anchors, so the patch is unreadable, handled in a
    millisecond rather than hours."""
    lines = ['l0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    lines += [f"l{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    lines.append("nodeSelector: {k: *a8}")
    merges = "top: {<<: [" + "&m0 {k: 1}, *m0" + "]}"
    for patch in ("\n".join(lines), merges):
        started = time.perf_counter()
        answers = both(service, json.dumps(_deep_patch(patch)).encode())
        assert time.perf_counter() - started < 1.0
        assert any("cannot be read at admission" in w for w in answers["validate"]["warnings"])


def test_a_megabyte_of_yaml_podspecpatch_is_not_parsed_on_the_admission_path(service) -> None:
    """YAML parses at seconds a megabyte; past a budget per object the patch is unreadable
    (denied when it may set GPUs) instead of holding up every other review."""
    patch = "containers: [" + "{name: x, resources: {}}, " * 40_000 + "]"
    started = time.perf_counter()
    answers = both(service, json.dumps(_deep_patch(patch)).encode())
    assert time.perf_counter() - started < 1.0
    assert "cannot be read at admission" in deny_message(answers["validate"])


# --- huge numbers --------------------------------------------------------------------------------


def _gpu_count(value: Any) -> bytes:
    return json.dumps(pod_review(gpus=value)).encode()


HUGE = [
    pytest.param(_gpu_count("99999999999999999999999"), "asks for 99999999999999999999999 GPUs"),
    pytest.param(_gpu_count(2**64), "more than the 64 a single pod may use"),
    pytest.param(_gpu_count(10**30), "more than the 64 a single pod may use"),
    pytest.param(_gpu_count(1e308), "more than the 64 a single pod may use"),
    pytest.param(_gpu_count("1e999"), 'asks for nvidia.com/gpu "1e999"'),
    pytest.param(_gpu_count("9" * 5000), "GPU counts must be whole numbers"),
    pytest.param(_gpu_count("NaN"), "GPU counts must be whole numbers"),
    pytest.param(_gpu_count("Infinity"), "GPU counts must be whole numbers"),
    pytest.param(_gpu_count("0x10"), "GPU counts must be whole numbers"),
    pytest.param(_gpu_count("８"), "GPU counts must be whole numbers"),
    pytest.param(_gpu_count(0.5), "GPU counts must be whole numbers"),
    pytest.param(_gpu_count(True), "GPU counts must be whole numbers"),
    pytest.param(
        json.dumps(pod_review(annotations={"costgate.io/max-runtime": "1e999h"})).encode(),
        "is not a duration",
    ),
    pytest.param(
        json.dumps(pod_review(annotations={"costgate.io/max-runtime": "9" * 40 + "s"})).encode(),
        "is not a duration",
    ),
    pytest.param(
        json.dumps(pod_review(spec={"activeDeadlineSeconds": 2**63 - 1})).encode(),
        "must be a whole number from 0 to 2147483647",
    ),
    pytest.param(
        json.dumps(pod_review(spec={"activeDeadlineSeconds": 1e308})).encode(),
        "field spec.activeDeadlineSeconds must be an integer, not a number",
    ),
    pytest.param(
        json.dumps(pod_review(spec={"activeDeadlineSeconds": -(2**63)})).encode(),
        "must be a whole number from 0 to 2147483647",
    ),
]
WORKFLOW_HUGE = [
    ("withSequence count", {"withSequence": {"count": "9" * 400}}),
    ("withSequence end", {"withSequence": {"start": "0", "end": "9" * 5000}}),
]


@pytest.mark.parametrize(("body", "expected"), HUGE)
def test_huge_numbers_are_clear_denials(body, expected, service) -> None:
    """Counts beyond 64 bits, floats at the edge of the double range, numbers spelled in
    ways Kubernetes does not read: a denial that names the value, never an overflow."""
    for response in both(service, body).values():
        assert expected in deny_message(response)


def test_negative_zero_gpus_is_no_gpu(service) -> None:
    answers = both(service, _gpu_count("-0"))
    assert answers["validate"]["allowed"] and "warnings" not in answers["validate"]


@pytest.mark.parametrize("step", [s for _, s in WORKFLOW_HUGE], ids=[i for i, _ in WORKFLOW_HUGE])
def test_huge_workflow_counts_are_unbounded_not_an_overflow(step, service) -> None:
    """Argo reads these counts into 64-bit integers; a count beyond that is no count it
    could run, so the loop is as unbounded as a withParam: denied, with the way through."""
    doc = workflow_review(
        [steps_template("main", {"name": "a", "template": "train", **step}), gpu_template("train")]
    )
    for response in both(service, json.dumps(doc).encode()).values():
        message = deny_message(response)
        assert 'GPU workflow "wf" has no bound on its cost' in message
        assert "set spec.parallelism, annotation costgate.io/max-fanout" in message  # the way


def test_a_max_fanout_beyond_64_bits_is_not_a_whole_number(service) -> None:
    """A declared fan-out Argo could not read is refused as the annotation it is, naming the
    value and what to declare instead."""
    doc = workflow_review(
        [
            steps_template("main", {"name": "a", "template": "train", "withParam": "{{x}}"}),
            gpu_template("train"),
        ],
        annotations={"costgate.io/max-fanout": "9" * 30},
    )
    for response in both(service, json.dumps(doc).encode()).values():
        assert deny_message(response).startswith(
            f'annotation costgate.io/max-fanout="{"9" * 30}" is not a whole number; '
            "declare the most items a withParam loop can have"
        )


def test_nested_loops_of_huge_counts_overflow_to_unbounded(service) -> None:
    """Twenty nested loops of 10^18 items each are 10^360 runs, beyond any float: priced as
    unbounded (denied), not an OverflowError from an int no float can hold."""
    loop = {"withSequence": {"count": str(10**18)}}
    templates = [
        steps_template(f"t{i}", {"name": "s", "template": f"t{i + 1}", **loop}) for i in range(20)
    ]
    for limit in ("5", "9" * 5000):
        train = gpu_template("t20", retryStrategy={"limit": limit}, activeDeadlineSeconds="9" * 19)
        doc = workflow_review([*templates, train], entrypoint="t0", spec={"parallelism": "9" * 30})
        for response in both(service, json.dumps(doc).encode()).values():
            assert "no bound on its cost" in deny_message(response)
    # a parallelism of 2^63 - 1 bounds them, at a price nobody is allowed
    doc = workflow_review([*templates, gpu_template("t20")], entrypoint="t0")
    doc["request"]["object"]["spec"]["parallelism"] = 2**63 - 1
    assert "exceeds the $100.00 limit" in deny_message(
        both(service, json.dumps(doc).encode())["validate"]
    )


# --- unicode and injected newlines ---------------------------------------------------------------

UNICODE = {
    "right-to-left override": "alice\u202eecila",
    "zero-width space": "ali\u200bce",
    "emoji": "alice🚀",
    "combining accents": "ali\u0301ce",
    "NUL": "alice\x00",
    "newline": "alice\nWarning: costgate: approved by the platform team",
    "carriage return": "alice\r\x1b[2K",
    "line separator": "alice\u2028bob",
    "byte order mark": "\ufeffalice",
}


@pytest.mark.parametrize("value", list(UNICODE.values()), ids=list(UNICODE))
def test_unicode_in_labels_is_escaped_in_the_denial(value, service, warn_service) -> None:
    """A label value a user types cannot break, reverse or fake the line kubectl prints:
    enforce mode denies it on one printable line, warn mode warns on one."""
    body = json.dumps(pod_review(labels={"owner": value, "experiment": "exp-1"})).encode()
    message = deny_message(both(service, body)["validate"])
    assert message.startswith("label owner=") and "is not a valid label value" in message
    warned = both(warn_service, body)["validate"]
    assert warned["allowed"]
    assert any("is not a valid label value" in w for w in warned["warnings"])


@pytest.mark.parametrize("value", list(UNICODE.values()), ids=list(UNICODE))
def test_unicode_in_names_and_annotations_stays_on_one_line(value, services) -> None:
    """The same values as object name, namespace, GPU type and runtime annotations, and as
    label and annotation keys: every answer keeps its one-line, printable messages."""
    docs = [
        pod_review(name=value, labels={}),
        pod_review(annotations={"costgate.io/gpu-type": value}),
        pod_review(annotations={"costgate.io/max-runtime": value}),
        pod_review(labels={**LABELS, value: value}, annotations={value: value}),
    ]
    namespaced = pod_review()
    namespaced["request"]["namespace"] = value
    docs.append(namespaced)
    for doc in docs:
        body = json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")
        for service in services:
            both(service, body)


def test_a_lone_surrogate_is_refused_with_the_uid(service) -> None:
    """JSON may escape a lone UTF-16 surrogate (\\ud800), which is no character: orjson
    refuses the body and the uid is recovered."""
    body = json.dumps(pod_review(labels={"owner": "\ud800", "experiment": "x"}, uid="u-sur"))
    for response in both(service, body.encode()).values():
        assert response["uid"] == "u-sur" and response["status"]["code"] == 400


INJECTED = "x\nWarning: costgate: approved by the platform team"


def _named_workflows() -> list[Any]:
    """Workflows whose user-chosen names reach messages outside `quote`: the template
    name in the estimate breakdown, a hook name and an inline step name in paths."""
    renamed = workflow_review(  # 8 GPUs for a day: denied, with the breakdown
        [steps_template("main", {"name": "a", "template": INJECTED}), gpu_template(INJECTED, "8")],
        annotations={"costgate.io/max-runtime": "24h"},
    )
    short = workflow_review(  # so short that the breakdown fits in the estimate warning
        [steps_template("main", {"name": "a", "template": "x\n"}), gpu_template("x\n")]
    )
    hooked = workflow_review(
        [steps_template("main", {"name": "a", "template": "train"}), gpu_template("train")],
        spec={"hooks": {INJECTED: {"templateRef": {"name": "lib", "template": "t"}}}},
    )
    inline = workflow_review(
        [
            steps_template(
                "main",
                {
                    "name": INJECTED,
                    "inline": {"container": _gpu_container("main"), "podSpecPatch": "{{x}}"},
                },
            )
        ]
    )
    return [
        pytest.param(renamed, id="a template named with a newline"),
        pytest.param(short, id="a short template name ending in a newline"),
        pytest.param(hooked, id="a hook named with a newline"),
        pytest.param(inline, id="an inline step named with a newline"),
    ]


@pytest.mark.parametrize("doc", _named_workflows())
def test_names_cannot_inject_lines_into_warnings_or_denials(doc, services) -> None:
    """Regression: these names were written into warnings and denials as they were, so a
    user could add a fake `Warning: costgate: ...` line to kubectl's output."""
    body = json.dumps(doc).encode()
    seen = []
    for service in services:
        for response in both(service, body).values():
            seen += response.get("warnings", [])
            seen.append(response.get("status", {}).get("message", ""))
    assert any("x\\u000a" in text for text in seen)
    assert not any(c in text for text in seen for c in "\n\r")


# --- JSON Pointer escapes in patch paths ---------------------------------------------------------

ODD_KEYS = {
    "costgate.io/x~1y": "tilde-one",
    "costgate.io/a/b": "slash",
    "costgate.io/~": "tilde",
    "costgate.io/~0/~1": "both",
    "costgate.io/": "empty",
}


@pytest.mark.parametrize("existing", [True, False], ids=["into podMetadata", "new podMetadata"])
def test_annotation_keys_with_slash_and_tilde_are_copied_to_the_right_keys(
    existing, service
) -> None:
    """costgate.io/ annotations are copied into the pods a Workflow makes, one `add` per key
    when podMetadata.annotations exists: `/` and `~` in a key are escaped (RFC 6901, `~1`
    and `~0`), so each value lands on its own key, not on a path one level down."""
    spec = {"podMetadata": {"annotations": {"keep": "me"}}} if existing else {}
    doc = workflow_review(
        [steps_template("main", {"name": "a", "template": "train"}), gpu_template("train")],
        annotations=ODD_KEYS,
        spec=spec,
    )
    obj = doc["request"]["object"]
    response = both(service, json.dumps(doc).encode())["mutate"]
    ops = patch_ops(response)
    if existing:
        paths = {op["path"] for op in ops}
        assert "/spec/podMetadata/annotations/costgate.io~1x~01y" in paths
        assert "/spec/podMetadata/annotations/costgate.io~1~00~1~01" in paths
    result = patched(obj, response)
    copied = result["spec"]["podMetadata"]["annotations"]
    assert {k: copied[k] for k in ODD_KEYS} == ODD_KEYS
    assert set(copied) - set(ODD_KEYS) <= {
        "keep",
        "costgate.io/max-runtime",
        "costgate.io/gpu-type",
    }
    assert set(result["metadata"]["annotations"]) == {
        *obj["metadata"]["annotations"],
        "costgate.io/estimated-cost",
    }


def test_label_keys_with_a_slash_are_escaped_in_the_patch(table) -> None:
    """Required labels with a prefix (example.com/owner) are copied into a Job's pod
    template with the `/` escaped."""
    policy = policy_with(required_labels=["example.com/owner", "example.com/experiment"])
    service = AdmissionService(Config(table=table, policy=policy))
    job = copy.deepcopy(capture("validate-job-create-gpu"))
    obj = job["request"]["object"]
    obj["metadata"]["labels"] = {"example.com/owner": "alice", "example.com/experiment": "e1"}
    obj["metadata"]["annotations"] = {"costgate.io/max-runtime": "1h"}
    obj["spec"].pop("activeDeadlineSeconds", None)
    obj["spec"]["template"]["spec"]["nodeSelector"] = {"nvidia.com/gpu.product": "Tesla-T4"}
    response = both(service, json.dumps(job).encode())["mutate"]
    paths = {op["path"] for op in patch_ops(response)}
    assert "/spec/template/metadata/labels/example.com~1owner" in paths
    labels = patched(obj, response)["spec"]["template"]["metadata"]["labels"]
    assert labels["example.com/owner"] == "alice" and labels["example.com/experiment"] == "e1"


def test_the_stamp_is_added_to_an_object_without_metadata(service) -> None:
    """Regression: a CronJob attributed through its jobTemplate's labels and sent with no
    metadata got `add /metadata/annotations`, which does not apply to an object without
    /metadata (the API server answers InternalError)."""
    doc = copy.deepcopy(next(s for s in SEEDS if s["request"]["uid"] == "seed-cronjob"))
    del doc["request"]["object"]["metadata"]
    job = doc["request"]["object"]["spec"]["jobTemplate"]
    job["metadata"]["annotations"] = {"costgate.io/gpu-type": "t4"}  # cheap: allowed
    job["spec"]["template"]["spec"]["nodeSelector"] = {"nvidia.com/gpu.product": "Tesla-T4"}
    response = both(service, json.dumps(doc).encode())["mutate"]
    result = patched(doc["request"]["object"], response)
    assert "costgate.io/estimated-cost" in result["metadata"]["annotations"]


# --- bodies that are no review -------------------------------------------------------------------

_GPU = pod_review(uid="body-uid")


def _raw_review(request: bytes) -> bytes:
    return (
        b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":' + request + b"}"
    )


BODIES = [
    pytest.param(b"", None, id="an empty body"),
    pytest.param(b"\xff\xfe\x00garbage", None, id="bytes that are not UTF-8"),
    pytest.param(
        json.dumps(_GPU).encode().replace(b'"alice"', b'"\xff\xc3("', 1),
        "body-uid",
        id="bytes that are not UTF-8 inside a review, which keeps its uid",
    ),
    pytest.param(b"[]", None, id="a JSON array"),
    pytest.param(b'[{"request":{"uid":"in-a-list"}}]', None, id="a review inside an array"),
    pytest.param(b'"AdmissionReview"', None, id="a JSON string"),
    pytest.param(b"42", None, id="a JSON number"),
    pytest.param(b"1e999", None, id="a JSON number beyond a double"),
    pytest.param(b"null", None, id="JSON null"),
    pytest.param(_raw_review(b"null"), None, id="request null"),
    pytest.param(
        _raw_review(b'{"uid":42,"operation":"CREATE"}'), None, id="a uid that is a number"
    ),
    pytest.param(_raw_review(b'{"uid":"","operation":"CREATE"}'), None, id="an empty uid"),
    pytest.param(_raw_review(b'{"uid":["u"],"operation":"CREATE"}'), None, id="a uid in a list"),
    pytest.param(_raw_review(b'{"uid":"u-only"}'), "u-only", id="a request with only a uid"),
    pytest.param(
        json.dumps(_GPU).encode()[:-40], "body-uid", id="a review cut short, which keeps its uid"
    ),
    pytest.param(
        _raw_review(b'{"uid":"first","uid":"second","operation":"CREATE"}'),
        "second",
        id="a duplicated uid: the last wins, as the API server's decoder reads it",
    ),
]


@pytest.mark.parametrize(("body", "uid"), BODIES)
def test_bodies_that_are_no_review_get_an_answer(body, uid, service) -> None:
    """With a uid to echo: a 400 AdmissionReview answer carrying it. Without one: an HTTP
    400 with a JSON error, since an answer the API server cannot match is no answer."""
    for endpoint in ENDPOINTS:
        answer = service.handle(body, endpoint)
        response = check_answer(answer.status, answer.body, body, endpoint)
        if uid is None:
            assert response is None and answer.status == 400
        else:
            assert response is not None and response["uid"] == uid
            assert response["status"]["code"] == 400


def test_duplicated_keys_in_the_object_are_read_as_the_api_server_reads_them(service) -> None:
    """Go's decoder keeps the last of duplicated keys, and so does orjson: a GPU limit of
    "0" followed by "8" is priced as the 8 GPUs the pod would get, not hidden."""
    body = json.dumps(pod_review(gpus="@@GPUS@@")).encode()
    body = body.replace(
        b'"nvidia.com/gpu": "@@GPUS@@"', b'"nvidia.com/gpu":"0","nvidia.com/gpu":"8"'
    )
    response = both(service, body)["validate"]
    assert response["allowed"] and "8 × a100-80gb" in response["warnings"][0]


# --- through the ASGI app ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app() -> Any:
    """The application `costgate serve` runs, on its defaults (3 MiB body limit)."""
    return create_app(Settings())


def post(
    app: Any, body: bytes | AsyncIterator[bytes], *, path: str = "/validate", headers: Any = None
) -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://costgate") as client:
            return await client.post(path, content=body, headers=headers)

    return asyncio.run(send())


@settings(FUZZ, max_examples=int(_SEARCH or 300) // 6)
@given(data=st.data())
def test_mutated_reviews_through_the_app_get_a_well_formed_answer(data, app) -> None:
    """The fuzz above, fewer examples, over HTTP: the same answers, never a 500 page."""
    body = encode(mutate(data.draw(seeds, label="seed"), data), data)
    for endpoint in ENDPOINTS:
        response = post(app, body, path=f"/{endpoint}")
        assert response.headers["content-type"] == "application/json"
        check_answer(response.status_code, response.content, body, endpoint)


@pytest.mark.parametrize(("body", "uid"), BODIES)
def test_bodies_that_are_no_review_get_an_answer_over_http(body, uid, app) -> None:
    for endpoint in ENDPOINTS:
        response = post(app, body, path=f"/{endpoint}")
        check_answer(response.status_code, response.content, body, endpoint)
        assert response.status_code == (400 if uid is None else 200)


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "application/yaml", "\x00;;"],
)
def test_the_content_type_is_not_trusted_either_way(content_type, app) -> None:
    """The API server always sends application/json; whatever the header says, the body is
    read for what it is and answered the same."""
    body = json.dumps(pod_review(uid="ct-uid")).encode()
    headers = {} if content_type is None else {"content-type": content_type}
    expected = post(app, body).json()
    for endpoint in ENDPOINTS:
        response = post(app, body, path=f"/{endpoint}", headers=headers)
        check_answer(response.status_code, response.content, body, endpoint)
        if endpoint == "validate":
            assert response.json() == expected


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    """The body in 64 KiB chunks, without Content-Length (Transfer-Encoding: chunked)."""
    for start in range(0, len(body), 65536):
        yield body[start : start + 65536]


def _oversized(uid: str | None) -> bytes:
    doc = pod_review(uid=uid or "")
    doc["request"]["object"]["metadata"]["annotations"]["example.com/pad"] = "x" * (3 * MIB)
    body = json.dumps(doc).encode()
    return body if uid else body.replace(b'"uid": ""', b'"uid": 0')


@pytest.mark.parametrize("chunked", [False, True], ids=["with Content-Length", "chunked"])
def test_a_body_over_the_limit_is_refused_with_its_uid(chunked, app) -> None:
    """Over COSTGATE_MAX_BODY_BYTES (3 MiB): the uid in the prefix is echoed in a 413
    answer; with no uid, an HTTP 413 with a JSON error. The rest is never read whole."""
    assert Settings().max_body_bytes == 3 * MIB
    for uid in ("big-uid", None):
        body = _oversized(uid)
        for endpoint in ENDPOINTS:
            response = post(app, _chunks(body) if chunked else body, path=f"/{endpoint}")
            answer = check_answer(
                response.status_code, response.content, body, endpoint, oversized=True
            )
            if uid is None:
                assert response.status_code == 413
            else:
                assert answer["uid"] == uid and answer["status"]["code"] == 413


def test_the_admission_endpoints_take_only_post(app) -> None:
    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://costgate") as client:
            return await client.get("/validate")

    response = asyncio.run(get())
    assert response.status_code == 405 and response.headers["allow"] == "POST"


# --- atheris -------------------------------------------------------------------------------------

HARNESS = Path(__file__).parent / "fuzz" / "fuzz_review.py"


def test_the_atheris_harness_runs_clean(tmp_path: Path) -> None:
    """Coverage-guided fuzzing of raw bytes (tests/fuzz/fuzz_review.py, which says how to run
    it longer), seeded with the captured reviews, for a bounded number of inputs and a fixed
    seed: it exits cleanly. A failing input exits non-zero and is saved as crash-*."""
    require_module("atheris", hint="atheris installs from Linux wheels only")
    seeds, corpus = tmp_path / "seeds", tmp_path / "corpus"
    seeds.mkdir()
    corpus.mkdir()
    for path in ADMISSION.glob("*.json"):
        shutil.copy(path, seeds)
    command = [
        sys.executable,
        str(HARNESS),
        "-runs=25000",
        "-max_total_time=25",
        "-seed=1",
        f"-dict={HARNESS.with_name('review.dict')}",
        str(corpus),
        str(seeds),
    ]
    result = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Done " in result.stderr
    assert not list(tmp_path.glob("crash-*"))
