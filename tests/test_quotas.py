"""Quotas, budgets and allowed GPU types, end to end through the admission service with the
in-memory state (the embedded default), and the ledger's arithmetic."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.support.answers import answer
from tests.support.builders import H100, T4, gpu_pod, gpu_product_affinity, request, review
from tests.support.config import policy_with
from tests.support.services import Clock, service_for
from webhook.core.engine import Config, evaluate
from webhook.core.holding import holding
from webhook.core.usage import BudgetCharge
from webhook.state import memory_state
from webhook.state.ledger import reconciled, spent_in, with_charge
from webhook.state.report import render_status, usage_report
from webhook.tables import TableError, check_gpu_names, load_pricing

# --- quotas ----------------------------------------------------------------------------


def test_namespace_gpu_quota_denies_the_workload_that_passes_it() -> None:
    service, state = service_for(quota={"max_gpus": 8})
    assert answer(service, gpu_pod(4, name="a"))["allowed"]
    second = answer(service, gpu_pod(3, name="b"))
    assert second["allowed"]
    assert any("7 of its 8 GPUs quota (88%)" in w for w in second["warnings"])
    third = answer(service, gpu_pod(2, name="c"))
    assert not third["allowed"]
    message = third["status"]["message"]
    assert message.startswith(
        'namespace "team-a" would hold 9 of GPUs at once, above its quota of 8'
    )
    assert '7 held by 2 live workloads, and Pod "c" adds 2' in message
    assert third["auditAnnotations"]["reasons"] == "over-quota"
    assert state.namespace_totals("team-a").gpus == 7  # the denied pod holds nothing


def test_quota_frees_when_the_deadline_passes_in_memory() -> None:
    clock = Clock()
    service, state = service_for(clock, quota={"max_gpus": 4})
    assert answer(service, gpu_pod(4, runtime="1h", name="a"))["allowed"]
    assert not answer(service, gpu_pod(1, name="b"))["allowed"]
    clock.now += 3601  # the dead-man's switch has killed it by now
    assert answer(service, gpu_pod(1, name="b"))["allowed"]
    assert state.namespace_totals("team-a").gpus == 1


def test_owner_quota_alone_frees_when_the_deadline_passes() -> None:
    clock = Clock()
    service, _ = service_for(clock, owner_quota={"max_gpus": 2})
    assert answer(service, gpu_pod(2, runtime="1h", name="a"))["allowed"]
    assert not answer(service, gpu_pod(1, name="b"))["allowed"]
    clock.now += 3601
    assert answer(service, gpu_pod(1, name="b"))["allowed"]


def test_owner_quota_and_named_owner_override() -> None:
    service, _ = service_for(owner_quota={"max_gpus": 2}, owners={"bob": {"max_gpus": 6}})
    assert answer(service, gpu_pod(2, owner="alice", name="a"))["allowed"]
    alice = answer(service, gpu_pod(1, owner="alice", name="b"))
    assert not alice["allowed"]
    assert 'owner "alice" in namespace "team-a"' in alice["status"]["message"]
    assert answer(service, gpu_pod(6, owner="bob", name="c"))["allowed"]


def test_per_type_quota_counts_only_that_type() -> None:
    service, _ = service_for(quota={"max_gpus_by_type": {"h100-80gb": 2}})
    assert answer(service, gpu_pod(2, name="a"))["allowed"]
    assert answer(service, gpu_pod(8, selector=T4, name="b"))["allowed"]  # T4s are not capped
    h100 = answer(service, gpu_pod(1, name="c"))
    assert not h100["allowed"]
    assert "3 of h100-80gb GPUs at once, above its quota of 2" in h100["status"]["message"]


def test_committed_cost_quota() -> None:
    # 1 × h100 × 10h = $68.80 each
    service, _ = service_for(quota={"max_committed_usd": 150})
    assert answer(service, gpu_pod(1, runtime="10h", name="a"))["allowed"]
    assert answer(service, gpu_pod(1, runtime="10h", name="b"))["allowed"]
    third = answer(service, gpu_pod(1, runtime="10h", name="c"))
    assert not third["allowed"]
    assert (
        "$206.40 of committed cost at once, above its quota of $150.00"
        in (third["status"]["message"])
    )


def test_mig_slices_count_as_fractions_of_a_gpu() -> None:
    service, state = service_for(quota={"max_gpus": 1})
    mig = gpu_pod(7, resource="nvidia.com/mig-1g.10gb", selector=H100, name="a")
    assert answer(service, mig)["allowed"]
    assert state.namespace_totals("team-a").gpus == pytest.approx(1.0)
    assert not answer(service, gpu_pod(1, resource="nvidia.com/mig-1g.10gb", name="b"))["allowed"]


def test_quotas_in_other_namespaces_do_not_mix() -> None:
    service, _ = service_for(quota={"max_gpus": 2})
    assert answer(service, gpu_pod(2, namespace="team-a"))["allowed"]
    assert answer(service, gpu_pod(2, namespace="team-b"))["allowed"]


# --- allowed GPU types -----------------------------------------------------------------


def test_allowed_gpu_types() -> None:
    service, _ = service_for(allowed_gpu_types=["t4", "l4"])
    assert answer(service, gpu_pod(1, selector=T4))["allowed"]
    h100 = answer(service, gpu_pod(1))
    assert not h100["allowed"]
    assert h100["auditAnnotations"]["reasons"] == "gpu-type-not-allowed"
    assert h100["status"]["message"].startswith(
        'GPU type h100-80gb is not allowed in namespace "team-a", which allows l4, t4'
    )
    unpinned = answer(service, gpu_pod(1, selector={}))
    assert not unpinned["allowed"]
    assert unpinned["auditAnnotations"]["reasons"] == "gpu-type-not-allowed"
    assert "nothing pins this pod's GPU type" in unpinned["status"]["message"]


def test_affinity_that_allows_a_forbidden_type_is_refused() -> None:
    service, _ = service_for(allowed_gpu_types=["t4", "l4"])
    obj = gpu_pod(1, selector={})
    obj["spec"]["affinity"] = gpu_product_affinity("Tesla-T4", "NVIDIA-H100-80GB-HBM3")
    response = answer(service, obj)
    assert not response["allowed"]
    assert response["auditAnnotations"]["reasons"] == "gpu-type-not-allowed"
    assert "h100-80gb is not allowed" in response["status"]["message"]


def test_policy_naming_an_unknown_gpu_type_is_refused_at_load() -> None:
    with pytest.raises(TableError, match=r"allowed_gpu_types: 'h100' is not a GPU type"):
        check_gpu_names(policy_with(allowed_gpu_types=["h100"]), load_pricing())
    with pytest.raises(TableError, match=r"namespaces.ml.quota.max_gpus_by_type: 'x'"):
        check_gpu_names(
            policy_with(namespaces={"ml": {"quota": {"max_gpus_by_type": {"x": 1}}}}),
            load_pricing(),
        )


# --- budgets ---------------------------------------------------------------------------


def test_budget_is_spent_by_admissions_and_then_refuses() -> None:
    # each pod: 1 × h100 × 5h = $34.40; budget $80 → two fit, the third does not; each
    # experiment its own (unlisted ones share one by default: test_bypass_experiment_rotation)
    service, state = service_for(budget={"usd": 80, "unlisted_experiments": "default"})
    first = answer(service, gpu_pod(1, runtime="5h", name="a"))
    assert first["allowed"]
    second = answer(service, gpu_pod(1, runtime="5h", name="b"))
    assert second["allowed"]
    assert any(
        "committed $68.80 of its $80.00 budget over its lifetime (86%)" in w
        for w in second["warnings"]
    )
    third = answer(service, gpu_pod(1, runtime="5h", name="c"))
    assert not third["allowed"]
    assert third["auditAnnotations"]["reasons"] == "over-budget"
    assert third["status"]["message"] == (
        'experiment "exp-1" in namespace "team-a" has spent $68.80 of its $80.00 budget over '
        'its lifetime; Pod "c" (estimated $34.40) would exceed it by $23.20; use fewer GPUs or a '
        "shorter costgate.io/max-runtime, or ask the platform team to raise the budget"
    )
    assert state.spent("team-a", "exp-1", "lifetime") == pytest.approx(68.80)
    # another experiment has its own budget
    assert answer(service, gpu_pod(1, runtime="5h", experiment="exp-2", name="d"))["allowed"]


def test_dry_run_never_spends() -> None:
    service, state = service_for(budget={"usd": 100})
    for _ in range(5):
        assert answer(service, gpu_pod(1, runtime="5h"), dry_run=True)["allowed"]
    assert state.spent("team-a", "exp-1", "lifetime") == 0
    assert state.namespace_totals("team-a").workloads == 0


def test_monthly_budget_starts_over_each_month() -> None:
    clock = Clock()
    service, _ = service_for(clock, budget={"usd": 40, "period": "month"})
    assert answer(service, gpu_pod(1, runtime="5h", name="a"))["allowed"]
    assert not answer(service, gpu_pod(1, runtime="5h", name="b"))["allowed"]
    clock.now += 31 * 86400
    assert answer(service, gpu_pod(1, runtime="5h", name="b"))["allowed"]


def test_named_experiment_budget() -> None:
    service, _ = service_for(budget={"usd": 10, "experiments": {"big": 1000}})
    assert not answer(service, gpu_pod(1, runtime="5h", experiment="small"))["allowed"]
    assert answer(service, gpu_pod(1, runtime="5h", experiment="big"))["allowed"]


def test_warn_mode_records_spend_and_only_warns() -> None:
    service, state = service_for(budget={"usd": 40}, mode="warn")
    assert answer(service, gpu_pod(1, runtime="5h", name="a"))["allowed"]
    over = answer(service, gpu_pod(1, runtime="5h", name="b"))
    assert over["allowed"]
    assert any("would be denied in enforce mode (over-budget)" in w for w in over["warnings"])
    assert state.spent("team-a", "exp-1", "lifetime") == pytest.approx(68.80)


def test_a_retried_review_is_not_charged_twice() -> None:
    service, state = service_for(budget={"usd": 1000})
    obj = gpu_pod(1, runtime="5h")
    obj["metadata"]["uid"] = "same-object"
    body = review(obj)
    for _ in range(3):
        assert orjson.loads(service.handle(body, "validate").body)["response"]["allowed"]
    assert state.spent("team-a", "exp-1", "lifetime") == pytest.approx(34.40)
    assert state.namespace_totals("team-a").workloads == 1


def test_mutate_never_records() -> None:
    service, state = service_for(budget={"usd": 1000}, quota={"max_gpus": 1})
    for _ in range(3):
        result = service.handle(review(gpu_pod(1)), "mutate")
        assert orjson.loads(result.body)["response"]["allowed"]
    assert state.namespace_totals("team-a").workloads == 0
    assert state.spent("team-a", "exp-1", "lifetime") == 0
    # the same pod through validate is recorded: what the mutations did not do
    assert answer(service, gpu_pod(1))["allowed"]
    assert state.namespace_totals("team-a").workloads == 1


# --- the ledger's arithmetic -------------------------------------------------------------


def charge(usd: float, limit: float = 100.0, enforce: bool = True) -> BudgetCharge:
    return BudgetCharge("ns", "exp", "lifetime", usd, limit, enforce)


def test_with_charge_refuses_the_charge_that_passes_the_limit() -> None:
    doc: dict[str, Any] = {"spent": {"exp/lifetime": 60.0}, "pending": {}}
    doc2, spent, _ = with_charge(doc, charge(30), "uid-1", 1.0)
    assert doc2 is not None and spent == 60
    refused, spent, _ = with_charge(doc2, charge(30), "uid-2", 2.0)
    assert refused is None and spent == 90
    forced, _, _ = with_charge(doc2, charge(30, enforce=False), "uid-2", 2.0)
    assert forced is not None and spent_in(forced, "exp/lifetime") == 120


def test_reconcile_confirms_seen_drops_unseen_after_grace_keeps_unknown() -> None:
    doc = {
        "spent": {"exp/lifetime": 10.0},
        "pending": {
            "seen": ["exp/lifetime", 5.0, 0.0],
            "gone": ["exp/lifetime", 7.0, 0.0],
            "young": ["exp/lifetime", 3.0, 900.0],
            "unknown": ["exp/lifetime", 2.0, 0.0],
            "seen+123": ["exp/lifetime", 1.0, 0.0],  # an update's delta, under its object
        },
    }
    verdicts = {"seen": True, "gone": False, "young": False, "unknown": None}
    after = reconciled(doc, verdicts.get, now=1000.0, grace=300)
    assert after is not None
    assert after["spent"] == {"exp/lifetime": 16.0}
    assert set(after["pending"]) == {"young", "unknown"}
    assert reconciled(after, verdicts.get, now=1000.0, grace=300) is None


# --- what the cache counts -------------------------------------------------------------


def test_holding_counts_live_pods_and_skips_finished_and_controller_made(config: Config) -> None:
    live = gpu_pod(2)
    live["spec"]["activeDeadlineSeconds"] = 3600
    usage = holding("", "Pod", live, config)
    assert usage is not None and usage.gpus == 2 and usage.usd == pytest.approx(13.76)
    assert usage.gpus_by_type == (("h100-80gb", 2.0),)
    done = {**live, "status": {"phase": "Succeeded"}}
    assert holding("", "Pod", done, config) is None
    job_owner = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": "j",
        "uid": "u",
        "controller": True,
    }
    by_job = gpu_pod(2)
    by_job["metadata"]["ownerReferences"] = [job_owner]
    assert holding("", "Pod", by_job, config) is None  # counted with its Job
    # a pod costgate priced and stamped counts, whatever owner it claims
    by_job["metadata"]["annotations"]["costgate.io/estimated-cost"] = "13.76"
    assert holding("", "Pod", by_job, config) is not None


def test_holding_prices_the_spec_deadline_not_the_editable_annotation(config: Config) -> None:
    obj = gpu_pod(1, runtime="1h")
    obj["spec"]["activeDeadlineSeconds"] = 36000
    usage = holding("", "Pod", obj, config)
    assert usage is not None and usage.usd == pytest.approx(68.80)


def test_workflow_per_type_peak_counts_steps_that_never_overlap_once(config: Config) -> None:
    def gpu_template(name: str, selector: dict[str, str], gpus: str) -> dict[str, Any]:
        limits = {"nvidia.com/gpu": gpus}
        return {
            "name": name,
            "nodeSelector": selector,
            "container": {"image": "x", "resources": {"limits": limits}},
        }

    steps = [[{"name": "a", "template": "big"}], [{"name": "b", "template": "small"}]]
    workflow = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "wf", "namespace": "team-a", "labels": {"owner": "a"}},
        "spec": {
            "entrypoint": "main",
            "activeDeadlineSeconds": 3600,
            "templates": [
                {"name": "main", "steps": steps},
                gpu_template("big", H100, "4"),
                gpu_template("small", T4, "2"),
            ],
        },
    }
    usage = holding("argoproj.io", "Workflow", workflow, config)
    assert usage is not None
    assert usage.gpus == 4  # the steps run one after the other
    assert dict(usage.gpus_by_type) == {"h100-80gb": 4.0, "t4": 2.0}


def test_update_that_raises_a_jobs_cost_charges_what_it_adds() -> None:
    service, state = service_for(budget={"usd": 1000})
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "train",
            "namespace": "team-a",
            "uid": "job-uid",
            "labels": {"owner": "alice", "experiment": "exp-1"},
            "annotations": {"costgate.io/max-runtime": "5h"},
        },
        "spec": {
            "parallelism": 1,
            "activeDeadlineSeconds": 18000,
            "template": {
                "spec": {
                    "nodeSelector": H100,
                    "restartPolicy": "Never",
                    "containers": [{"name": "m", "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
                }
            },
        },
    }
    assert answer(service, job)["allowed"]
    assert state.spent("team-a", "exp-1", "lifetime") == pytest.approx(34.40)
    bigger = orjson.loads(orjson.dumps(job))
    bigger["spec"]["parallelism"] = 2
    body = orjson.loads(review(bigger, operation="UPDATE"))
    body["request"]["oldObject"] = job
    response = orjson.loads(service.handle(orjson.dumps(body), "validate").body)["response"]
    assert response["allowed"]
    assert state.spent("team-a", "exp-1", "lifetime") == pytest.approx(68.80)
    assert state.namespace_totals("team-a").gpus == 2  # the reservation moved to the new size


# --- status ----------------------------------------------------------------------------


def test_status_report_and_table() -> None:
    service, state = service_for(
        quota={"max_gpus": 8}, budget={"usd": 100}, owner_quota={"max_gpus": 4}
    )
    assert answer(service, gpu_pod(2, runtime="5h", owner="alice", name="a"))["allowed"]
    assert answer(service, gpu_pod(1, runtime="5h", owner="bob", name="b", selector=T4))["allowed"]
    report = usage_report(state, service._config().policy, now=Clock()())
    [team] = report["namespaces"]
    assert team["gpus"] == 3 and team["workloads"] == 2
    assert team["gpus_by_type"] == {"h100-80gb": 2.0, "t4": 1.0}
    assert [o["owner"] for o in team["owners"]] == ["alice", "bob"]
    [budget] = team["budgets"]
    assert budget["spent_usd"] == pytest.approx(68.80 + 4.89) and budget["draws_on"] == "shared"
    # nothing listed: every experiment draws on the one shared $100
    shared = team["shared_budget"]
    assert shared["spent_usd"] == pytest.approx(68.80 + 4.89) and shared["budget_usd"] == 100
    text = render_status(report)
    assert "namespace/team-a" in text and "3 of 8 (38%)" in text
    assert "$73.69 of $100.00 (74%)" in text


def test_evaluate_without_state_checks_no_quota(config: Config) -> None:
    limited = Config(
        table=config.table, policy=policy_with(quota={"max_gpus": 1}, budget={"usd": 1})
    )
    decision = evaluate(request(gpu_pod(8)), config=limited)  # the CLI's case: no cluster
    assert decision.allowed and decision.charge is None
    assert decision.usage is not None and decision.usage.gpus == 8
    # where no quota or budget applies, the demand is not even computed
    assert evaluate(request(gpu_pod(8)), config=config).usage is None


# --- the HTTP side -----------------------------------------------------------------------


def test_status_endpoint_and_readiness_follow_the_state() -> None:
    import asyncio

    import httpx

    from webhook.server.app import build_app

    clock = Clock()
    config = Config(table=load_pricing(), policy=policy_with(quota={"max_gpus": 8}))
    state = memory_state(clock)
    app = build_app(config, max_body_bytes=3 * 1024 * 1024, state=state)

    async def scenario() -> tuple[httpx.Response, ...]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            admitted = await client.post("/validate", content=review(gpu_pod(3)))
            status = await client.get("/status", params={"namespace": "team-a"})
            ready = await client.get("/readyz")
            state.ready = lambda: False
            unready = await client.get("/readyz")
            return admitted, status, ready, unready

    admitted, status, ready, unready = asyncio.run(scenario())
    assert admitted.json()["response"]["allowed"]
    [row] = status.json()["namespaces"]
    assert row["gpus"] == 3 and row["quota"]["max_gpus"] == 8
    assert ready.status_code == 200 and unready.status_code == 503
