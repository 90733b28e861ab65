"""Bypass: GPUs through Dynamic Resource Allocation (issue #13, item 2).

A pod with `spec.resourceClaims` naming a ResourceClaimTemplate that asks for 8 devices of
DeviceClass `gpu.nvidia.com` (`resource.k8s.io/v1`, GA since Kubernetes 1.34) asks for no
GPU resource at all: the count is in the template. The shipped filter did not send it, and
costgate would have found no GPU in it ($0, no labels, no deadline). Now the filter sends
every pod with resource claims, the pods are priced with the devices of their claims (read
from the watch cache, or from the files given to `costgate estimate`), the pricing table's
`device_classes` give the devices' GPU type, and the claims and templates are checked when
they are created.

From the captured reviews in tests/fixtures/admission-kinds (a real kube-apiserver v1.36),
through the real `AdmissionService.handle`, the CLI, the shipped CEL (cel-python) and the
watch cache against the fake API server with the real `kubernetes` client.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import cel
from tests.support.answers import patched, response_of
from tests.support.config import policy_with, pricing_data
from tests.support.fakeapi import FakeApiServer
from tests.support.paths import FIXTURES, REPO
from tests.support.polling import eventually
from webhook.cli import main
from webhook.core.config import Config
from webhook.core.gpu_names import cel_claims_test
from webhook.estimate import claim_lookup
from webhook.service import AdmissionService, Endpoint
from webhook.state.cluster import cluster_state
from webhook.tables import TableError, load_config, parse_pricing

KINDS = FIXTURES / "admission-kinds"
POD = "validate-pod-create-dra-template"  # Pod dra-train: claim "gpus" -> template eight-gpus
SHARED_POD = "validate-pod-create-dra-claim"  # Pod dra-shared-claim -> ResourceClaim (2 GPUs)
TEMPLATE = "validate-resourceclaimtemplate-create"  # eight-gpus: ExactCount 8 of gpu.nvidia.com
CLAIM = "validate-resourceclaim-create"  # shared-two-gpus: ExactCount 2 of gpu.nvidia.com
BY_CONTROLLER = "validate-resourceclaim-create-by-resource-claim-controller"
WEBHOOKS = REPO / "manifests" / "base" / "webhooks.yaml"
DEAREST = ("gb200", 27.04)  # the dearest GPU nvidia.com/gpu (so gpu.nvidia.com) can be, $/h
H100_USD = 6.88
# 8 devices × $27.04/h × the default 12h: what the captured pod and template cost
EIGHT_DEAREST = 2595.84


def capture(name: str) -> dict[str, Any]:
    return json.loads((KINDS / f"{name}.json").read_text())


def obj(name: str) -> dict[str, Any]:
    """The object of a captured review, as a manifest would hold it."""
    return copy.deepcopy(capture(name)["request"]["object"])


def service(*known: dict[str, Any], table: Any = None, **policy: Any) -> AdmissionService:
    """The service as `costgate serve` builds it, whose claim lookup knows `known`."""
    config = load_config()
    if policy:
        config = dataclasses.replace(config, policy=policy_with(**policy))
    if table is not None:
        config = dataclasses.replace(config, table=table)
    return AdmissionService(dataclasses.replace(config, claims=claim_lookup(known, "default")))


def ask(svc: AdmissionService, doc: dict[str, Any], endpoint: Endpoint = "validate") -> dict:
    return response_of(svc.handle(json.dumps(doc).encode(), endpoint), doc["request"]["uid"])


def with_object(name: str, edit: Any) -> dict[str, Any]:
    doc = copy.deepcopy(capture(name))
    edit(doc["request"]["object"])
    return doc


def estimate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], *objects: dict[str, Any], **flags: Path
) -> list[dict[str, Any]]:
    """`costgate estimate -o json` of the objects, each in its own file (-f a -f b)."""
    args = ["estimate", "-o", "json"]
    for i, item in enumerate(objects):
        path = tmp_path / f"{i}.yaml"
        path.write_text(yaml.safe_dump(item))
        args += ["-f", str(path)]
    for flag, path in flags.items():
        args += [f"--{flag}", str(path)]
    capsys.readouterr()
    main(args)
    return json.loads(capsys.readouterr().out)


def codes(response: dict[str, Any]) -> set[str]:
    return set(response["auditAnnotations"].get("reasons", "").split(",")) - {""}


def table_with(**device_classes: Any) -> Any:
    data = pricing_data()
    data.setdefault("device_classes", {}).update(device_classes)
    return parse_pricing(data, "pricing.yaml")


def template(request: dict[str, Any], name: str = "eight-gpus") -> dict[str, Any]:
    """A ResourceClaimTemplate in namespace capture with one device request."""
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": name, "namespace": "capture"},
        "spec": {"spec": {"devices": {"requests": [{"name": "gpus", **request}]}}},
    }


def review_of(item: dict[str, Any], resource: str) -> dict[str, Any]:
    """The captured template's review, carrying another claim template or claim."""
    doc = copy.deepcopy(capture(TEMPLATE))
    doc["request"]["object"] = item
    doc["request"]["kind"]["kind"] = item["kind"]
    doc["request"]["resource"]["resource"] = resource
    doc["request"]["name"] = item["metadata"]["name"]
    return doc


