"""Patches are tested by applying them (jsonpatch) and comparing objects, not op lists."""

from __future__ import annotations

import copy

import jsonpatch
import pytest

from tests.support.builders import pod, request
from tests.support.captures import capture, capture_request
from tests.support.config import policy_with
from webhook.core.engine import Config, evaluate
from webhook.core.patch import escape, patch_ops

T4 = {"costgate.io/gpu-type": "t4"}
# the annotation counts where a nodeSelector allows its type (gpu_type_annotation: checked)
ON_T4 = {"nodeSelector": {"nvidia.com/gpu.product": "Tesla-T4"}}


def mutate(obj, config):
    decision = evaluate(request(obj), config=config)
    return decision, patch_ops(decision, obj)


def applied(obj, ops):
    return jsonpatch.apply_patch(copy.deepcopy(obj), ops)


def test_creates_the_annotations_map_when_the_pod_has_none(config) -> None:
    obj = pod(spec={"nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}})
    assert "annotations" not in obj["metadata"]
    decision, ops = mutate(obj, config)
    result = applied(obj, ops)
    assert result["metadata"]["annotations"] == {"costgate.io/estimated-cost": decision.stamp}
    assert result["spec"]["activeDeadlineSeconds"] == 43200


def test_keeps_other_annotations(config) -> None:
    obj = pod(annotations={**T4, "team/x": "1"}, spec=ON_T4)
    decision, ops = mutate(obj, config)
    result = applied(obj, ops)
    assert result["metadata"]["annotations"] == {
        **T4,
        "team/x": "1",
        "costgate.io/estimated-cost": decision.stamp,
    }


def test_replaces_a_stale_stamp_the_user_wrote(config) -> None:
    obj = pod(annotations={**T4, "costgate.io/estimated-cost": "0.01"}, spec=ON_T4)
    decision, ops = mutate(obj, config)
    assert applied(obj, ops)["metadata"]["annotations"]["costgate.io/estimated-cost"] == (
        decision.stamp
    )


def test_lowers_a_larger_deadline(config) -> None:
    obj = pod(
        annotations={**T4, "costgate.io/max-runtime": "1h"},
        spec={**ON_T4, "activeDeadlineSeconds": 99999},
    )
    _, ops = mutate(obj, config)
    assert applied(obj, ops)["spec"]["activeDeadlineSeconds"] == 3600


def test_no_ops_when_nothing_changes(config) -> None:
    obj = pod(
        annotations={**T4, "costgate.io/max-runtime": "1h"},
        spec={**ON_T4, "activeDeadlineSeconds": 600},
    )
    decision, _ops = mutate(obj, config)
    obj["metadata"]["annotations"]["costgate.io/estimated-cost"] = decision.stamp
    assert patch_ops(decision, obj) == []


def test_denied_and_plain_pods_get_no_patch(config) -> None:
    assert mutate(pod(annotations=T4, labels={}, spec=ON_T4), config)[1] == []
    assert mutate(pod(gpus=None), config)[1] == []


@pytest.mark.parametrize(
    "name",
    [
        "mutate-pod-create-gpu",
        "mutate-pod-create-generatename",
        "mutate-pod-create-apply",
        "mutate-pod-create-sidecar-init",
        "mutate-pod-create-dryrun",
    ],
)
def test_patches_apply_to_the_captured_objects(name, table) -> None:
    # With a threshold nobody reaches every captured GPU pod is admitted and patched.
    config = Config(table, policy_with(threshold_usd=1_000_000))
    obj = capture(name)["request"]["object"]
    decision = evaluate(capture_request(name), config=config)
    assert decision.allowed
    result = applied(obj, patch_ops(decision, obj))
    assert result["metadata"]["annotations"]["costgate.io/estimated-cost"] == decision.stamp
    assert result["spec"]["activeDeadlineSeconds"] == decision.runtime_seconds
    # only the two managed fields changed
    result["metadata"]["annotations"].pop("costgate.io/estimated-cost")
    if not result["metadata"]["annotations"]:
        result["metadata"].pop("annotations")
    result["spec"].pop("activeDeadlineSeconds")
    obj = copy.deepcopy(obj)
    obj["spec"].pop("activeDeadlineSeconds", None)
    assert result == obj


@pytest.mark.parametrize(("token", "escaped"), [("a/b", "a~1b"), ("a~b", "a~0b"), ("~/", "~0~1")])
def test_json_pointer_escaping(token, escaped) -> None:
    assert escape(token) == escaped
