"""What a workflow's estimate says: runs and hours per template, the most at once, the
breakdown in a denial."""

from __future__ import annotations

from tests.support.builders import request
from tests.support.workflows import (
    A100,
    DAG_FAN_OUT,
    DAY,
    H100,
    RETRIED_SWEEP,
    codes,
    money,
    rate,
)
from webhook.core.engine import Config, evaluate


def test_a_per_step_estimate_says_runs_and_hours_per_template(wide: Config) -> None:
    decision = evaluate(request(RETRIED_SWEEP), config=wide)
    a100 = rate(wide)(A100)
    expected = (
        f"{money(4 * 3 * 4 * a100 * 2)} (train: 4 × a100-80gb at {money(a100)}/h × 2h × 12 runs)"
    )
    assert decision.warnings[0] == f"costgate: estimated cost {expected}"
    assert decision.audit["estimate"] == expected


def test_a_peak_estimate_says_the_most_at_once_and_each_template(wide: Config) -> None:
    decision = evaluate(request(DAG_FAN_OUT), config=wide)
    p = rate(wide)
    peak = 3 * 2 * p(A100) + p(H100)
    assert decision.audit["estimate"] == (
        f"{money(peak * DAY)} (up to {money(peak)}/h at once × 12h; "
        f"train: 2 × a100-80gb at {money(p(A100))}/h, eval: 1 × h100-80gb at {money(p(H100))}/h)"
    )


def test_a_long_estimate_warning_counts_the_gpus_at_once(wide: Config) -> None:
    decision = evaluate(request(DAG_FAN_OUT), config=wide)
    assert "(breakdown in audit annotations)" in decision.warnings[0]
    assert "7 GPUs" in decision.warnings[0]  # 3 items × 2 × a100 + 1 × h100


def test_an_expensive_workflow_is_denied_with_its_breakdown(strict: Config) -> None:
    decision = evaluate(request(RETRIED_SWEEP), config=strict)
    a100 = rate(strict)(A100)
    assert not decision.allowed
    assert codes(decision) == ["over-threshold"]
    cost = 4 * 3 * 4 * a100 * 2  # 4 items × 3 attempts × 4 GPUs × 2h
    assert decision.reasons[0].message.startswith(
        f"estimated cost {money(cost)} (train: 4 × a100-80gb at {money(a100)}/h × 2h × 12 runs)"
        " exceeds the $100.00 limit"
    )