# --- the captured pod and its template ----------------------------------------------------


def test_the_captured_dra_pod_is_priced_with_the_eight_gpus_of_its_template(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The pod has no GPU quantity; its template asks for 8 devices of gpu.nvidia.com, any
    NVIDIA GPU: 8 × the dearest for the default 12h, over the threshold. The server and
    `costgate estimate -f template -f pod` agree, and /mutate sets the deadline."""
    svc = service(obj(TEMPLATE))
    response = ask(svc, capture(POD))
    assert response["allowed"] is False
    assert codes(response) == {"over-threshold"}
    assert response["auditAnnotations"]["estimated-cost-usd"] == f"{EIGHT_DEAREST:.2f}"
    assert "8 × gb200 at $27.04/h × 12h" in response["status"]["message"]
    # under a higher threshold it is admitted: /mutate sets the deadline and the stamp
    roomy = service(obj(TEMPLATE), threshold_usd=10_000)
    assert ask(roomy, capture(POD))["allowed"] is True
    mutate = capture(POD.replace("validate", "mutate"))
    stored = patched(mutate["request"]["object"], ask(roomy, mutate, "mutate"))
    assert stored["spec"]["activeDeadlineSeconds"] == 12 * 3600
    assert stored["metadata"]["annotations"]["costgate.io/estimated-cost"] == f"{EIGHT_DEAREST}"

    (row_template, row_pod) = estimate(tmp_path, capsys, obj(TEMPLATE), obj(POD))
    assert (row_pod["gpus"], row_pod["cost_usd"], row_pod["allowed"]) == (8, EIGHT_DEAREST, False)
    assert [r["code"] for r in row_pod["reasons"]] == ["over-threshold"]
    assert row_template["allowed"] is True
    assert "asks for 8 × gb200" in row_template["warnings"][0]


def test_a_pod_whose_claim_costgate_cannot_read_is_denied_or_warned_as_policy_says(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The count is only in the template: without it the pod cannot be priced at all (the
    dearest GPU × how many?). Like a WorkflowTemplate costgate cannot read, it is
    `template-not-found`, denied by default, warned under `unresolved_templates: warn`."""
    response = ask(service(), capture(POD))
    assert response["allowed"] is False
    assert codes(response) == {"template-not-found"}
    assert 'ResourceClaimTemplate "eight-gpus"' in response["status"]["message"]
    (row,) = estimate(tmp_path, capsys, obj(POD))
    assert [r["code"] for r in row["reasons"]] == ["template-not-found"]
    assert row["reasons"][0]["message"] == response["status"]["message"]

    warned = ask(service(unresolved_templates="warn"), capture(POD))
    assert warned["allowed"] is True
    assert any("eight-gpus" in w for w in warned["warnings"])


def test_a_shared_resource_claim_is_priced_in_the_pod_that_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pod naming a ResourceClaim (2 × gpu.nvidia.com) gets its devices: priced with them,
    each pod that names it (the claim's devices are held while any of them runs)."""
    response = ask(service(obj(CLAIM)), capture(SHARED_POD))
    assert response["allowed"] is False and codes(response) == {"over-threshold"}
    assert "2 × gb200" in response["status"]["message"]
    (_, row) = estimate(tmp_path, capsys, obj(CLAIM), obj(SHARED_POD))
    assert (row["gpus"], row["cost_usd"]) == (2, round(2 * 27.04 * 12, 2))


# --- the pricing table's device_classes ----------------------------------------------------


def test_a_device_class_or_a_selector_the_table_lists_pins_the_gpu_type() -> None:
    """`type:` pins a class to one GPU; a CEL selector the table lists narrows a class to
    its GPU (whitespace and quote style aside); a node selector narrows a `like:` class."""
    h100 = table_with(**{"h100.example.com": {"type": "h100-80gb"}})
    pinned = template(
        {"exactly": {"deviceClassName": "h100.example.com", "count": 8}}, name="eight-gpus"
    )
    response = ask(service(pinned, table=h100), capture(POD))
    assert "8 × h100-80gb at $6.88/h × 12h" in response["status"]["message"]
    assert not any("not pinned" in w for w in response.get("warnings", ()))

    product = 'device.attributes["gpu.nvidia.com"].productName == "NVIDIA H100 80GB HBM3"'
    selecting = table_with(
        **{
            "gpu.nvidia.com": {
                "like": "nvidia.com/gpu",
                "selectors": [{"cel": product, "type": "h100-80gb"}],
            }
        }
    )
    written = "device.attributes['gpu.nvidia.com'].productName  ==  'NVIDIA H100 80GB HBM3'"
    narrowed = template(
        {
            "exactly": {
                "deviceClassName": "gpu.nvidia.com",
                "count": 8,
                "selectors": [{"cel": {"expression": written}}],
            }
        }
    )
    response = ask(service(narrowed, table=selecting), capture(POD))
    assert "8 × h100-80gb at $6.88/h" in response["status"]["message"]

    def pin_h100(pod: dict[str, Any]) -> None:
        pod["spec"]["nodeSelector"] = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}

    response = ask(service(obj(TEMPLATE)), with_object(POD, pin_h100))
    assert "8 × h100-80gb at $6.88/h" in response["status"]["message"]


@pytest.mark.parametrize("unknown_gpu", ["most-expensive", "deny"])
def test_a_device_class_the_table_does_not_list_follows_unknown_gpu(
    unknown_gpu: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A DeviceClass not in `device_classes` is never $0: priced as the dearest GPU with a
    warning, or denied (`unknown-gpu-type`), as the namespace's unknown_gpu says; the message
    names the class and where to add it. The template itself is answered the same way."""
    request = {"exactly": {"deviceClassName": "tpu.example.com", "count": 4}}
    unknown = template(request)
    svc = service(unknown, unknown_gpu=unknown_gpu)
    response = ask(svc, capture(POD))
    admitted_template = ask(svc, review_of(unknown, "resourceclaimtemplates"))
    policy = tmp_path / "policy.yaml"
    data = yaml.safe_load((REPO / "webhook" / "defaults" / "policy.yaml").read_text())
    policy.write_text(yaml.safe_dump({**data, "unknown_gpu": unknown_gpu}))
    (row_template, row) = estimate(tmp_path, capsys, unknown, obj(POD), policy=policy)
    if unknown_gpu == "deny":
        assert codes(response) == {"unknown-gpu-type"}
        message = response["status"]["message"]
        assert 'DeviceClass "tpu.example.com"' in message and "device_classes" in message
        assert admitted_template["allowed"] is False
        assert codes(admitted_template) == {"unknown-gpu-type"}
        assert [r["code"] for r in row["reasons"]] == ["unknown-gpu-type"]
        assert row_template["allowed"] is False
    else:
        assert codes(response) == {"over-threshold"}
        assert "4 × gb200 at $27.04/h" in response["status"]["message"]
        assert any(
            '"tpu.example.com" is not in the pricing table' in w for w in response["warnings"]
        )
        assert admitted_template["allowed"] is True
        assert row["cost_usd"] == float(response["auditAnnotations"]["estimated-cost-usd"])
        assert row_template["allowed"] is True


def test_all_devices_of_a_class_are_bounded_by_its_max_devices_or_denied() -> None:
    """`allocationMode: All` asks for every device the class matches on a node: priced at
    the class's max_devices (16 for gpu.nvidia.com in the bundled table); a class that
    declares none is unbounded, and the template and its pods are refused."""
    everything = template(
        {"exactly": {"deviceClassName": "gpu.nvidia.com", "allocationMode": "All"}}
    )
    response = ask(service(everything), capture(POD))
    assert "16 × gb200" in response["status"]["message"]

    unbounded_table = table_with(**{"h100.example.com": {"type": "h100-80gb"}})
    unbounded = template(
        {"exactly": {"deviceClassName": "h100.example.com", "allocationMode": "All"}}
    )
    svc = service(unbounded, table=unbounded_table)
    for answer in (
        ask(svc, capture(POD)),
        ask(svc, review_of(unbounded, "resourceclaimtemplates")),
        ask(svc, review_of(unbounded, "resourceclaimtemplates"), "mutate"),
    ):
        assert answer["allowed"] is False
        assert "allocationMode: All" in answer["status"]["message"]
        assert "device_classes.h100.example.com.max_devices" in answer["status"]["message"]


def test_first_available_prices_the_dearest_alternative() -> None:
    """The scheduler takes the first subrequest that fits, so any may be the one: 8 H100s
    or 2 unpinned NVIDIA GPUs is priced as 8 H100s (the dearer), not the first or the fewer."""
    table = table_with(**{"h100.example.com": {"type": "h100-80gb"}})
    alternatives = template(
        {
            "firstAvailable": [
                {"name": "two", "deviceClassName": "gpu.nvidia.com", "count": 2},
                {"name": "eight", "deviceClassName": "h100.example.com", "count": 8},
            ]
        }
    )
    response = ask(service(alternatives, table=table), capture(POD))
    assert "8 × h100-80gb" in response["status"]["message"]


def test_a_pricing_table_with_a_bad_device_class_is_refused() -> None:
    data = pricing_data()
    data["device_classes"] = {"x.example.com": {"type": "no-such-gpu"}}
    with pytest.raises(TableError, match=r"device_classes\.x\.example\.com\.type: unknown GPU"):
        parse_pricing(data, "pricing.yaml")
    data["device_classes"] = {"x.example.com": {"type": "t4", "like": "nvidia.com/gpu"}}
    with pytest.raises(TableError, match="not both"):
        parse_pricing(data, "pricing.yaml")


# --- claims and templates at admission -------------------------------------------------------


def test_claims_and_templates_are_checked_and_said_not_gated() -> None:
    """The captured template and claim carry only an owner label: they are not workloads
    (their pods are), so they are allowed, with what they ask for in a warning; devices
    that are not GPUs (a class the table lists with priced: false) pass untouched."""
    svc = service()
    for name in (TEMPLATE, CLAIM, BY_CONTROLLER):
        response = ask(svc, capture(name))
        assert response["allowed"] is True, name
        assert any("the pods that use it are priced with it" in w for w in response["warnings"])
    channel = template(
        {"exactly": {"deviceClassName": "compute-domain-default-channel.nvidia.com"}}
    )
    response = ask(svc, review_of(channel, "resourceclaimtemplates"))
    assert response["allowed"] is True and "warnings" not in response


def test_a_job_pays_for_one_claim_per_pod() -> None:
    """A Job's pod template naming a claim template: each pod gets its own claim, so
    parallelism × the template's devices."""
    from tests.support.builders import review as build_review

    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "train",
            "namespace": "capture",
            "labels": {"owner": "alice", "experiment": "dra"},
            "annotations": {"costgate.io/max-runtime": "1h"},
        },
        "spec": {
            "parallelism": 2,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "resourceClaims": [{"name": "gpus", "resourceClaimTemplateName": "eight-gpus"}],
                    "containers": [
                        {"name": "m", "image": "x", "resources": {"claims": [{"name": "gpus"}]}}
                    ],
                }
            },
        },
    }
    result = service(obj(TEMPLATE)).handle(build_review(job), "validate")
    response = json.loads(result.body)["response"]
    assert response["auditAnnotations"]["estimated-cost-usd"] == f"{2 * 8 * 27.04:.2f}"


