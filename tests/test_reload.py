"""Files re-read under a running server (webhook.reload), and the error paths around the
admission service's observers: metrics, the decision log, a failing observer, a corrupted
ledger document."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.builders import gpu_pod, review
from tests.support.config import policy_with
from tests.support.paths import REPO
from webhook.approvals import Keyring, keygen
from webhook.certs import issue
from webhook.core.engine import Config
from webhook.reload import Reloader
from webhook.server.app import build_app
from webhook.server.metrics import Metrics
from webhook.service import AdmissionService, Answer
from webhook.state import memory_state
from webhook.tables import TableError, load_config, load_pricing

POLICY = (REPO / "webhook" / "defaults" / "policy.yaml").read_text()


def _touch_later(path: Path, text: str) -> None:
    """Write `text` so that the change shows in stat even within one clock tick."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(before + 10**9, before + 10**9))


def test_a_changed_policy_is_taken_and_a_broken_one_refused(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    results: list[tuple[str, bool]] = []
    reloader = Reloader(
        "pricing+policy",
        [policy],
        lambda: load_config(None, policy),
        on_result=lambda name, ok: results.append((name, ok)),
    )
    assert reloader.current().policy.default.threshold_usd == 100
    assert not reloader.check()  # nothing changed: nothing read

    _touch_later(policy, POLICY.replace("threshold_usd: 100", "threshold_usd: 250"))
    assert reloader.check()
    assert reloader.current().policy.default.threshold_usd == 250

    _touch_later(policy, POLICY.replace("threshold_usd: 100", "threshold_usd: -5"))
    assert not reloader.check()
    assert reloader.current().policy.default.threshold_usd == 250  # the old one stays
    _touch_later(policy, "version: 1\nmode: [not, a, mode\n")
    assert not reloader.check()
    assert results == [("pricing+policy", ok) for ok in (True, False, False)]


def test_a_bad_file_at_start_up_is_an_error(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 2\n")
    with pytest.raises(TableError):
        Reloader("policy", [policy], lambda: load_config(None, policy))


def test_a_deleted_file_keeps_the_old_config(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    reloader = Reloader("policy", [policy], lambda: load_config(None, policy))
    first = reloader.current()
    policy.unlink()
    assert not reloader.check()
    assert reloader.current() is first


def test_a_mismatched_certificate_pair_is_refused_and_the_old_kept(tmp_path: Path) -> None:
    first = issue(tmp_path / "a", ["localhost"])
    other = issue(tmp_path / "b", ["localhost"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    loads: list[bool] = []
    reloader = Reloader(
        "tls",
        [first.cert, first.key],
        lambda: context.load_cert_chain(first.cert, first.key),
        on_result=lambda name, ok: loads.append(ok),
    )
    _touch_later(first.cert, other.cert.read_text())  # the new cert, the old key
    assert not reloader.check()
    _touch_later(first.key, other.key.read_text())  # now the pair matches again
    assert reloader.check()
    assert loads == [False, True]


def test_a_watched_directory_is_read_again_when_a_file_in_it_changes(tmp_path: Path) -> None:
    keys = tmp_path / "approvers"
    keys.mkdir()
    (keys / "a.pem").write_text("one")
    reloader = Reloader("keys", [keys], lambda: sorted(p.read_text() for p in keys.iterdir()))
    _touch_later(keys / "a.pem", "two")  # in place: the directory's own stat unchanged
    assert reloader.check() and reloader.current() == ["two"]
    (keys / "b.pem").write_text("three")
    assert reloader.check() and reloader.current() == ["three", "two"]
    assert not reloader.check()


def test_the_approvers_keys_are_reloaded_like_any_file_and_reported(tmp_path: Path) -> None:
    pair = keygen("carol", tmp_path / "keys")
    approvers = tmp_path / "approvers"
    approvers.mkdir()
    results: list[tuple[str, bool]] = []
    keyring = Keyring(approvers, check_every=0, on_result=lambda *result: results.append(result))
    assert keyring.key_ids == ()
    (approvers / pair.public_path.name).write_bytes(pair.public_path.read_bytes())
    assert keyring.key_ids == (pair.key_id,)
    assert results == [("approvers", True)]


def test_a_file_written_while_being_read_is_read_again_not_taken_or_refused(
    tmp_path: Path,
) -> None:
    """A file written in place can be read half way through the write: the reloader reads
    it again at its next check rather than refusing it (an error for a good file) or taking
    it (half a policy can be a valid one)."""
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nthreshold_usd: 100\n")
    writer: list[str] = []  # what a writer finishes writing while the file is being read
    results: list[bool] = []

    def load() -> float:
        try:
            return load_config(None, policy).policy.default.threshold_usd
        finally:
            if writer:
                policy.write_text(writer.pop())

    reloader = Reloader("policy", [policy], load, on_result=lambda _, ok: results.append(ok))
    _touch_later(policy, "version: 1\nthreshold_usd: [\n")  # read broken, then made whole
    writer.append("version: 1\nthreshold_usd: 300\n")
    assert not reloader.check() and results == []
    assert reloader.check() and reloader.current() == 300
    _touch_later(policy, "version: 1\n")  # read valid but half, then made whole
    writer.append("version: 1\nthreshold_usd: 50\n")
    assert not reloader.check() and reloader.current() == 300
    assert reloader.check() and reloader.current() == 50
    assert results == [True, True]


# --- metrics and the decision log ------------------------------------------------------


def _scrape(app: Any, *bodies: bytes) -> tuple[list[dict[str, Any]], dict[str, float]]:
    async def scenario() -> tuple[list[dict[str, Any]], str]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            answers = [
                (await client.post("/validate", content=body)).json()["response"] for body in bodies
            ]
            return answers, (await client.get("/metrics")).text

    answers, text = asyncio.run(scenario())
    samples = {
        f"{s.name}{sorted(s.labels.items())}": s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return answers, samples


def test_metrics_count_decisions_dollars_and_reloads(caplog: pytest.LogCaptureFixture) -> None:
    config = Config(table=load_pricing(), policy=policy_with(quota={"max_gpus": 2}))
    metrics = Metrics()
    app = build_app(config, max_body_bytes=1 << 22, metrics=metrics, state=memory_state())
    metrics.reloaded("pricing+policy", False)
    token = "eyJhbGciOiJFZERTQSJ9.not-a-real-token.signature"
    approved = gpu_pod(1, runtime="5h", name="b")
    approved["metadata"]["annotations"]["costgate.io/approval"] = token
    with caplog.at_level(logging.INFO, logger="costgate.decision"):
        answers, samples = _scrape(
            app,
            review(gpu_pod(2, runtime="5h", name="a")),  # $68.80, allowed
            review(approved),  # over the GPU quota: denied
            review(gpu_pod(1), dry_run=True),  # denied too, and a dry run: no dollars
        )
    assert [a["allowed"] for a in answers] == [True, False, False]

    def sample(name: str, **labels: str) -> float:
        return samples[f"{name}{sorted(labels.items())}"]

    ns = {"namespace": "team-a"}
    assert sample("costgate_decisions_total", decision="allow", reason="none", **ns) == 1
    assert sample("costgate_decisions_total", decision="deny", reason="over-quota", **ns) == 2
    usd = "costgate_estimated_usd_total"
    assert sample(usd, decision="allow", owner="alice", **ns) == pytest.approx(68.80)
    assert sample(usd, decision="deny", owner="alice", **ns) == pytest.approx(34.40)
    reloads = {"file": "pricing+policy"}
    assert sample("costgate_config_reloads_total", result="error", **reloads) == 1
    assert sample("costgate_config_last_reload_ok", **reloads) == 0
    lines = [r for r in caplog.records if r.name == "costgate.decision"]
    assert [r.decision for r in lines] == ["allow", "deny", "deny"]  # type: ignore[attr-defined]
    assert lines[1].reasons == ["over-quota"] and lines[1].approval_present  # type: ignore[attr-defined]
    assert token not in caplog.text  # the token's presence is logged, never its contents
    assert lines[2].dry_run  # type: ignore[attr-defined]  # fmt: skip


def test_a_failing_observer_never_costs_the_answer(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def observe(self, endpoint: str, answer: Answer, seconds: float) -> None:
            raise RuntimeError("metrics backend gone")

    service = AdmissionService(
        Config(table=load_pricing(), policy=policy_with()), observer=Broken()
    )
    with caplog.at_level(logging.ERROR, logger="costgate.service"):
        answer = service.handle(review(gpu_pod(1)), "validate")
    assert answer.status == 200 and orjson.loads(answer.body)["response"]["allowed"]
    assert "observer failed" in caplog.text


def test_a_corrupted_ledger_document_starts_over_rather_than_failing() -> None:
    from kubernetes import client

    from tests.support.fakeapi import FakeApiServer
    from webhook.core.usage import BudgetCharge
    from webhook.state.ledger import ConfigMapLedger

    with FakeApiServer() as api:
        api.create(
            "configmaps",
            {
                "metadata": {"name": "costgate-ledger-team-a", "namespace": "costgate-system"},
                "data": {"ledger.json": "{not json"},
            },
        )
        ledger = ConfigMapLedger(client.CoreV1Api(api.client()), "costgate-system")
        charge = BudgetCharge("team-a", "exp-1", "lifetime", 10.0, 100.0)
        assert ledger.charge(charge, "uid-1", 1.0).ok
        stored = api.get("configmaps", "costgate-system", "costgate-ledger-team-a")
        assert orjson.loads(stored["data"]["ledger.json"])["pending"] == {
            "uid-1": ["exp-1/lifetime", 10.0, 1.0]
        }
