"""An approval is a spend allowance (issue #13, item 6).

A token for `max_usd: 2000` admitted any number of workloads each under $2,000: three Jobs
of $1,320 went through on one approval, the third submitted by another user who copied the
annotation. Now what is admitted under one token id (`jti`) is added up in the ledger, in
the same document write as the budget charge, and a workload that would take the total past
`max_usd` is refused with `invalid-approval`, naming what the token already admitted;
`costgate approve --uses N` also caps the number of workloads.

Every Job here is 8 × h100-80gb at $6.88/h for 24h: 8 × 6.88 × 24 = $1,320.96 (the
bundled threshold is $100, so each needs the approval). The approver is dana; the Jobs are
owned by bob and submitted by bob or carol, so no self-approval rule is involved.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.builders import H100, pod
from tests.support.config import policy_with
from tests.support.fakeapi import FakeApiServer
from tests.support.polling import eventually
from tests.support.services import Clock, service_for
from webhook.approvals import Keyring, keygen, mint
from webhook.cli import main
from webhook.core.engine import Config
from webhook.core.types import Approval
from webhook.core.usage import AllowanceCharge
from webhook.service import AdmissionService
from webhook.state import State
from webhook.state.cluster import cluster_state
from webhook.state.ledger import GRACE_SECONDS, allowance_in, reconciled, with_allowance
from webhook.tables import load_pricing

JOB_USD = 1320.96  # 8 × $6.88/h × 24h
LEDGER_NS = "costgate-system"
NOW = Clock().now


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(dana's private key, the directory of approvers' public keys)."""
    root = tmp_path_factory.mktemp("approvers")
    pair = keygen("dana", root / "private")
    (root / "public").mkdir()
    (root / "public" / pair.public_path.name).write_bytes(pair.public_path.read_bytes())
    return pair.private_path, root / "public"


def approval(keys: tuple[Path, Path], max_usd: float, **kw: Any) -> str:
    """dana's approval of experiment exp-1 in team-a, valid for a day around NOW."""
    return mint(
        keys[0],
        namespace="team-a",
        experiment="exp-1",
        max_usd=max_usd,
        expires_in=86400,
        now=kw.pop("now", time.time()),
        **kw,
    )


def verified(keys: tuple[Path, Path], token: str) -> Approval:
    claims = Keyring(keys[1]).verify(token)
    assert isinstance(claims, Approval), claims
    return claims


def job(
    name: str, token: str, *, runtime: str = "24h", suspend: bool = False, owner: str = "bob"
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "template": {
            "spec": {
                "restartPolicy": "Never",
                "nodeSelector": H100,
                "containers": [
                    {"name": "main", "image": "x", "resources": {"limits": {"nvidia.com/gpu": 8}}}
                ],
            }
        }
    }
    if suspend:
        spec["suspend"] = True
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": "team-a",
            "uid": f"uid-{name}",
            "labels": {"owner": owner, "experiment": "exp-1"},
            "annotations": {"costgate.io/max-runtime": runtime, "costgate.io/approval": token},
        },
        "spec": spec,
    }


_reviews = iter(range(10**6))


def body(
    obj: dict[str, Any], *, user: str = "bob", old: dict[str, Any] | None = None, uid: str = ""
) -> bytes:
    request: dict[str, Any] = {
        "uid": uid or f"review-{next(_reviews)}",
        "kind": {"group": "batch", "version": "v1", "kind": "Job"},
        "resource": {"group": "batch", "version": "v1", "resource": "jobs"},
        "namespace": "team-a",
        "name": obj["metadata"]["name"],
        "operation": "UPDATE" if old is not None else "CREATE",
        "userInfo": {"username": user},
        "object": obj,
    }
    if old is not None:
        request["oldObject"] = old
    return orjson.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                         "request": request})  # fmt: skip


def send(service: AdmissionService, obj: dict[str, Any], **kw: Any) -> dict[str, Any]:
    """/validate's response to a CREATE of `obj` (or an UPDATE from `old`)."""
    answer = service.handle(body(obj, **kw), "validate")
    assert answer.status == 200
    response: dict[str, Any] = orjson.loads(answer.body)["response"]
    return response


