"""engine.holding: what a live object holds, as quotas count it."""

from __future__ import annotations

import pytest

from tests.support.builders import pod
from tests.support.config import policy_with
from webhook.core.config import Config
from webhook.core.holding import holding

ANNOTATED_T4 = {"costgate.io/gpu-type": "t4"}


@pytest.mark.parametrize("checked", [False, True], ids=["trusted", "checked"])
def test_holding_prices_an_annotation_alone_as_the_policy_says(table, checked: bool) -> None:
    # 8 GPUs pinned by nothing but the annotation: a policy that checks the annotation (the
    # default) counts them at the dearest GPU in quotas too, as it prices them at admission;
    # one that opts into trusting it counts them as t4.
    policy = policy_with() if checked else policy_with(gpu_type_annotation="trusted")
    obj = pod(gpus=8, annotations=ANNOTATED_T4, spec={"activeDeadlineSeconds": 3600})
    usage = holding("", "Pod", obj, Config(table, policy))
    assert usage is not None and usage.gpus == 8
    gpu = table.gpus[table.candidates("nvidia.com/gpu")[0] if checked else "t4"]
    assert usage.usd == round(8 * gpu.usd_per_hour, 2)
