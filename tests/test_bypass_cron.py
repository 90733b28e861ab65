"""CronJobs and CronWorkflows are priced by their schedule, and each run is charged (issue #13,
item 4).

A CronJob with `schedule: "* * * * *"` and `concurrencyPolicy: Allow` was priced as one run,
and every Job the CronJob controller then created was admitted as "already priced" and
charged to no budget: through a real API server, two 8-GPU Jobs ran after 75 s, one more each
minute. A schedule is now priced as what it can spend in a month (runs a month × one run,
never more than the runs that can overlap running all month) against the monthly threshold;
each run the controller creates is priced as one run, checked against quotas and budgets and
charged, but not held to the per-run threshold again. The captures are the real reviews of
that experiment (tests/fixtures/admission-kinds); everything goes through
`AdmissionService.handle` or `costgate estimate`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from tests.support.config import policy_with
from tests.support.fakeapi import FakeApiServer
from tests.support.paths import FIXTURES
from tests.support.polling import eventually
from tests.support.services import service_for
from webhook.cli import main
from webhook.core.engine import Config
from webhook.service import AdmissionService
from webhook.state.cluster import cluster_state
from webhook.state.ledger import budget_key, spent_in
from webhook.tables import load_pricing

KINDS = FIXTURES / "admission-kinds"
CRONJOB_SA = "system:serviceaccount:kube-system:cronjob-controller"
ARGO_SA = "system:serviceaccount:argo:argo"
H100 = 6.88  # $/h, the bundled table's h100-80gb (the captures pin it by GKE's label)
MONTH_HOURS = 730


def captured(name: str) -> dict[str, Any]:
    return json.loads((KINDS / f"{name}.json").read_text())


def cronjob_review(
    schedule: str = "* * * * *",
    policy: str = "Allow",
    *,
    deadline: int = 1500,
    gpus: int = 8,
    **spec: Any,
) -> dict[str, Any]:
    """The captured CronJob (8 × H100, labelled) with its schedule and run deadline set."""
    body = captured("validate-cronjob-create-gpu")
    obj = body["request"]["object"]
    obj["spec"].update(schedule=schedule, concurrencyPolicy=policy, **spec)
    job = obj["spec"]["jobTemplate"]["spec"]
    job["activeDeadlineSeconds"] = deadline
    job["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = str(gpus)
    return body


def send(service: AdmissionService, body: dict[str, Any], endpoint: str = "validate"):
    result = service.handle(orjson.dumps(body), endpoint)  # type: ignore[arg-type]
    assert result.status == 200
    return orjson.loads(result.body)["response"]


def cost(response: dict[str, Any]) -> float:
    return float(response["auditAnnotations"]["estimated-cost-usd"])


@pytest.fixture
def service() -> AdmissionService:
    return service_for()[0]


# --- the CronJob is priced by its schedule ---------------------------------------------------


def test_the_issues_every_minute_cronjob_is_denied_at_the_cronjob(service) -> None:
    # One run: 8 × H100 × 25 min = $22.93, under the $100 threshold: it used to pass. A
    # minute schedule that lets runs overlap keeps 25 of them running at once, all month.
    run = 8 * H100 * 25 / 60
    response = send(service, cronjob_review("* * * * *", "Allow", deadline=1500))
    assert not response["allowed"]
    assert response["auditAnnotations"]["reasons"] == "over-threshold"
    message = response["status"]["message"]
    assert message.startswith(
        'CronJob "nightly-finetune" runs 43,800 times a month ("* * * * *"), up to 25 at once: '
    )
    assert 'over the $2,000.00 monthly limit for namespace "capture"' in message
    assert cost(response) == pytest.approx(min(43_800 * round(run, 2), 25 * 8 * H100 * 730))
    assert f"(43,800 runs × ${run:,.2f} (8 × h100-80gb at $6.88/h × 25m))" in message


def test_the_captured_cronjob_one_run_at_a_time_is_still_a_month_of_gpus(service) -> None:
    # as captured: every minute, Forbid, 6 h runs: one run at a time, never idle
    response = send(service, captured("validate-cronjob-create-gpu"))
    assert not response["allowed"]
    assert cost(response) == pytest.approx(8 * H100 * MONTH_HOURS)
    assert "1 at a time" in response["status"]["message"]


def test_a_nightly_cronjob_is_allowed_with_its_monthly_cost_shown(service) -> None:
    run = round(1 * H100 * 2, 2)  # 1 × H100 × 2 h
    response = send(service, cronjob_review("0 2 * * *", "Forbid", deadline=7200, gpus=1))
    assert response["allowed"]
    month = round(run * 730 / 24, 2)  # a run every night: 30.4 a month
    assert cost(response) == pytest.approx(month)
    assert response["warnings"][0] == (
        f"costgate: estimated cost ${month:,.2f}/month "
        f"(30.4 runs × ${run:,.2f} (1 × h100-80gb at $6.88/h × 2h))"
    )


def test_a_suspended_cronjob_is_priced_all_the_same(service) -> None:
    body = cronjob_review("* * * * *", "Allow", suspend=True)
    response = send(service, body)
    assert not response["allowed"] and "43,800 times a month" in response["status"]["message"]


@pytest.mark.parametrize("policy", ["Allow", "Forbid", "Replace"])
def test_forbid_and_replace_run_one_at_a_time_allow_as_many_as_overlap(
    service, policy: str
) -> None:
    # hourly runs of 3 h of one T4: with Allow three overlap all month (730 runs of 3 h,
    # $2,138.90, above $2,000), one at a time a T4 for 730 h ($713.94)
    body = cronjob_review("0 * * * *", policy, deadline=3 * 3600, gpus=1)
    pod = body["request"]["object"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    pod["nodeSelector"] = {"nvidia.com/gpu.product": "Tesla-T4"}
    response = send(service, body)
    t4 = load_pricing().gpus["t4"].usd_per_hour
    if policy == "Allow":
        assert cost(response) == pytest.approx(730 * round(3 * t4, 2))
        assert not response["allowed"]
        assert "up to 3 at once" in response["status"]["message"]
    else:
        assert cost(response) == pytest.approx(round(t4 * MONTH_HOURS, 2))
        assert response["allowed"]


def test_the_time_zone_counts_the_hour_clocks_repeat(service) -> None:
    utc = cost(send(service, cronjob_review("0 * * * *", "Forbid", deadline=600, gpus=1)))
    berlin_body = cronjob_review("0 * * * *", "Forbid", deadline=600, gpus=1)
    berlin_body["request"]["object"]["spec"]["timeZone"] = "Europe/Berlin"
    berlin = cost(send(service, berlin_body))
    one_run = round(H100 * 600 / 3600, 2)
    assert utc == pytest.approx(730 * one_run)
    assert berlin == pytest.approx(731 * one_run)  # the repeated hour, once a month at most
    # a zone without daylight saving counts as UTC does
    tokyo_body = cronjob_review("0 * * * *", "Forbid", deadline=600, gpus=1)
    tokyo_body["request"]["object"]["spec"]["timeZone"] = "Asia/Tokyo"
    assert cost(send(service, tokyo_body)) == pytest.approx(utc)


@pytest.mark.parametrize(
    ("edit", "field", "words"),
    [
        ({"timeZone": "Mars/Olympus_Mons"}, "spec.timeZone", "not a time zone"),
        ({"schedule": "61 * * * *"}, "spec.schedule", "out of range"),
        ({"schedule": "0 2 * *"}, "spec.schedule", "4 fields, not 5"),
        ({"schedule": "H 2 * * *"}, "spec.schedule", "H, L, W and # are not supported"),
        ({"schedule": "0 0 L * *"}, "spec.schedule", "H, L, W and # are not supported"),
        ({"schedule": "@every soon"}, "spec.schedule", "@every takes a duration"),
        ({"schedule": "@fortnightly"}, "spec.schedule", "is not a schedule"),
        ({"schedule": 5}, "spec.schedule", "must be string"),
        ({"concurrencyPolicy": "Sometimes"}, "spec.concurrencyPolicy", "Allow, Forbid, Replace"),
        ({"schedule": "0 " * 600}, "spec.schedule", "too long"),
    ],
)
def test_a_schedule_that_cannot_be_read_is_a_clear_400(
    service, edit: dict[str, Any], field: str, words: str
) -> None:
    body = cronjob_review("0 2 * * *", "Forbid")
    body["request"]["object"]["spec"].update(edit)
    for endpoint in ("mutate", "validate"):
        response = send(service, body, endpoint)
        assert not response["allowed"]
        assert response["status"]["code"] == 400
        message = response["status"]["message"]
        assert message.startswith(field) or f"field {field} " in message, message
        assert words in message


@pytest.mark.parametrize(
    ("schedule", "runs"),
    [("@hourly", 730), ("@daily", 30.4), ("@weekly", 5), ("@monthly", 1), ("@every 6h", 121.7)],
)
def test_macros_and_every(service, schedule: str, runs: float) -> None:
    body = cronjob_review(schedule, "Forbid", deadline=600, gpus=1)
    response = send(service, body)
    one_run = round(H100 * 600 / 3600, 2)
    assert cost(response) == pytest.approx(runs * one_run, rel=2e-3)


def test_runs_that_can_overlap_must_fit_the_quota_at_all() -> None:
    # 25 overlapping runs × 8 GPUs can never fit 64: refused at the CronJob, not run by run
    service, _ = service_for(quota={"max_gpus": 64}, serving_threshold_usd_per_month=10**9)
    response = send(service, cronjob_review("* * * * *", "Allow", deadline=1500))
    assert not response["allowed"]
    assert response["auditAnnotations"]["reasons"] == "over-quota"
    assert 'CronJob "nightly-finetune" adds 200' in response["status"]["message"]
    assert send(service, cronjob_review("* * * * *", "Forbid", deadline=1500))["allowed"]


# --- each run is charged ---------------------------------------------------------------------


def run_review(n: int, username: str = CRONJOB_SA) -> dict[str, Any]:
    """The captured Job the CronJob controller created (8 × H100 × 6 h = $330.24), as its
    n-th run."""
    body = captured("validate-job-create-by-cronjob-controller")
    body["request"]["uid"] = f"review-{n}"
    body["request"]["userInfo"]["username"] = username
    metadata = body["request"]["object"]["metadata"]
    metadata["name"] = f"nightly-finetune-{29938657 + n}"
    metadata["uid"] = f"run-{n}"
    return body


RUN = 8 * H100 * 6  # $330.24


def test_each_run_the_controller_creates_is_charged_to_its_experiment() -> None:
    # the experiment's own $700 (unlisted ones share one by default: experiment rotation)
    service, state = service_for(budget={"usd": 700, "unlisted_experiments": "default"})
    for n in (1, 2):
        response = send(service, run_review(n))
        assert response["allowed"]  # above the $100 per-run threshold, and not gated again
        assert cost(response) == pytest.approx(RUN)
    assert state.spent("capture", "finetune-nightly", "lifetime") == pytest.approx(2 * RUN)
    third = send(service, run_review(3))
    assert not third["allowed"]
    assert third["auditAnnotations"]["reasons"] == "over-budget"
    message = third["status"]["message"]
    assert 'experiment "finetune-nightly" in namespace "capture" has spent $660.48' in message
    assert 'FailedCreate event on CronJob "nightly-finetune"' in message
    assert state.spent("capture", "finetune-nightly", "lifetime") == pytest.approx(2 * RUN)


def test_runs_are_charged_in_the_cluster_ledger_and_the_watch_counts_them() -> None:
    # the shipped state: the ConfigMap ledger and the watch cache, through the real client
    with FakeApiServer(bookmark_interval=0.2) as api:
        config = Config(table=load_pricing(), policy=policy_with(budget={"usd": 700}))
        state = cluster_state(
            lambda: config, ledger_namespace="costgate-system", api_client=api.client()
        )
        assert state.cluster is not None
        state.cluster.start()
        try:
            assert state.cluster.wait_synced(10)
            service = AdmissionService(config, state=state)
            first = run_review(1)
            # the API server names the object's uid before admission, and stores it after
            stored_job = api.create("jobs", copy.deepcopy(first["request"]["object"]))
            first["request"]["object"]["metadata"]["uid"] = stored_job["metadata"]["uid"]
            assert send(service, first)["allowed"]
            assert send(service, run_review(2))["allowed"]
            denied = send(service, run_review(3))
            assert not denied["allowed"]
            assert "FailedCreate" in denied["status"]["message"]
            stored = api.get("configmaps", "costgate-system", "costgate-ledger-capture")
            ledger = orjson.loads(stored["data"]["ledger.json"])
            assert state.spent("capture", "finetune-nightly", "lifetime") == pytest.approx(2 * RUN)
            key = budget_key("finetune-nightly", "lifetime")
            assert spent_in(ledger, key) == pytest.approx(2 * RUN)  # in the ConfigMap itself
            eventually(lambda: state.namespace_totals("capture").gpus == 16)  # not 24
        finally:
            state.cluster.stop()


def test_runs_hold_the_quota_while_they_run() -> None:
    service, state = service_for(quota={"max_gpus": 16})
    assert send(service, run_review(1))["allowed"]
    assert send(service, run_review(2))["allowed"]
    assert state.namespace_totals("capture").gpus == 16
    third = send(service, run_review(3))
    assert not third["allowed"] and third["auditAnnotations"]["reasons"] == "over-quota"
    assert "kubectl describe cronjob" in third["status"]["message"]


def test_a_dry_run_of_a_run_charges_nothing() -> None:
    service, state = service_for(budget={"usd": 700})
    body = run_review(1)
    body["request"]["dryRun"] = True
    assert send(service, body)["allowed"]
    assert state.spent("capture", "finetune-nightly", "lifetime") == 0


def test_an_owner_reference_alone_does_not_make_a_run(service) -> None:
    # the same Job from a person: gated per run like any Job ($330.24 > $100)
    response = send(service, run_review(1, username="alice"))
    assert not response["allowed"]
    assert response["auditAnnotations"]["reasons"] == "over-threshold"


def test_the_pod_of_a_run_is_not_priced_again(service) -> None:
    response = send(service, captured("validate-pod-create-by-job-controller-cronjob"))
    assert response["allowed"] and "estimated-cost-usd" not in response.get("auditAnnotations", {})


# --- CronWorkflows ------------------------------------------------------------------------------


def cronworkflow_review() -> dict[str, Any]:
    from tests.support.captures import capture

    return capture("validate-cronworkflow-create")


def argo_run(n: int) -> dict[str, Any]:
    """The Workflow Argo's controller creates for the captured CronWorkflow."""
    body = cronworkflow_review()
    request = body["request"]
    cron = request["object"]
    workflow = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            "name": f"nightly-gpu-eval-{n}",
            "namespace": "demo",
            "uid": f"wf-{n}",
            "labels": {**cron["metadata"]["labels"], "workflows.argoproj.io/cron-workflow": "x"},
            "ownerReferences": [
                {
                    "apiVersion": "argoproj.io/v1alpha1",
                    "kind": "CronWorkflow",
                    "name": "nightly-gpu-eval",
                    "uid": cron["metadata"]["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": copy.deepcopy(cron["spec"]["workflowSpec"]),
    }
    request.update(
        uid=f"wf-review-{n}",
        kind={"group": "argoproj.io", "version": "v1alpha1", "kind": "Workflow"},
        resource={"group": "argoproj.io", "version": "v1alpha1", "resource": "workflows"},
        name=workflow["metadata"]["name"],
        object=workflow,
        userInfo={"username": ARGO_SA},
    )
    return body


GB200_RUN = 27.04 * 2  # 1 GPU nothing pins (the dearest, gb200) × 2 h


def test_the_captured_nightly_cronworkflow_is_priced_per_month(service) -> None:
    response = send(service, cronworkflow_review())
    assert response["allowed"]
    assert cost(response) == pytest.approx(round(GB200_RUN * 730 / 24, 2))
    assert response["warnings"][0].startswith("costgate: estimated cost $1,644.93/month (30.4 runs")


def test_a_cronworkflow_every_minute_is_denied(service) -> None:
    body = cronworkflow_review()
    spec = body["request"]["object"]["spec"]
    spec["schedules"] = ["0 2 * * *", "*/5 * * * *"]
    spec["concurrencyPolicy"] = "Allow"
    response = send(service, body)
    assert not response["allowed"]
    message = response["status"]["message"]
    assert '("0 2 * * *", "*/5 * * * *"), up to 25 at once' in message


def test_a_cronworkflow_with_endless_schedules_is_a_clear_400(service) -> None:
    body = cronworkflow_review()
    body["request"]["object"]["spec"]["schedules"] = [f"{i % 60} * * * *" for i in range(5000)]
    response = send(service, body)
    assert response["status"]["code"] == 400
    assert "5,000 schedules, more than the 100" in response["status"]["message"]


def test_a_bad_entry_of_schedules_is_named(service) -> None:
    body = cronworkflow_review()
    body["request"]["object"]["spec"]["schedules"] = ["0 2 * * *", "0 25 * * *"]
    response = send(service, body)
    assert response["status"]["code"] == 400
    assert response["status"]["message"].startswith('spec.schedules[1] "0 25 * * *"')


def test_each_workflow_argo_creates_for_a_cronworkflow_is_charged() -> None:
    service, state = service_for(budget={"usd": 120})
    assert send(service, argo_run(1))["allowed"]
    assert send(service, argo_run(2))["allowed"]
    assert state.spent("demo", "nightly-eval", "lifetime") == pytest.approx(2 * GB200_RUN)
    third = send(service, argo_run(3))
    assert not third["allowed"]
    assert (
        'SubmissionError condition on CronWorkflow "nightly-gpu-eval"'
        in (third["status"]["message"])
    )


# --- costgate estimate agrees ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "policy", "allowed"),
    [("* * * * *", "Allow", False), ("0 2 * * *", "Forbid", True)],
)
def test_costgate_estimate_prices_a_schedule_as_the_server_does(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    service: AdmissionService,
    schedule: str,
    policy: str,
    allowed: bool,
) -> None:
    body = cronjob_review(schedule, policy, deadline=7200, gpus=1)
    obj = body["request"]["object"]
    manifest = tmp_path / "cronjob.yaml"
    manifest.write_text(yaml.safe_dump({"apiVersion": "batch/v1", "kind": "CronJob", **obj}))
    code = main(["estimate", "-f", str(manifest), "-o", "json"])
    [row] = json.loads(capsys.readouterr().out)
    server = send(service, body)
    assert row["allowed"] is server["allowed"] is allowed
    assert code == (0 if allowed else 1)
    assert row["cost_usd"] == cost(server)
    assert row["per_month"] is True
    if not allowed:
        assert row["reasons"][0]["message"] == server["status"]["message"]