def denial(response: dict[str, Any]) -> tuple[bool, str, str]:
    return (
        response["allowed"],
        response.get("auditAnnotations", {}).get("reasons", ""),
        response.get("status", {}).get("message", ""),
    )


def memory_service(keys: tuple[Path, Path], **policy: Any) -> tuple[AdmissionService, State]:
    return service_for(Clock(time.time()), verify=Keyring(keys[1]).verify, **policy)


# -- the attack of the issue -----------------------------------------------------------------


def test_three_jobs_under_one_token_stop_at_its_maximum(keys) -> None:
    # $3,000 covers two Jobs ($2,641.92); the third would take it to $3,962.88
    service, _ = memory_service(keys)
    token = approval(keys, 3000)
    assert send(service, job("a", token))["allowed"]
    assert send(service, job("b", token))["allowed"]
    allowed, code, message = denial(send(service, job("c", token)))
    assert (allowed, code) == (False, "invalid-approval")
    assert "allows $3,000.00 in all" in message
    assert '$2,641.92 is already admitted under it by Job "a" ($1,320.96) and Job "b"' in message
    assert 'this Job "c" needs $1,320.96 more, $962.88 past it' in message
    assert 'ask "dana" for a new approval (costgate approve ...)' in message


def test_a_copied_annotation_draws_on_the_same_allowance(keys) -> None:
    # bob's $2,000 approval covers his one Job; carol copies the annotation onto hers
    service, _ = memory_service(keys)
    token = approval(keys, 2000)
    assert send(service, job("bobs", token), user="bob")["allowed"]
    copied = send(service, job("carols", token, owner="carol"), user="carol")
    allowed, code, message = denial(copied)
    assert (allowed, code) == (False, "invalid-approval")
    assert 'already admitted under it by Job "bobs" ($1,320.96)' in message


def test_another_token_is_another_allowance(keys) -> None:
    service, _ = memory_service(keys)
    assert send(service, job("a", approval(keys, 2000)))["allowed"]
    assert send(service, job("b", approval(keys, 2000)))["allowed"]


def test_uses_caps_the_number_of_workloads(keys, tmp_path: Path, capsys) -> None:
    code = main(
        ["approve", "--key", str(keys[0]), "--namespace", "team-a", "--experiment", "exp-1",
         "--max-cost", "10000", "--expires", "1d", "--uses", "1"]
    )  # fmt: skip
    assert code == 0
    token = capsys.readouterr().out.split()[0]
    assert verified(keys, token).uses == 1
    service, _ = memory_service(keys)
    assert send(service, job("first", token))["allowed"]
    allowed, reason, message = denial(send(service, job("second", token)))
    assert (allowed, reason) == (False, "invalid-approval")
    assert 'admits one workload, and it admitted Job "first"' in message
    # the one workload it admitted may still be updated under it
    longer = job("first", token, runtime="36h")
    assert send(service, longer, old=job("first", token))["allowed"]


def test_uses_must_be_positive(keys, capsys) -> None:
    code = main(
        ["approve", "--key", str(keys[0]), "--namespace", "team-a", "--experiment", "exp-1",
         "--max-cost", "10", "--expires", "1d", "--uses", "0"]
    )  # fmt: skip
    assert code == 2
    assert "--uses must be a positive number" in capsys.readouterr().err


def test_a_retried_review_is_not_counted_twice(keys) -> None:
    # the API server retries a webhook call that timed out: same object, same uid
    service, state = memory_service(keys)
    token = approval(keys, 2000)
    first = send(service, job("a", token), uid="review-retried")
    again = send(service, job("a", token), uid="review-retried")
    assert first["allowed"] and again["allowed"]
    jti = verified(keys, token).jti
    assert list(state.allowance_use("team-a", jti)) == ["uid-a"]
    # and the allowance still holds: $1,320.96 of $2,000 used
    assert not send(service, job("b", token))["allowed"]


