"""UPDATEs of a stored Workflow: the controller's status writes, stopping, raising the cost
or the deadline, relabelling."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.builders import request
from tests.support.workflows import (
    ARGO_SA,
    call,
    codes,
    gpu,
    patched,
    steps,
    workflow,
    workflow_template,
)
from webhook.core.engine import Config, evaluate


def stored(config: Config, obj: dict[str, Any]) -> dict[str, Any]:
    """What the API server holds after a CREATE through the mutating webhook."""
    decision = evaluate(request(obj), config=config)
    assert decision.allowed, decision.reasons
    return patched(decision, obj)


def update(config: Config, old, change: Callable[[dict[str, Any]], None], user: str = "alice"):
    new = copy.deepcopy(old)
    change(new)
    return evaluate(request(new, operation="UPDATE", old=old, username=user), config=config), new


def test_the_workflow_controller_updates_are_allowed_at_once(strict) -> None:
    old = stored(strict, workflow(gpu("main", 1)))

    def status(wf):
        wf["status"] = {"phase": "Running"}
        wf["metadata"]["labels"] = {"workflows.argoproj.io/phase": "Running"}
        wf["spec"]["templates"][0]["container"]["resources"]["limits"]["nvidia.com/gpu"] = "8"

    decision, _ = update(strict, old, status, user=ARGO_SA)
    assert decision.allowed and not decision.reasons and not decision.priced


def test_terminating_an_expensive_workflow_is_allowed(wide, strict) -> None:
    # created under a higher threshold (or approved): 8 × a100 × 12h is above $100
    old = stored(wide, workflow(gpu("main", 8)))
    decision, _ = update(strict, old, lambda wf: wf["spec"].update(activeDeadlineSeconds=0))
    assert decision.allowed and codes(decision) == []


def test_stopping_an_expensive_workflow_is_allowed(wide, strict) -> None:
    old = stored(wide, workflow(gpu("main", 8)))
    decision, _ = update(strict, old, lambda wf: wf["spec"].update(shutdown="Stop"))
    assert decision.allowed and codes(decision) == []


def _more_gpus(wf):
    wf["spec"]["templates"][0]["container"]["resources"]["limits"]["nvidia.com/gpu"] = "4"


def _more_items(wf):
    wf["spec"]["templates"][0]["steps"][0][0]["withItems"] = [1, 2, 3, 4, 5]


def _longer(wf):
    wf["metadata"]["annotations"]["costgate.io/max-runtime"] = "48h"
    wf["spec"]["activeDeadlineSeconds"] = 48 * 3600


RAISES = [
    # 1 × a100 × 12h ($41) -> 4 × a100 × 12h ($165)
    ("raising the GPUs past the threshold", workflow(gpu("main", 1)), _more_gpus),
    # 2 items × 1 × a100 × 12h ($82) -> 5 items ($206)
    (
        "raising the fan-out past the threshold",
        workflow(steps("main", [call("t", "train", withItems=[1, 2])]), gpu("train", 1)),
        _more_items,
    ),
    # 1 × a100 × 12h ($41) -> 1 × a100 × 48h ($165)
    (
        "raising the declared runtime and the deadline past the threshold",
        workflow(gpu("main", 1), annotations={"costgate.io/max-runtime": "12h"}),
        _longer,
    ),
]


@pytest.mark.parametrize(("obj", "change"), [r[1:] for r in RAISES], ids=[r[0] for r in RAISES])
def test_an_update_raising_the_cost_past_the_threshold_is_denied(obj, change, strict) -> None:
    old = stored(strict, obj)
    decision, _ = update(strict, old, change)
    assert not decision.allowed
    assert codes(decision) == ["over-threshold"]


def test_an_update_raising_only_the_deadline_is_lowered_back(strict) -> None:
    # The runtime is capped at the declaration, so the price does not move; the deadline must:
    # the update is admitted and the mutating webhook puts the 12h deadline back.
    old = stored(strict, workflow(gpu("main", 1)))
    decision, new = update(strict, old, lambda wf: wf["spec"].update(activeDeadlineSeconds=604800))
    assert decision.allowed and codes(decision) == []
    assert patched(decision, new)["spec"]["activeDeadlineSeconds"] == 43200


def test_raising_the_deadline_of_an_expensive_workflow_is_lowered_back(wide, strict) -> None:
    # created under a higher threshold (or approved): 8 × a100 × 12h is above $100, but the
    # update adds nothing to the declared 12h, so it is admitted with the deadline put back
    old = stored(wide, workflow(gpu("main", 8)))
    decision, new = update(strict, old, lambda wf: wf["spec"].update(activeDeadlineSeconds=604800))
    assert decision.allowed and codes(decision) == []
    assert patched(decision, new)["spec"]["activeDeadlineSeconds"] == 43200


def test_a_workflow_templates_own_deadline_is_left_alone_on_update(strict) -> None:
    # A template sets no deadline (its Workflows get theirs): creating one with a week's
    # deadline leaves it, and so must an update that does not raise its cost.
    template = workflow_template("nightly", workflow(gpu("main", 1))["spec"])
    template["spec"]["activeDeadlineSeconds"] = 604800
    created = evaluate(request(template), config=strict)
    assert created.allowed and created.deadline is None
    decision, new = update(strict, template, lambda t: t["metadata"].update(annotations={"x": "y"}))
    assert decision.allowed and decision.deadline is None
    assert patched(decision, new)["spec"]["activeDeadlineSeconds"] == 604800


def test_a_relabel_that_keeps_the_labels_is_allowed(strict) -> None:
    old = stored(strict, workflow(gpu("main", 1)))
    decision, _ = update(strict, old, lambda wf: wf["metadata"]["labels"].update(stage="eval"))
    assert decision.allowed and codes(decision) == []


def test_stripping_a_required_label_is_denied(strict) -> None:
    old = stored(strict, workflow(gpu("main", 1)))
    decision, _ = update(strict, old, lambda wf: wf["metadata"]["labels"].pop("owner"))
    assert not decision.allowed
    assert codes(decision) == ["missing-labels"]


def test_an_update_from_an_unreadable_object_is_priced_like_a_new_one(strict) -> None:
    # The stored version cannot be read (nothing to compare with): the new one is decided
    # on its own, so a dear update cannot hide behind an old version that fails to parse.
    cheap = stored(strict, workflow(gpu("main", 1)))
    unreadable = copy.deepcopy(cheap)
    unreadable["spec"]["templates"] = "not a list"
    decision = evaluate(request(cheap, operation="UPDATE", old=unreadable), config=strict)
    assert decision.allowed and decision.priced and codes(decision) == []
    dear = copy.deepcopy(cheap)
    _more_gpus(dear)
    decision = evaluate(request(dear, operation="UPDATE", old=unreadable), config=strict)
    assert not decision.allowed
    assert codes(decision) == ["over-threshold"]