# --- the API server's filter -------------------------------------------------------------------


def _requests_gpus() -> dict[str, str]:
    found = {}
    for doc in yaml.safe_load_all(WEBHOOKS.read_text()):
        for webhook in doc["webhooks"]:
            for condition in webhook.get("matchConditions", ()):
                if condition["name"] == "requests-gpus":
                    found[webhook["name"]] = condition["expression"]
    return found


def test_the_shipped_filter_sends_pods_jobs_and_cronjobs_with_resource_claims() -> None:
    """The captured pod asks for no GPU resource: every `requests-gpus` condition (pods,
    Jobs, CronJobs; mutating and validating) sends it for its resourceClaims, with the
    clause `gpu_names.cel_claims_test` writes; a pod without claims or GPUs is not sent."""
    pod = obj(POD)
    spec = pod["spec"]
    wrapped = {
        "pods": pod,
        "jobs": {"spec": {"template": {"spec": spec}}},
        "cronjobs": {"spec": {"jobTemplate": {"spec": {"template": {"spec": spec}}}}},
    }
    paths = {
        "pods": "object.spec",
        "jobs": "object.spec.template.spec",
        "cronjobs": "object.spec.jobTemplate.spec.template.spec",
    }
    conditions = _requests_gpus()
    assert len(conditions) == 6
    for name, expression in conditions.items():
        hook = name.split(".")[0]
        assert cel_claims_test(paths[hook]) in expression, name
        assert cel.evaluate(expression, object=wrapped[hook]), name
        without = copy.deepcopy(wrapped[hook])
        target = without["spec"] if hook == "pods" else None
        if hook == "jobs":
            target = without["spec"]["template"]["spec"]
        elif hook == "cronjobs":
            target = without["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        assert target is not None
        target["resourceClaims"] = []
        assert not cel.evaluate(expression, object=without), name
        del target["resourceClaims"]
        assert not cel.evaluate(expression, object=without), name


def test_claims_are_sent_except_the_claim_controllers_copies() -> None:
    """The claims webhooks send ResourceClaims and ResourceClaimTemplates a user writes; the
    claims the resource-claim-controller copies from a template already checked are not."""
    for doc in yaml.safe_load_all(WEBHOOKS.read_text()):
        (claims,) = [w for w in doc["webhooks"] if w["name"].startswith("claims.")]
        (condition,) = claims["matchConditions"]
        for name, sent in ((TEMPLATE, True), (CLAIM, True), (BY_CONTROLLER, False)):
            request = capture(name)["request"]
            assert cel.evaluate(condition["expression"], request=request) is sent, name


# --- the watch cache ------------------------------------------------------------------------


def test_the_watch_cache_resolves_claims_without_a_call_in_the_review() -> None:
    """In cluster mode the claim templates and claims come from the watch cache (list +
    watch through the real client): the pod is priced with its template's 8 GPUs, a live
    DRA pod holds them in the quota cache, and a template deleted is forgotten. The review
    itself makes no API call: the fake API server goes down before it."""
    with FakeApiServer(bookmark_interval=0.2) as api:
        config = load_config()
        box: dict[str, Config] = {}
        state = cluster_state(
            lambda: box["config"], ledger_namespace="costgate-system", api_client=api.client()
        )
        assert state.cluster is not None
        box["config"] = dataclasses.replace(config, claims=state.cluster.claims())
        api.create("resourceclaimtemplates", obj(TEMPLATE))
        state.cluster.start()
        try:
            assert state.cluster.wait_synced(10)
            assert state.cluster.sync_state()["resourceclaimtemplates"] == "synced"
            live = obj(POD)
            live["spec"]["activeDeadlineSeconds"] = 3600
            api.create("pods", live)
            eventually(lambda: state.namespace_totals("capture").gpus == 8)
            svc = AdmissionService(box["config"])
            api.down()
            response = ask(svc, capture(POD))
            assert response["auditAnnotations"]["estimated-cost-usd"] == f"{EIGHT_DEAREST:.2f}"
            api.up()
            api.remove("resourceclaimtemplates", "capture", "eight-gpus")
            lookup = state.cluster.claims()
            eventually(lambda: lookup("ResourceClaimTemplate", "capture", "eight-gpus") is None)
            assert codes(ask(svc, capture(POD))) == {"template-not-found"}
        finally:
            state.cluster.stop()


# --- claims in the kinds table's kinds --------------------------------------------------------


def test_a_jobset_whose_pods_get_gpus_through_claims_is_priced() -> None:
    """The captured JobSet asks for no GPU resource: each of its 3 × 2 pods gets one device of
    gpu.nvidia.com from template gpu-claim-template. It was sent to no webhook and admitted
    unpriced, and its Jobs and pods were then trusted as the controllers'. Now it is sent (its
    pod template names claims) and priced with them: 6 × $27.04/h × 12h = $1,946.88; without
    the template it cannot be priced at all."""
    one = {"exactly": {"deviceClassName": "gpu.nvidia.com", "allocationMode": "ExactCount"}}
    one["exactly"]["count"] = 1
    jobset = capture("validate-jobset-create-dra")
    response = ask(service(template(one, "gpu-claim-template")), jobset)
    assert (response["allowed"], codes(response)) == (False, {"missing-labels", "over-threshold"})
    assert response["auditAnnotations"]["estimated-cost-usd"] == "1946.88"
    assert codes(ask(service(), jobset)) == {"template-not-found"}