def test_an_update_charges_what_it_adds_and_a_resume_charges_a_new_run(keys) -> None:
    clock = Clock(time.time())
    service, state = service_for(clock, verify=Keyring(keys[1]).verify)
    token = approval(keys, 2000)
    jti = verified(keys, token).jti
    short = job("a", token, runtime="12h")
    assert send(service, short)["allowed"]
    longer = job("a", token)
    clock.now += 60
    assert send(service, longer, old=short)["allowed"]  # +$660.48: $1,320.96 in all
    used = state.allowance_use("team-a", jti)
    assert sum(e.usd for e in used.values()) == pytest.approx(JOB_USD)
    # a resume can spend the estimate again: $2,641.92 would pass $2,000
    suspended = job("a", token, suspend=True)
    clock.now += 60
    assert send(service, suspended, old=longer)["allowed"]
    clock.now += 60
    allowed, code, message = denial(send(service, longer, old=suspended))
    assert (allowed, code) == (False, "invalid-approval")
    assert 'by Job "a" ($1,320.96); this Job "a" needs $1,320.96 more' in message


def test_a_job_created_suspended_uses_its_approval_when_it_starts(keys) -> None:
    service, state = memory_service(keys)
    token = approval(keys, 2000)
    jti = verified(keys, token).jti
    suspended = job("a", token, suspend=True)
    assert send(service, suspended)["allowed"]
    assert not state.allowance_use("team-a", jti)
    assert send(service, job("a", token), old=suspended)["allowed"]
    assert sum(e.usd for e in state.allowance_use("team-a", jti).values()) == pytest.approx(JOB_USD)


def test_warn_mode_admits_past_the_allowance_and_records_it(keys) -> None:
    service, state = memory_service(keys, mode="warn")
    token = approval(keys, 2000)
    jti = verified(keys, token).jti
    assert send(service, job("a", token))["allowed"]
    warned = send(service, job("b", token))
    assert warned["allowed"]
    assert any(
        "would be denied in enforce mode (invalid-approval)" in w for w in warned["warnings"]
    )
    assert len(state.allowance_use("team-a", jti)) == 2


def test_a_dry_run_uses_nothing(keys) -> None:
    service, state = memory_service(keys)
    token = approval(keys, 2000)
    jti = verified(keys, token).jti
    doc = orjson.loads(body(job("a", token)))
    doc["request"]["dryRun"] = True
    answer = orjson.loads(service.handle(orjson.dumps(doc), "validate").body)["response"]
    assert answer["allowed"]
    assert not state.allowance_use("team-a", jti)


def test_serving_pods_are_each_held_to_the_maximum_not_added_up(keys) -> None:
    # A ReplicaSet's pods replace each other (rollouts, restarts), each priced per month:
    # 1 × h100 × 730h = $5,022.40/month, above the $2,000 serving threshold. Added up, a
    # $6,000 approval would run out at the first restart; each is held to it alone instead.
    service, state = memory_service(keys)
    token = approval(keys, 6000)
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "srv-1", "uid": "rs-1"}
    rs["controller"] = True
    for n in range(3):
        approved = {"costgate.io/approval": token}
        obj = pod(annotations=approved, owner=rs, spec={"nodeSelector": H100}, name=f"srv-1-{n}")
        obj["metadata"]["uid"] = f"pod-{n}"
        doc = orjson.loads(body(job("x", token)))
        doc["request"].update(
            kind={"group": "", "version": "v1", "kind": "Pod"},
            resource={"group": "", "version": "v1", "resource": "pods"},
            name=obj["metadata"]["name"],
            object=obj,
            userInfo={"username": "system:serviceaccount:kube-system:replicaset-controller"},
        )
        answer = orjson.loads(service.handle(orjson.dumps(doc), "validate").body)["response"]
        assert answer["allowed"], answer
        assert answer["auditAnnotations"]["estimated-cost-usd"] == "5022.40"
    assert not state.allowance_use("team-a", verified(keys, token).jti)


# -- the ledger --------------------------------------------------------------------------------


def test_an_expired_pending_entry_frees_its_allowance(keys) -> None:
    # admitted, then denied by a later webhook: the object never appears, and after the grace
    # period its charge no longer holds the allowance
    claims = verified(keys, approval(keys, 2000, now=NOW))
    charge = AllowanceCharge(claims, JOB_USD, 'Job "a"')
    doc, refusal = with_allowance({"spent": {}, "pending": {}}, charge, "uid-a", NOW)
    assert doc is not None and refusal is None
    again = charge._replace(what='Job "b"')
    assert with_allowance(doc, again, "uid-b", NOW + 1)[0] is None  # $2,641.92 > $2,000

    never: Any = lambda uid: False  # noqa: E731
    assert reconciled(doc, never, NOW + GRACE_SECONDS / 2) is None  # still within grace
    later = reconciled(doc, never, NOW + GRACE_SECONDS + 1)
    assert later is not None and not allowance_in(later, claims.jti)
    assert with_allowance(later, again, "uid-b", NOW + GRACE_SECONDS + 2)[0] is not None


