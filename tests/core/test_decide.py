"""Decisions for Pods through the core's entry point, table-driven."""

from __future__ import annotations

import pytest

from tests.support.builders import LABELS, pod, request
from tests.support.config import policy_with
from webhook.core.engine import Config, evaluate

H100 = {"costgate.io/gpu-type": "h100-80gb"}
T4 = {"costgate.io/gpu-type": "t4"}
# the annotation counts where a nodeSelector allows its type (gpu_type_annotation: checked)
ON_H100 = {"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}}
ON_T4 = {"nodeSelector": {"nvidia.com/gpu.product": "Tesla-T4"}}
RS_OWNER = {
    "apiVersion": "apps/v1",
    "kind": "ReplicaSet",
    "name": "srv-1",
    "uid": "u",
    "controller": True,
}
RS_SA = "system:serviceaccount:kube-system:replicaset-controller"


def decide(obj, config, **kw):
    return evaluate(request(obj, **kw), config=config)


def codes(decision) -> list[str]:
    return [r.code for r in decision.reasons]


CASES = [
    # (id, pod, expected allowed, expected codes, expected runtime seconds, expected deadline)
    (
        "a small attributed T4 job is allowed with the default 12h deadline",
        pod(annotations=T4, spec=ON_T4),
        True,
        [],
        43200,
        43200,
    ),
    (
        "a declared runtime becomes the deadline",
        pod(annotations={**T4, "costgate.io/max-runtime": "90m"}, spec=ON_T4),
        True,
        [],
        5400,
        5400,
    ),
    (
        "a smaller existing deadline is kept",
        pod(
            annotations={**T4, "costgate.io/max-runtime": "2h"},
            spec={**ON_T4, "activeDeadlineSeconds": 600},
        ),
        True,
        [],
        600,
        None,
    ),
    (
        "a larger existing deadline is lowered to the declaration",
        pod(
            annotations={**T4, "costgate.io/max-runtime": "2h"},
            spec={**ON_T4, "activeDeadlineSeconds": 86400},
        ),
        True,
        [],
        7200,
        7200,
    ),
    (
        "a larger existing deadline without declaration is lowered to the default",
        pod(annotations=T4, spec={**ON_T4, "activeDeadlineSeconds": 10 * 86400}),
        True,
        [],
        43200,
        43200,
    ),
    (
        "missing both labels",
        pod(annotations=T4, labels={}, spec=ON_T4),
        False,
        ["missing-labels"],
        43200,
        None,
    ),
    (
        "an empty label value counts as missing",
        pod(annotations=T4, labels={"owner": "", "experiment": "x"}, spec=ON_T4),
        False,
        ["missing-labels"],
        43200,
        None,
    ),
    (
        "a label value with a trailing space is refused",
        pod(annotations=T4, labels={"owner": "alice ", "experiment": "x"}, spec=ON_T4),
        False,
        ["missing-labels"],
        43200,
        None,
    ),
    (
        "an unreadable runtime",
        pod(annotations={**T4, "costgate.io/max-runtime": "forever"}, spec=ON_T4),
        False,
        ["invalid-runtime"],
        None,
        None,
    ),
    (
        "a runtime above the 7d cap",
        pod(annotations={**T4, "costgate.io/max-runtime": "8d"}, spec=ON_T4),
        False,
        ["runtime-too-long"],
        None,
        None,
    ),
    (
        "exactly the cap is allowed if cheap",
        pod(annotations={**T4, "costgate.io/max-runtime": "7d"}, gpus=0, spec=ON_T4),
        True,
        [],
        None,
        None,
    ),
    (
        "eight H100 for a day is over the $100 threshold",
        pod(gpus=8, annotations={**H100, "costgate.io/max-runtime": "24h"}, spec=ON_H100),
        False,
        ["over-threshold"],
        86400,
        None,
    ),
    (
        "absurd GPU counts are invalid",
        pod(gpus=1000, annotations=T4, spec=ON_T4),
        False,
        ["invalid-gpu-request"],
        43200,
        None,
    ),
    (
        "an annotation naming no GPU type",
        pod(annotations={"costgate.io/gpu-type": "h1000"}),
        False,
        ["unknown-gpu-type"],
        43200,
        None,
    ),
    (
        "every problem is reported at once",
        pod(labels={}, annotations={**T4, "costgate.io/max-runtime": "8d"}, spec=ON_T4),
        False,
        ["missing-labels", "runtime-too-long"],
        None,
        None,
    ),
]


@pytest.mark.parametrize(
    ("obj", "allowed", "reasons", "runtime", "deadline"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_pod_decisions(obj, allowed, reasons, runtime, deadline, config) -> None:
    decision = decide(obj, config)
    assert codes(decision) == reasons
    assert decision.allowed is allowed
    if decision.workload is not None and "invalid" not in "".join(reasons):
        assert decision.runtime_seconds == runtime
    assert decision.deadline == deadline


def test_allowed_gpu_pods_carry_a_short_estimate_warning(config) -> None:
    decision = decide(pod(annotations=T4, spec=ON_T4), config)
    t4 = config.table.gpus["t4"].usd_per_hour
    assert decision.warnings[0] == (
        f"costgate: estimated cost ${t4 * 12:,.2f} (1 × t4 at ${t4:,.2f}/h × 12h)"
    )
    assert decision.warnings[1] == (
        "costgate: no costgate.io/max-runtime annotation; default runtime 12h injected "
        "(spec.activeDeadlineSeconds=43200)"
    )
    assert all(len(w) <= 120 for w in decision.warnings)
    assert decision.stamp == f"{round(t4 * 12, 2):.2f}"


def test_a_denied_pod_does_not_claim_a_deadline_was_injected(config) -> None:
    decision = decide(pod(annotations=T4, labels={}, spec=ON_T4), config)
    assert not decision.allowed
    assert not any("injected" in w for w in decision.warnings)


def test_non_gpu_pods_are_allowed_untouched(config) -> None:
    decision = decide(pod(gpus=None, labels={}), config)
    assert decision.allowed and not decision.warnings and not decision.priced
    assert decision.deadline is None and decision.stamp is None


def test_unknown_gpu_type_prices_as_the_dearest_with_a_warning(config) -> None:
    decision = decide(pod(annotations={"costgate.io/max-runtime": "1h"}), config)
    dearest = config.table.candidates("nvidia.com/gpu")[0]
    assert decision.estimate is not None
    assert decision.estimate.lines[0].gpu_type == dearest
    assert any("GPU type not pinned" in w for w in decision.warnings)


def test_unknown_gpu_type_denied_when_policy_says_so(table) -> None:
    config = Config(table, policy_with(unknown_gpu="deny"))
    decision = decide(pod(spec={"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-Z9"}}), config)
    assert codes(decision) == ["unknown-gpu-type"]
    assert '"nvidia.com/gpu.product=NVIDIA-Z9"' in decision.reasons[0].message


def test_warn_mode_allows_and_says_what_would_be_denied(table) -> None:
    config = Config(table, policy_with(mode="warn"))
    decision = decide(
        pod(
            gpus=8, annotations={**H100, "costgate.io/max-runtime": "24h"}, labels={}, spec=ON_H100
        ),
        config,
    )
    assert decision.allowed
    assert codes(decision) == ["missing-labels", "over-threshold"]
    assert decision.warnings[0].startswith("costgate: estimated cost $")
    assert any("would be denied in enforce mode (over-threshold)" in w for w in decision.warnings)
    assert decision.deadline is None  # rolling out must not start killing jobs
    assert decision.stamp is not None


def test_warn_mode_does_not_inject_the_default_deadline(table) -> None:
    config = Config(table, policy_with(mode="warn"))
    decision = decide(pod(annotations=T4, spec=ON_T4), config)
    assert decision.allowed and decision.deadline is None
    assert any("which enforce mode would set" in w for w in decision.warnings)


def test_namespace_overrides_apply_only_to_their_namespace(table) -> None:
    config = Config(table, policy_with(namespaces={"rich": {"threshold_usd": 5000}}))
    obj = dict(pod(gpus=8, annotations={**H100, "costgate.io/max-runtime": "24h"}, spec=ON_H100))
    assert decide(obj, config).allowed is False
    rich = pod(
        gpus=8,
        annotations={**H100, "costgate.io/max-runtime": "24h"},
        namespace="rich",
        spec=ON_H100,
    )
    assert decide(rich, config).allowed is True


def test_exempt_namespaces_are_not_evaluated(config) -> None:
    assert decide(pod(labels={}, namespace="kube-system"), config).allowed


def test_serving_pods_are_priced_per_month_without_a_deadline(config) -> None:
    obj = pod(annotations={**T4, "costgate.io/max-runtime": "1h"}, owner=RS_OWNER, spec=ON_T4)
    decision = decide(obj, config, username=RS_SA)
    t4 = config.table.gpus["t4"].usd_per_hour
    assert decision.estimate is not None and decision.estimate.per_month
    assert decision.estimate.usd == round(t4 * 730, 2)
    assert decision.deadline is None and decision.runtime_seconds is None
    assert decision.allowed  # under the $2,000/month serving threshold
    assert any("ignored for serving pods" in w for w in decision.warnings)


def test_serving_pods_over_the_serving_threshold_are_denied(config) -> None:
    decision = decide(pod(annotations=H100, owner=RS_OWNER, spec=ON_H100), config, username=RS_SA)
    assert codes(decision) == ["over-threshold"]
    assert "/month serving limit" in decision.reasons[0].message


def test_serving_pods_still_need_labels(config) -> None:
    decision = decide(
        pod(annotations=T4, owner=RS_OWNER, labels={}, spec=ON_T4), config, username=RS_SA
    )
    assert codes(decision) == ["missing-labels"]


def test_pods_of_a_priced_owner_are_not_priced_again(config) -> None:
    owner = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "name": "wf",
        "uid": "u",
        "controller": True,
    }
    decision = decide(
        pod(gpus=8, labels={}, owner=owner), config, username="system:serviceaccount:argo:argo"
    )
    assert decision.allowed and not decision.priced and decision.deadline is None


def test_updates_cannot_strip_attribution(config) -> None:
    old = pod(annotations=T4, spec=ON_T4)
    new = pod(annotations=T4, labels={"owner": "alice"}, spec=ON_T4)
    decision = decide(new, config, operation="UPDATE", old=old)
    assert codes(decision) == ["missing-labels"]
    assert not decision.allowed


def test_updates_of_unattributed_pods_are_left_alone(config) -> None:
    old = pod(annotations=T4, labels={}, spec=ON_T4)
    decision = decide(
        pod(annotations=T4, labels={"x": "y"}, spec=ON_T4), config, operation="UPDATE", old=old
    )
    assert decision.allowed and not decision.reasons


def test_relabelling_an_attributed_pod_is_allowed_and_not_repriced(config) -> None:
    old = pod(gpus=8, annotations=H100, spec=ON_H100)
    new = pod(gpus=8, annotations=H100, labels={**LABELS, "experiment": "exp-2"}, spec=ON_H100)
    decision = decide(new, config, operation="UPDATE", old=old)
    assert decision.allowed and not decision.priced


@pytest.mark.parametrize("operation", ["DELETE", "CONNECT"])
def test_delete_and_connect_are_allowed(operation, config) -> None:
    assert decide(pod(labels={}), config, operation=operation).allowed
