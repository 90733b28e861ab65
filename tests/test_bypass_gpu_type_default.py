"""Bypass: the `costgate.io/gpu-type` annotation is the user's word, and nothing makes the
scheduler honour it. An 8-GPU pod annotated `t4` with no node selector may land on H100s;
trusted by default, it was admitted at the T4 price. `gpu_type_annotation: checked` is now
the default everywhere a policy can come from (the bundled file, a policy file that does not
name the setting, the core's own `NamespacePolicy`): the annotation counts only where a node
selector or required affinity allows that type; alone, the `unknown_gpu` rule prices the pod.
`trusted` stays an explicit opt-in, cluster-wide or per namespace.

Each test goes through the real `AdmissionService.handle` (or the real CLI, or the quota
cache's `holding`), from the captured reviews in tests/fixtures/admission.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.answers import patched, response_of
from tests.support.builders import T4, gpu_product_affinity, pod, request
from tests.support.captures import capture
from tests.support.config import policy_data
from tests.support.services import served
from webhook.cli import main
from webhook.core.config import Config
from webhook.core.extract.pod import extract_pod
from webhook.core.holding import holding
from webhook.core.policy import Policy
from webhook.core.pricing import price
from webhook.service import AdmissionService, Endpoint
from webhook.tables import load_config, parse_policy

POD = "validate-pod-create-gpu"  # 8 × GPU in namespace demo, pinned to H100 by a nodeSelector
JOB = "validate-job-create-gpu"  # parallelism 4 × 1 GPU, type not pinned
T4_USD = 0.978  # pricing/default.yaml: t4
H100_USD = 6.88  # pricing/default.yaml: h100-80gb
STAMP = "costgate.io/estimated-cost"
# a live pod as the quota cache sees it: 8 GPUs for 1h, typed by the annotation alone
ANNOTATED_T4_POD = pod(
    gpus=8, annotations={"costgate.io/gpu-type": "t4"}, spec={"activeDeadlineSeconds": 3600}
)


# --- helpers ---------------------------------------------------------------------------


def dearest_usd() -> float:
    """$/h of the dearest GPU an `nvidia.com/gpu` can be (what an unpinned GPU is priced at)."""
    table = load_config().table
    return table.gpus[table.candidates("nvidia.com/gpu")[0]].usd_per_hour


def annotated_t4(obj: dict[str, Any], gpus: int = 8) -> None:
    """`gpus` GPUs for 1h that may land on any GPU node, declared t4 by the annotation alone."""
    obj["spec"].pop("nodeSelector", None)
    obj["spec"].pop("affinity", None)
    resources = obj["spec"]["containers"][0]["resources"]
    for side in ("limits", "requests"):
        resources.setdefault(side, {})["nvidia.com/gpu"] = str(gpus)
    obj["metadata"]["annotations"]["costgate.io/gpu-type"] = "t4"
    obj["metadata"]["annotations"]["costgate.io/max-runtime"] = "1h"


def review(name: str = POD, edit: Any = annotated_t4) -> dict[str, Any]:
    """A captured review, deep-copied, with `edit` applied to its object."""
    doc = copy.deepcopy(capture(name))
    edit(doc["request"]["object"])
    return doc


def ask(svc: AdmissionService, doc: dict[str, Any], endpoint: Endpoint = "validate") -> dict:
    """The response for `doc`, checked to be a well-formed answer to its uid."""
    return response_of(svc.handle(json.dumps(doc).encode(), endpoint), doc["request"]["uid"])


def usd(response: dict[str, Any]) -> float:
    return float(response["auditAnnotations"]["estimated-cost-usd"])


def codes(response: dict[str, Any]) -> set[str]:
    return set(response.get("auditAnnotations", {}).get("reasons", "").split(",")) - {""}


def in_namespace(namespace: str, doc: dict[str, Any]) -> dict[str, Any]:
    doc["request"]["namespace"] = namespace
    doc["request"]["object"]["metadata"]["namespace"] = namespace
    return doc


# --- the default: the annotation alone pins nothing --------------------------------------


def test_an_annotation_alone_is_priced_as_the_dearest_gpu_by_default() -> None:
    """The issue's attack: 8 GPUs annotated t4, no node selector, under the bundled policy.
    Priced as 8 of the dearest GPU for 1h ($216.32, over the $100 threshold: denied), not
    8 × $0.978 = $7.82."""
    response = ask(served(), review())
    assert (response["allowed"], codes(response), usd(response)) == (
        False,
        {"over-threshold"},
        round(8 * dearest_usd(), 2),
    )


def test_the_warning_names_the_node_selector_that_makes_the_annotation_count() -> None:
    """1 GPU annotated t4 alone: admitted at the dearest price ($27.04 < $100), and the
    warning says the annotation alone does not keep the pod on T4 nodes, and what would."""
    response = ask(served(), review(edit=lambda obj: annotated_t4(obj, gpus=1)))
    assert any(
        "costgate.io/gpu-type=t4 alone does not keep the pod on t4 nodes" in w
        and "pin t4 with a GPU nodeSelector" in w
        for w in response.get("warnings", [])
    ), response


def test_the_mutating_webhook_stamps_the_dearest_price_by_default() -> None:
    """What /mutate writes on the object (the stamp the quota cache counts later) is the
    dearest price too, as /validate decided it."""
    doc = review(edit=lambda obj: annotated_t4(obj, gpus=1))
    stored = patched(doc["request"]["object"], ask(served(), doc, "mutate"))
    assert stored["metadata"]["annotations"][STAMP] == f"{dearest_usd():.2f}"


def test_a_job_template_annotated_alone_is_priced_as_the_dearest_gpu_by_default() -> None:
    """Not a Pod-only rule: a Job of 4 × 1 GPU at once, its pod template annotated t4 and
    pinned by nothing, is priced 4 × the dearest GPU for 1h, not 4 × $0.978."""

    def edit(job: dict[str, Any]) -> None:
        job["metadata"]["annotations"] = {"costgate.io/max-runtime": "1h"}
        job["spec"]["template"]["metadata"]["annotations"] = {"costgate.io/gpu-type": "t4"}

    response = ask(served(), review(JOB, edit))
    assert usd(response) == round(4 * dearest_usd(), 2)


def test_an_annotation_alone_does_not_satisfy_allowed_gpu_types_by_default() -> None:
    """A namespace that allows only t4: a pod annotated t4 with no node selector may still
    land on an H100, so it is refused as unpinned (it was admitted as a T4)."""
    policy = policy_data()
    policy["namespaces"] = {"demo": {"allowed_gpu_types": ["t4"]}}
    svc = AdmissionService(dataclasses.replace(load_config(), policy=parse_policy(policy)))
    response = ask(svc, review(edit=lambda obj: annotated_t4(obj, gpus=1)))
    assert codes(response) == {"gpu-type-not-allowed"}


def test_a_policy_file_that_does_not_name_the_setting_checks_the_annotation(
    tmp_path: Path,
) -> None:
    """A platform team's own policy file, written before the setting existed (or without
    it): the annotation is checked all the same."""
    data = policy_data()
    del data["gpu_type_annotation"]
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data))
    response = ask(AdmissionService(load_config(policy=path)), review())
    assert usd(response) == round(8 * dearest_usd(), 2)


def test_the_cores_own_policy_checks_the_annotation(table) -> None:
    """A Policy built in code with no word on the annotation (the core's defaults, as an
    embedding or a test builds it) counts 8 GPUs annotated t4 alone at the dearest GPU."""
    usage = holding("", "Pod", ANNOTATED_T4_POD, Config(table, Policy()))
    assert usage is not None and usage.usd == round(8 * dearest_usd(), 2)


def test_pricing_without_a_word_on_trust_does_not_trust_the_annotation(table) -> None:
    """`price` called without `trust_annotation` leaves a type only the annotation names
    unpinned: trusting it is a choice its caller states."""
    workload = extract_pod(request(ANNOTATED_T4_POD), Config(table, Policy()))
    assert workload is not None
    assert price(workload, table, hours=1, per_month=False).unresolved


def test_quotas_count_an_annotation_alone_at_the_dearest_gpu_by_default(table) -> None:
    """The quota cache prices a live pod as admission did: 8 GPUs annotated t4 alone
    count at the dearest GPU under the bundled policy."""
    usage = holding("", "Pod", ANNOTATED_T4_POD, load_config())
    assert usage is not None and usage.usd == round(8 * dearest_usd(), 2)


def test_costgate_estimate_agrees_with_the_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`costgate estimate` on the same pod says what the server says: denied, at the
    dearest price."""
    doc = review()
    path = tmp_path / "pod.yaml"
    path.write_text(yaml.safe_dump(doc["request"]["object"]))
    code = main(["estimate", "-f", str(path), "-o", "json"])
    row = json.loads(capsys.readouterr().out)[0]
    server = ask(served(), doc)
    assert (code, row["allowed"], row["cost_usd"]) == (1, server["allowed"], usd(server))
    assert row["cost_usd"] == round(8 * dearest_usd(), 2)