def test_a_seen_object_keeps_its_charge_and_an_expired_token_is_forgotten(keys) -> None:
    claims = verified(keys, approval(keys, 2000, now=NOW))
    doc, _ = with_allowance({}, AllowanceCharge(claims, 10.0, 'Job "a"'), "uid-a", NOW)
    assert doc is not None
    confirmed = reconciled(doc, lambda uid: True, NOW + 1)
    assert confirmed is not None
    assert confirmed["approvals"][claims.jti]["spent"] == {"uid-a": ['Job "a"', 10.0]}
    assert dict(allowance_in(confirmed, claims.jti)) == {"uid-a": ('Job "a"', 10.0)}
    # a day after the token expired nothing can use it: its entries are dropped
    assert reconciled(confirmed, lambda uid: True, claims.expires_at + 3600) is None
    gone = reconciled(confirmed, lambda uid: True, claims.expires_at + 86400 + 1)
    assert gone is not None and "approvals" not in gone


# -- two replicas against the API server -------------------------------------------------------


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval=0.2) as server:
        yield server


@pytest.fixture
def started() -> Iterator[list[State]]:
    states: list[State] = []
    yield states
    for state in states:
        assert state.cluster is not None
        state.cluster.stop()


def replica(
    api: FakeApiServer, started: list[State], keys: tuple[Path, Path], **policy: Any
) -> tuple[AdmissionService, State]:
    """A webhook replica with its own client, watch cache and ledger cache."""
    config = Config(
        table=load_pricing(), policy=policy_with(**policy), verify_approval=Keyring(keys[1]).verify
    )
    state = cluster_state(lambda: config, ledger_namespace=LEDGER_NS, api_client=api.client())
    assert state.cluster is not None
    state.cluster.start()
    started.append(state)
    assert state.cluster.wait_synced(10)
    return AdmissionService(config, state=state), state


def stored_use(api: FakeApiServer, jti: str) -> dict[str, Any]:
    stored = api.get("configmaps", LEDGER_NS, "costgate-ledger-team-a")
    assert stored is not None
    doc = orjson.loads(stored["data"]["ledger.json"])
    return allowance_in(doc, jti)


def test_two_replicas_racing_for_the_last_dollars_never_overspend(
    api: FakeApiServer, started, keys
) -> None:
    """Two replicas admit 8 Jobs at once under a $3,000 token, through a storm of 409s:
    exactly two are admitted (each replica decided on its own stale cache), and the ledger
    holds exactly those two."""
    services = [replica(api, started, keys)[0] for _ in range(2)]
    token = approval(keys, 3000)
    jti = verified(keys, token).jti
    answers: dict[str, dict[str, Any]] = {}
    lock = threading.Lock()
    barrier = threading.Barrier(8)
    api.conflict_next(6)

    def submit(index: int) -> None:
        name = f"j{index}"
        barrier.wait()
        response = send(services[index % 2], job(name, token), user=f"user{index}")
        with lock:
            answers[name] = response

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    admitted = sorted(name for name, r in answers.items() if r["allowed"])
    assert len(admitted) == 2
    refused = [denial(r) for r in answers.values() if not r["allowed"]]
    assert {code for _, code, _ in refused} == {"invalid-approval"}
    assert all("already admitted under it by" in message for _, _, message in refused)
    assert sorted(stored_use(api, jti)) == [f"uid-{name}" for name in admitted]


def test_the_budget_and_the_approval_are_charged_in_one_write(
    api: FakeApiServer, started, keys
) -> None:
    """A Job refused by the approval's allowance leaves no budget charge behind, and one
    refused by the budget leaves no approval charge: one document, one write."""
    service, state = replica(api, started, keys, budget={"usd": 3000})
    token = approval(keys, 2000)
    jti = verified(keys, token).jti
    assert send(service, job("a", token))["allowed"]
    writes = len([r for r in api.requests if r[0] in ("POST", "PUT")])
    assert not send(service, job("b", token))["allowed"]  # the approval refuses
    assert len([r for r in api.requests if r[0] in ("POST", "PUT")]) == writes
    eventually(lambda: state.spent("team-a", "exp-1", "lifetime") == pytest.approx(JOB_USD))
    assert sorted(stored_use(api, jti)) == ["uid-a"]


