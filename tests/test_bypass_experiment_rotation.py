"""Bypass attempts by experiment-label rotation (issue #13, item 9).

Budgets were kept per `experiment` label value, and any value the policy did not name got
the default amount: relabelling a workload `rot-1`, `rot-2`, `rot-3`... bought a fresh
budget each time. Now experiments the policy does not list share one budget of `usd` by
default (`unlisted_experiments: share`), are denied (`deny`), or each get `usd` only by an
explicit opt-in (`default`); and `namespace_usd` caps all experiments of a namespace
together. A charge may fall in two budgets (the experiment's own or the shared one, and the
namespace's): the core checks both, and the ledger checks both again in the one write of
the namespace's document, so two replicas racing cannot pass either.

`costgate estimate` has no ledger: it judges each workload as if nothing had been spent, so
it agrees with the server on an empty ledger and on what the policy alone decides (an
unlisted experiment where those are denied).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from tests.support.answers import answer
from tests.support.builders import gpu_pod, pod, review
from tests.support.config import policy_data, policy_with
from tests.support.fakeapi import FakeApiServer
from tests.support.paths import FIXTURES
from tests.support.services import service_for
from webhook.cli import main
from webhook.core.engine import Config
from webhook.core.usage import BudgetCharge
from webhook.server.app import build_app
from webhook.service import AdmissionService
from webhook.state import State, memory_state
from webhook.state.cluster import cluster_state
from webhook.state.ledger import spent_in, with_charge
from webhook.state.report import render_status, usage_report
from webhook.tables import TableError, load_pricing, parse_policy

RUN = 275.20  # 8 × h100 ($6.88/h) × 5h: each rotation's try at a fresh $300
ROTATIONS = ("rot-1", "rot-2", "rot-3")
PERIOD = "2026-11"  # the month of Clock()
LISTED = {"llm-pretrain": 5000}
HIGH = 1000  # the cost gate's threshold, above RUN: only budgets decide here


def run(experiment: str, *, gpus: int = 8, runtime: str = "5h") -> dict[str, Any]:
    return gpu_pod(gpus, runtime=runtime, experiment=experiment, name=f"train-{experiment}")


def budget(**fields: Any) -> dict[str, Any]:
    return {"usd": 300, "period": "month", **fields}


def rotate(service: AdmissionService) -> list[dict[str, Any]]:
    return [answer(service, run(experiment)) for experiment in ROTATIONS]


# --- share: the default ---------------------------------------------------------------------


def test_rotating_labels_gain_nothing_by_default() -> None:
    # no unlisted_experiments in the policy: unlisted experiments share one $300
    service, state = service_for(threshold_usd=HIGH, budget=budget(experiments=LISTED))
    first, second, third = rotate(service)
    assert first["allowed"]
    assert [second["allowed"], third["allowed"]] == [False, False]
    assert second["auditAnnotations"]["reasons"] == "over-budget"
    assert second["status"]["message"] == (
        'the shared budget of unlisted experiments in namespace "team-a" (experiment "rot-2" '
        "is not listed, so it draws on it) has spent $275.20 of the $300.00 budget for "
        '2026-11; Pod "train-rot-2" (estimated $275.20) would exceed it by $250.40; use fewer '
        "GPUs or a shorter costgate.io/max-runtime, or ask the platform team to give the "
        "experiment a budget of its own or raise the shared one"
    )
    # each rotation's spend is recorded under its own label; the pool adds them up
    assert state.spent("team-a", "rot-1", PERIOD) == pytest.approx(RUN)
    assert state.spent("team-a", "rot-2", PERIOD) == 0
    # a listed experiment keeps its own budget, untouched by the pool
    assert answer(service, run("llm-pretrain"))["allowed"]


def test_with_nothing_listed_every_experiment_shares_the_one_budget() -> None:
    service, _ = service_for(threshold_usd=HIGH, budget=budget())
    first, second, _ = rotate(service)
    assert first["allowed"] and not second["allowed"]
    assert second["status"]["message"].startswith(
        'the budget shared by every experiment in namespace "team-a" (experiment "rot-2" '
        "among them) has spent $275.20 of the $300.00 budget for 2026-11"
    )


def test_the_shared_budget_warns_near_its_limit() -> None:
    # 1 × h100 × 36h = $247.68 of $300: 83%, above the 80% warning ratio
    service, _ = service_for(threshold_usd=HIGH, budget=budget(experiments=LISTED))
    admitted = answer(service, run("rot-1", gpus=1, runtime="36h"))
    assert admitted["allowed"]
    assert any(
        'shared budget of unlisted experiments in namespace "team-a"' in w
        and "now committed $247.68 of the $300.00 budget for 2026-11 (83%)" in w
        for w in admitted["warnings"]
    )


# --- default: the explicit opt-in -------------------------------------------------------------


def test_a_fresh_budget_per_label_only_when_the_policy_opts_in() -> None:
    service, state = service_for(
        threshold_usd=HIGH, budget=budget(experiments=LISTED, unlisted_experiments="default")
    )
    assert all(response["allowed"] for response in rotate(service))
    for experiment in ROTATIONS:
        assert state.spent("team-a", experiment, PERIOD) == pytest.approx(RUN)
    # and each of them has its own $300: a second run of rot-1 passes it
    assert not answer(service, run("rot-1"))["allowed"]


# --- the namespace's budget of all experiments ------------------------------------------------


def test_a_namespace_budget_caps_every_experiment_together() -> None:
    # fresh $300 per label (opted in), but $600 for the namespace: the third rotation passes it
    service, _ = service_for(
        threshold_usd=HIGH,
        budget=budget(experiments=LISTED, unlisted_experiments="default", namespace_usd=600),
    )
    first, second, third = rotate(service)
    assert first["allowed"] and second["allowed"] and not third["allowed"]
    assert third["status"]["message"] == (
        'namespace "team-a"\'s budget of all experiments has spent $550.40 of the $600.00 '
        'budget for 2026-11; Pod "train-rot-3" (experiment "rot-3", estimated $275.20) would '
        "exceed it by $225.60; use fewer GPUs or a shorter costgate.io/max-runtime, or ask the "
        "platform team to raise the namespace's budget"
    )
    # a listed experiment's own budget is inside the namespace's too
    assert not answer(service, run("llm-pretrain"))["allowed"]


def test_a_namespace_budget_alone_counts_workloads_without_an_experiment_label() -> None:
    service, _ = service_for(
        threshold_usd=HIGH, required_labels=["owner"], budget={"namespace_usd": 300}
    )
    unlabelled = pod(
        gpus=8,
        name="anonymous",
        namespace="team-a",
        labels={"owner": "alice"},
        annotations={"costgate.io/max-runtime": "5h"},
        spec={"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}},
    )
    assert answer(service, unlabelled)["allowed"]
    again = answer(service, unlabelled)  # another review of another object: no uid
    assert not again["allowed"] and "budget of all experiments" in again["status"]["message"]


def test_warn_mode_records_both_budgets_and_only_warns() -> None:
    service, state = service_for(threshold_usd=HIGH, mode="warn", budget=budget(namespace_usd=400))
    answers = rotate(service)
    assert all(response["allowed"] for response in answers)
    assert any("would be denied in enforce mode (over-budget)" in w for w in answers[1]["warnings"])
    assert state.spent("team-a", "rot-3", PERIOD) == pytest.approx(RUN)


# --- deny ---------------------------------------------------------------------------------------


DENY = {"experiments": {"llm-pretrain": 5000, "eval": 500}, "unlisted_experiments": "deny"}
DENIED = (
    'experiment "rot-1" has no budget in namespace "team-a", which budgets only experiments '
    "eval, llm-pretrain and denies the others; label the workload with one of those, or ask "
    'the platform team to add "rot-1" to the namespace\'s budget.experiments'
)


def test_deny_refuses_unlisted_experiments_and_names_the_listed_ones() -> None:
    service, state = service_for(threshold_usd=HIGH, budget=DENY)
    refused = answer(service, run("rot-1"))
    assert not refused["allowed"]
    assert refused["auditAnnotations"]["reasons"] == "over-budget"
    assert refused["status"]["message"] == DENIED
    assert state.spent("team-a", "rot-1", "lifetime") == 0
    assert answer(service, run("llm-pretrain"))["allowed"]


def test_in_warn_mode_an_unlisted_experiment_still_counts_in_the_namespace_budget() -> None:
    service, state = service_for(
        threshold_usd=HIGH, mode="warn", budget={**DENY, "namespace_usd": 400}
    )
    warned = answer(service, run("rot-1"))
    assert warned["allowed"]
    assert any("would be denied in enforce mode (over-budget)" in w for w in warned["warnings"])
    assert state.spent("team-a", "rot-1", "lifetime") == pytest.approx(RUN)
    second = answer(service, run("rot-2"))
    assert any("budget of all experiments has spent $275.20" in w for w in second["warnings"])


def nightly_cronjob() -> bytes:
    """The captured CronJob (8 × H100, experiment finetune-nightly), nightly, 25 min a run."""
    body = json.loads(
        (FIXTURES / "admission-kinds" / "validate-cronjob-create-gpu.json").read_text()
    )
    spec = body["request"]["object"]["spec"]
    spec.update(schedule="0 2 * * *", concurrencyPolicy="Forbid")
    spec["jobTemplate"]["spec"]["activeDeadlineSeconds"] = 1500
    return orjson.dumps(body)


def test_a_schedule_of_an_unlisted_experiment_is_denied_where_those_are_denied() -> None:
    service, _ = service_for(budget=DENY)
    refused = orjson.loads(service.handle(nightly_cronjob(), "validate").body)["response"]
    assert not refused["allowed"]
    assert refused["auditAnnotations"]["reasons"] == "over-budget"
    assert refused["status"]["message"].startswith(
        'experiment "finetune-nightly" has no budget in namespace "capture"'
    )
    # listed, it passes: its runs are charged one by one, not the schedule
    listed = {**DENY, "experiments": {**DENY["experiments"], "finetune-nightly": 1}}
    service, _ = service_for(budget=listed)
    assert orjson.loads(service.handle(nightly_cronjob(), "validate").body)["response"]["allowed"]


def test_the_policy_refuses_budgets_that_cannot_mean_what_they_say() -> None:
    def refusal(**fields: Any) -> str:
        with pytest.raises(TableError) as caught:
            parse_policy({**policy_data(), "budget": fields}, "policy.yaml")
        return str(caught.value)

    assert "deny needs experiments listed" in refusal(unlisted_experiments="deny")
    assert "no amount applies to them" in refusal(usd=300, **DENY)
    assert "unlisted_experiments" in refusal(unlisted_experiments="fresh")
    assert "namespace_usd" in refusal(namespace_usd=-1)


# --- costgate estimate (no ledger) ------------------------------------------------------------


@pytest.mark.parametrize(
    "budget_",
    [DENY, budget(experiments=LISTED), budget(namespace_usd=300)],
    ids=["deny", "share", "namespace"],
)
def test_costgate_estimate_agrees_with_the_server_on_an_empty_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], budget_: dict[str, Any]
) -> None:
    obj = run("rot-1")
    policy = {"threshold_usd": HIGH, "budget": budget_}
    manifest, policy_file = tmp_path / "pod.yaml", tmp_path / "policy.yaml"
    manifest.write_text(yaml.safe_dump(obj))
    policy_file.write_text(yaml.safe_dump({**policy_data(), **policy}))
    code = main(["estimate", "-f", str(manifest), "--policy", str(policy_file), "-o", "json"])
    row = json.loads(capsys.readouterr().out)[0]
    service, _ = service_for(**policy)
    server = answer(service, obj)
    assert (code == 0, row["allowed"]) == (server["allowed"], server["allowed"])
    messages = [reason["message"] for reason in row["reasons"]]
    assert messages == ([] if server["allowed"] else [server["status"]["message"]])


def test_costgate_estimate_denies_an_unlisted_experiment_without_a_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest, policy_file = tmp_path / "pod.yaml", tmp_path / "policy.yaml"
    manifest.write_text(yaml.safe_dump(run("rot-1")))
    policy_file.write_text(yaml.safe_dump({**policy_data(), "threshold_usd": HIGH, "budget": DENY}))
    code = main(["estimate", "-f", str(manifest), "--policy", str(policy_file), "-o", "json"])
    row = json.loads(capsys.readouterr().out)[0]
    assert (code, row["reasons"]) == (1, [{"code": "over-budget", "message": DENIED}])


# --- the ledger: one document write checks both budgets ---------------------------------------


def test_the_ledger_refuses_a_charge_that_passes_the_namespace_budget() -> None:
    doc: dict[str, Any] = {"spent": {f"rot-1/{PERIOD}": 250.0}, "pending": {}}
    charge = BudgetCharge("team-a", "rot-2", PERIOD, 100.0, 300.0, namespace_limit=300.0)
    refused, spent, which = with_charge(doc, charge, "uid-2", 1.0)
    assert (refused, spent, which) == (None, 250.0, 1)  # the namespace's, the second budget
    shared = charge._replace(listed=frozenset({"llm-pretrain"}), namespace_limit=None)
    refused, spent, which = with_charge(doc, shared, "uid-2", 1.0)
    assert (refused, spent, which) == (None, 250.0, 0)  # the shared one of unlisted experiments
    # another period, or a listed experiment, is not in the shared budget
    doc["spent"] = {"rot-1/2026-10": 250.0, f"llm-pretrain/{PERIOD}": 250.0}
    admitted, _, _ = with_charge(doc, shared, "uid-2", 1.0)
    assert admitted is not None and spent_in(admitted, f"rot-2/{PERIOD}") == 100.0


LEDGER_NS = "costgate-system"


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval=0.2) as server:
        yield server


def test_two_replicas_racing_on_the_namespace_budget_never_pass_it(api: FakeApiServer) -> None:
    """Two replicas (own clients, own caches, own ledgers) admit 12 pods each at once, every
    one under a new experiment label (each with a fresh $1,000 by opt-in), against a
    namespace budget of $100: 14 × $6.88 = $96.32 fit, and not one more."""
    policy = policy_with(
        budget={"usd": 1000, "unlisted_experiments": "default", "namespace_usd": 100}
    )
    config = Config(table=load_pricing(), policy=policy)
    replicas: list[State] = []
    try:
        for _ in range(2):
            state = cluster_state(
                lambda: config, ledger_namespace=LEDGER_NS, api_client=api.client()
            )
            assert state.cluster is not None
            state.cluster.start()
            replicas.append(state)
            assert state.cluster.wait_synced(10)
        services = [AdmissionService(config, state=state) for state in replicas]
        barrier = threading.Barrier(len(services))
        answers: list[dict[str, Any]] = []
        lock = threading.Lock()

        def admit(index: int, service: AdmissionService) -> None:
            barrier.wait()
            for n in range(12):
                obj = gpu_pod(1, runtime="1h", experiment=f"rot-{index}-{n}", name=f"p{index}-{n}")
                obj["metadata"]["uid"] = f"uid-{index}-{n}"
                body = service.handle(review(obj), "validate").body
                with lock:
                    answers.append(orjson.loads(body)["response"])

        threads = [threading.Thread(target=admit, args=(i, s)) for i, s in enumerate(services)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for state in replicas:
            assert state.cluster is not None
            state.cluster.stop()
    admitted = [a for a in answers if a["allowed"]]
    refused = [a for a in answers if not a["allowed"]]
    assert len(admitted) == 14
    assert {a["auditAnnotations"]["reasons"] for a in refused} == {"over-budget"}
    assert all("budget of all experiments" in a["status"]["message"] for a in refused)
    stored = api.get("configmaps", LEDGER_NS, "costgate-ledger-team-a")
    doc = orjson.loads(stored["data"]["ledger.json"])
    assert len(doc["pending"]) == 14
    assert sum(usd for _, usd, _ in doc["pending"].values()) == pytest.approx(96.32)


# --- /status shows which budget applies -------------------------------------------------------


def test_status_shows_the_namespace_budget_and_the_shared_one() -> None:
    # over their lifetime: the app reads the real clock, and a month could turn mid-test
    lifetime = budget(experiments=LISTED, namespace_usd=6000, period="lifetime")
    policy = policy_with(threshold_usd=HIGH, budget=lifetime)
    state = memory_state()
    app = build_app(
        Config(table=load_pricing(), policy=policy), max_body_bytes=3 * 1024 * 1024, state=state
    )

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            for experiment in ("rot-1", "llm-pretrain"):
                validated = await http.post("/validate", content=review(run(experiment)))
                assert validated.json()["response"]["allowed"]
            return await http.get("/status", params={"namespace": "team-a"})

    [row] = asyncio.run(call()).json()["namespaces"]
    assert row["namespace_budget"] == {
        "period": "lifetime",
        "spent_usd": pytest.approx(2 * RUN),
        "budget_usd": 6000,
    }
    assert row["shared_budget"] == {"period": "lifetime", "spent_usd": RUN, "budget_usd": 300}
    assert [(b["experiment"], b["draws_on"], b["budget_usd"]) for b in row["budgets"]] == [
        ("llm-pretrain", "own", 5000),
        ("rot-1", "shared", None),
    ]
    text = render_status(usage_report(state, policy, now=time.time()))
    rows = [line.split("  ") for line in text.splitlines()]
    assert [[cell.strip() for cell in row if cell.strip()] for row in rows[-4:]] == [
        ["team-a", "(all experiments)", "lifetime", "$550.40 of $6,000.00 (9%)", "$6,000.00"],
        ["team-a", "(unlisted)", "lifetime", "$275.20 of $300.00 (92%)", "$300.00"],
        ["team-a", "llm-pretrain", "lifetime", "$275.20 of $5,000.00 (6%)", "$5,000.00"],
        ["team-a", "rot-1", "lifetime", "$275.20", "shared"],
    ]