# --- what still counts --------------------------------------------------------------------


def test_a_node_selector_makes_the_annotation_count_by_default() -> None:
    """The annotation with a nodeSelector that keeps the pod on T4 nodes: the T4 price."""

    def edit(obj: dict[str, Any]) -> None:
        annotated_t4(obj)
        obj["spec"]["nodeSelector"] = dict(T4)

    response = ask(served(), review(edit=edit))
    assert (response["allowed"], usd(response)) == (True, round(8 * T4_USD, 2))


def test_an_annotation_never_lowers_what_affinity_allows() -> None:
    """Affinity allows T4 or H100 and the annotation says t4: the scheduler may still pick an
    H100, so the annotation chooses nothing below the dearest allowed type."""

    def edit(obj: dict[str, Any]) -> None:
        annotated_t4(obj, gpus=1)
        obj["spec"]["affinity"] = gpu_product_affinity("Tesla-T4", "NVIDIA-H100-80GB-HBM3")

    assert usd(ask(served(), review(edit=edit))) == H100_USD


def test_trusted_is_an_explicit_opt_in_for_the_cluster() -> None:
    """`gpu_type_annotation: trusted` in the policy: the annotation alone names the type, as
    before (the platform team takes its users' word)."""
    response = ask(served(gpu_type_annotation="trusted"), review())
    assert (response["allowed"], usd(response)) == (True, round(8 * T4_USD, 2))


def test_trusted_is_an_explicit_opt_in_for_one_namespace() -> None:
    """A namespace that opts in trusts the annotation; the cluster's other namespaces do
    not."""
    policy = policy_data()
    policy["namespaces"] = {"demo": {"gpu_type_annotation": "trusted"}}
    svc = AdmissionService(dataclasses.replace(load_config(), policy=parse_policy(policy)))
    trusting = ask(svc, review())
    other = ask(svc, in_namespace("team-b", review()))
    assert (usd(trusting), usd(other)) == (round(8 * T4_USD, 2), round(8 * dearest_usd(), 2))