def test_a_job_that_never_appears_frees_its_allowance_after_the_grace_period(
    api: FakeApiServer, started, keys
) -> None:
    service, state = replica(api, started, keys)
    assert state.cluster is not None
    token = approval(keys, 2000)
    jti = verified(keys, token).jti
    assert send(service, job("denied-later", token))["allowed"]  # never created
    assert not send(service, job("b", token))["allowed"]
    state.cluster.ledger.grace = 0.0
    time.sleep(0.01)
    state.cluster.reconcile()
    eventually(lambda: not state.allowance_use("team-a", jti))
    assert send(service, job("b", token))["allowed"]


def test_an_unreachable_ledger_follows_the_policy(api: FakeApiServer, started, keys) -> None:
    # no quota or budget in the namespace: the approval alone needs the ledger
    token = approval(keys, 2000)
    denying, _ = replica(api, started, keys)
    allowing, _ = replica(api, started, keys, on_state_unavailable="allow")
    api.fail_next(100, status=503, method="PUT")
    api.fail_next(100, status=503, method="POST")
    allowed, code, _ = denial(send(denying, job("a", token)))
    assert (allowed, code) == (False, "state-unavailable")
    admitted = send(allowing, job("b", token))
    assert admitted["allowed"]
    assert any("allowed by policy" in w for w in admitted["warnings"])


# -- costgate estimate -------------------------------------------------------------------------


def test_costgate_estimate_agrees_and_says_the_allowance_is_checked_at_admission(
    keys, tmp_path: Path, capsys
) -> None:
    token = approval(keys, 2000)
    manifest = tmp_path / "job.json"
    manifest.write_bytes(orjson.dumps(job("a", token)))
    code = main(["estimate", "-f", str(manifest), "--approvers", str(keys[1]), "-o", "json"])
    [row] = orjson.loads(capsys.readouterr().out)
    service, _ = memory_service(keys)
    served = send(service, job("a", token))
    assert (code, row["allowed"], served["allowed"]) == (0, True, True)
    assert row["cost_usd"] == pytest.approx(JOB_USD)
    assert any("spend allowance, added up at admission" in w for w in row["warnings"])
    # the server has the ledger, so it says no such thing
    assert not any("added up at admission" in w for w in served["warnings"])


# -- schedules ------------------------------------------------------------------------------


def cronjob(name: str, token: str) -> dict[str, Any]:
    """A nightly CronJob of the Job above, for 2h a run: 730/24 runs a month (a month is
    hours_per_month) × 8 × $6.88 × 2h = $3,348.27, over the $2,000 monthly threshold, so it
    needs the approval."""
    template = job(name, token, runtime="2h")
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": template["metadata"],
        "spec": {
            "schedule": "0 2 * * *",
            "concurrencyPolicy": "Forbid",
            "jobTemplate": {"spec": template["spec"]},
        },
    }


def test_a_schedule_draws_its_monthly_cost_on_the_allowance(keys) -> None:
    """A CronJob holds and spends nothing itself (its runs are charged), but what its approval
    admits is its monthly cost: a copied token on a second schedule is refused."""
    service, _ = memory_service(keys)
    token = approval(keys, 5000)

    def create(name: str) -> dict[str, Any]:
        request = orjson.loads(body(cronjob(name, token)))
        request["request"]["kind"] = {"group": "batch", "version": "v1", "kind": "CronJob"}
        request["request"]["resource"]["resource"] = "cronjobs"
        answer = service.handle(orjson.dumps(request), "validate")
        response: dict[str, Any] = orjson.loads(answer.body)["response"]
        return response

    assert create("nightly-a")["allowed"]
    allowed, code, message = denial(create("nightly-b"))
    assert (allowed, code) == (False, "invalid-approval")
    assert 'already admitted under it by CronJob "nightly-a" ($3,348.27)' in message
