"""Messages pinned by a golden file: what users read must only change on purpose.

Regenerate after an intended wording change with
`UPDATE_GOLDEN=1 pytest tests/core/test_messages.py` and review the diff like any other change.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.builders import pod, request
from tests.support.captures import capture_request
from tests.support.config import policy_with
from webhook.core import messages
from webhook.core.engine import Config, evaluate
from webhook.core.types import Approval, Estimate, EstimateLine, Reason

GOLDEN = Path(__file__).parent / "golden" / "messages.txt"

H100 = EstimateLine(8, "h100-80gb", 6.0, "h100-80gb", True)
MIG = EstimateLine(1, "h100-80gb/mig-1g.10gb", 6.0 / 7, "h100-80gb", True)
DANA = Approval(
    "dana.3f9a1c2b", "dana", "team-a", "exp-1", "", 3000.0, 1_795_086_400, 1_795_000_000,
    jti="8cae1a49988746c1a1c74d030c77a9d6", uses=2,
)  # fmt: skip
ADMITTED = [('Job "a"', 1320.96), ('Job "b"', 1320.96)]


def _estimate_warning(estimate: Estimate) -> str:
    gpus = sum(line.units for line in estimate.lines)  # every line runs at once here
    return messages.estimate_warning(estimate, messages.cost(estimate), gpus)


def _decision_texts(name: str, obj, config) -> dict[str, str]:
    decision = evaluate(request(obj) if isinstance(obj, dict) else obj, config=config)
    texts = {}
    if decision.reasons:
        texts[f"{name}.denial"] = messages.denial(decision.reasons)
    for i, warning in enumerate(decision.warnings):
        texts[f"{name}.warning{i}"] = warning
    return texts


def current(config) -> dict[str, str]:
    texts = {
        "design-example": messages.over_threshold(
            Estimate((H100,), 24, 1152.0), 100, "ml-research"
        ),
        "two-lines": messages.cost(Estimate((H100, MIG), 1.5, 73.29)),
        "serving": messages.over_threshold(
            Estimate((H100,), 730, 35040.0, per_month=True), 2000, "serving"
        ),
        "estimate-warning": _estimate_warning(
            Estimate((EstimateLine(1, "a10g", 1.0, "a10g", True),), 12, 12.0)
        ),
        "long-estimate-warning": _estimate_warning(
            Estimate((H100, MIG, EstimateLine(2, "l4", 1.6688, "l4", True)), 12, 1000.0)
        ),
        "missing-one": messages.missing_labels(
            "Pod", "train", ["experiment"], ["owner", "experiment"]
        ),
        "invalid-runtime": messages.invalid_runtime("forever"),
        "runtime-too-long": messages.runtime_too_long(8 * 86400, 7 * 86400, "demo"),
        "too-many-gpus": messages.too_many_gpus(1000, 64),
        "unknown-annotation": messages.unknown_gpu_annotation("h1000", ["t4", "a10g"]),
        "unknown-denied": messages.unknown_gpu_denied("demo", ["nvidia.com/gpu.product=X9"]),
        # where the policy trusts the annotation (gpu_type_annotation: trusted), it is a way
        "unknown-denied-trusted": messages.unknown_gpu_denied("demo", [], annotation=True),
        "injection": messages.missing_labels(
            "Pod", "evil\nWarning: approved", ["owner"], ["owner"]
        ),
        "two-reasons": messages.denial(
            [Reason("missing-labels", "first problem"), Reason("over-threshold", "second problem")]
        ),
        "internal": messages.internal_error("abc123"),
        "wrong-type": messages.wrong_type("spec.containers", "list", "main"),
        "dra-claim-not-found": messages.claim_not_found("ResourceClaimTemplate", "h100x8", "gpus"),
        "dra-unbounded": messages.unbounded_devices(
            "spec.spec.devices.requests[0].exactly", "gpu.example.com"
        ),
        "dra-unknown-class-denied": messages.unknown_device_class_denied(
            ["tpu.example.com"], "demo"
        ),
        "dra-unknown-class-priced": messages.unknown_device_class_priced(
            ["tpu.example.com", "x.example.com"], "b300", 17.8
        ),
        "dra-claim-devices": messages.claim_devices(
            "ResourceClaimTemplate", "eight-gpus", [(8, "h100-80gb", 6.88), (1, "t4", 0.978)]
        ),
        "allowance-spent": messages.allowance_spent(DANA, ADMITTED, 1320.96, 'Job "c"'),
        "allowance-uses-spent": messages.allowance_uses_spent(DANA, ADMITTED, 'Job "c"'),
        "allowance-offline": messages.allowance_at_admission(DANA),
    }
    texts.update(_decision_texts("fixture-gpu", capture_request("validate-pod-create-gpu"), config))
    texts.update(
        _decision_texts("fixture-deny", capture_request("validate-pod-create-deny"), config)
    )
    texts.update(
        _decision_texts(
            "small-t4",
            pod(
                annotations={"costgate.io/gpu-type": "t4"},
                spec={"nodeSelector": {"nvidia.com/gpu.product": "Tesla-T4"}},
            ),
            config,
        )
    )
    texts.update(
        _decision_texts(
            "warn-mode",
            pod(
                gpus=8,
                labels={},
                annotations={"costgate.io/gpu-type": "h100-80gb"},
                spec={"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}},
            ),
            Config(config.table, policy_with(mode="warn")),
        )
    )
    return texts


def _render(texts: dict[str, str]) -> str:
    return "".join(f"{key}: {value}\n" for key, value in sorted(texts.items()))


def test_messages_match_the_golden_file(config) -> None:
    rendered = _render(current(config))
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(rendered, encoding="utf-8")
    assert rendered == GOLDEN.read_text(encoding="utf-8")


def test_every_message_is_one_line(config) -> None:
    for key, text in current(config).items():
        assert "\n" not in text, key


def test_warnings_never_exceed_the_api_server_limit() -> None:
    assert len(messages.warning("x" * 1000)) == 256
    assert messages.warning("x" * 1000).endswith("…")


@pytest.mark.parametrize(
    ("value", "quoted"),
    [("alice", '"alice"'), ('a"b', '"a\\"b"'), ("a\nb", '"a\\u000ab"'), ("x" * 200, None)],
    ids=["plain", "quote", "newline", "long"],
)
def test_user_values_are_quoted_and_bounded(value, quoted) -> None:
    result = messages.quote(value)
    assert result.isprintable()
    assert len(result) <= 90
    if quoted is not None:
        assert result == quoted
