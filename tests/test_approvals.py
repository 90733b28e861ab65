"""Signed approvals: mint and verify, every way a token fails, key rotation, and the cost
gate lifted only by a token that covers the workload."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from tests.support.builders import pod, request
from tests.support.captures import capture
from tests.support.config import policy_with
from tests.support.paths import ADMISSION
from tests.support.servers import start_server, stop_process
from webhook.approvals import AUDIENCE, Keyring, keygen, mint
from webhook.cli import main
from webhook.core.engine import Config, evaluate
from webhook.core.types import Approval, Reason

NOW = 1_800_000_000.0
H100 = {"costgate.io/gpu-type": "h100-80gb", "costgate.io/max-runtime": "24h"}
# the annotation counts where a nodeSelector allows its type (gpu_type_annotation: checked)
H100_NODES = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    """(carol's private key, the approvers directory holding her public key)."""
    private = tmp_path / "private"
    approvers = tmp_path / "approvers"
    pair = keygen("carol", private)
    approvers.mkdir()
    (approvers / pair.public_path.name).write_bytes(pair.public_path.read_bytes())
    return pair.private_path, approvers


def raw_claims(**changes) -> dict:
    """Claims as a forger would write them, for tokens not made by `costgate approve`."""
    claims = {
        "iss": "costgate",
        "aud": AUDIENCE,
        "sub": "carol",
        "ns": "team-a",
        "experiment": "exp-1",
        "max_usd": 1e9,
        "iat": NOW,
        "exp": NOW + 3600,
    }
    claims.update(changes)
    return claims


def token(key: Path, **claims) -> str:
    defaults = {
        "namespace": "team-a",
        "experiment": "exp-1",
        "max_usd": 2000.0,
        "expires_in": 3600,
        "now": NOW,
    }
    defaults.update(claims)
    return mint(key, **defaults)


def expensive(approval: str | None = None, **kw):
    """8 × H100 for 24h: well over the $100 threshold."""
    annotations = dict(H100)
    if approval is not None:
        annotations["costgate.io/approval"] = approval
    return pod(gpus=8, annotations=annotations, spec={"nodeSelector": dict(H100_NODES)}, **kw)


def decide(obj, config: Config, now: float = NOW):
    return evaluate(request(obj), config=config, now=now)


@pytest.fixture
def config(table, policy, keys) -> Config:
    return Config(table, policy, verify_approval=Keyring(keys[1]).verify)


def codes(decision) -> list[str]:
    return [r.code for r in decision.reasons]


def kid(key: Path) -> str:
    """The key id `keygen` gave a private key: its file name."""
    return key.name.removesuffix(".key")


def signed(key: Path, claims: dict | str) -> str:
    """A token signed with `key` (an approver's, so signature checks pass) outside `mint`:
    claims as a dict, or a payload string written verbatim."""
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    headers = {"kid": kid(key)}
    if isinstance(claims, str):
        return jwt.api_jws.encode(claims.encode(), private, algorithm="EdDSA", headers=headers)
    return jwt.encode(claims, private, algorithm="EdDSA", headers=headers)


def test_round_trip(keys) -> None:
    key, approvers = keys
    verdict = Keyring(approvers).verify(token(key, reason="quarterly run"))
    assert isinstance(verdict, Approval)
    assert verdict.approver == "carol"
    assert verdict.key_id == kid(key)
    assert (verdict.namespace, verdict.experiment, verdict.max_usd) == ("team-a", "exp-1", 2000.0)
    assert verdict.expires_at == NOW + 3600
    assert verdict.reason == "quarterly run"


def test_a_valid_approval_lifts_the_gate_and_is_recorded(keys, config) -> None:
    decision = decide(expensive(token(keys[0])), config)
    assert decision.allowed and not decision.reasons
    assert any(w.startswith("costgate: approved by carol (key carol.") for w in decision.warnings)
    assert decision.audit["approval-max-usd"] == "2000.00"
    assert decision.audit["approval-key-id"].startswith("carol.")
    assert decision.audit["approval-expires"] == str(int(NOW + 3600))


def test_without_approval_the_denial_says_how_to_ask(config) -> None:
    decision = decide(expensive(), config)
    assert codes(decision) == ["over-threshold"]
    assert "costgate approve" in decision.reasons[0].message


@pytest.mark.parametrize(
    ("claims", "obj_kw", "now", "says"),
    [
        ({"expires_in": 60}, {}, NOW + 3600, "expired at"),
        ({"namespace": "team-b"}, {}, NOW, 'is for namespace "team-b", not "team-a"'),
        ({"experiment": "exp-2"}, {}, NOW, 'is for experiment "exp-2"'),
        ({"max_usd": 1000.0}, {}, NOW, "above the $1,000.00 approved by"),
        ({"experiment": "", "name": "other"}, {}, NOW, 'is for workload "other", not "job-1"'),
        ({"now": NOW + 7200}, {}, NOW, "in the future"),
    ],
    ids=[
        "an expired approval says when it expired",
        "an approval for another namespace is refused",
        "an approval for another experiment is refused",
        "an approval below the estimate says by how much",
        "an approval for another workload name is refused",
        "an approval issued in the future is refused",
    ],
)
def test_approvals_that_do_not_cover_the_workload(keys, config, claims, obj_kw, now, says):
    decision = decide(expensive(token(keys[0], **claims), **obj_kw), config, now=now)
    assert codes(decision) == ["invalid-approval"]
    assert says in decision.reasons[0].message


def test_too_small_by_the_exact_difference(keys, config, table) -> None:
    decision = decide(expensive(token(keys[0], max_usd=1000.0)), config)
    cost = round(8 * table.gpus["h100-80gb"].usd_per_hour * 24, 2)
    assert f"is ${cost - 1000:,.2f} above the $1,000.00" in decision.reasons[0].message


def test_expiry_boundary_with_clock_skew(keys, config) -> None:
    approval = token(keys[0], expires_in=600)
    skew = config.policy.approval_clock_skew_seconds
    assert decide(expensive(approval), config, now=NOW + 600 + skew).allowed
    assert not decide(expensive(approval), config, now=NOW + 600 + skew + 1).allowed


def test_a_token_signed_by_an_unknown_key(keys, config, tmp_path) -> None:
    stranger = keygen("mallory", tmp_path / "mallory")
    decision = decide(expensive(token(stranger.private_path)), config)
    assert codes(decision) == ["invalid-approval"]
    assert "not an approver key of this cluster" in decision.reasons[0].message


def _edit_payload(approval: str, **changes) -> str:
    header, payload, signature = approval.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    edited = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{edited}.{signature}"


def test_a_payload_edited_after_signing_is_refused(keys, config) -> None:
    forged = _edit_payload(token(keys[0], max_usd=10.0), max_usd=1e9)
    decision = decide(expensive(forged), config)
    assert codes(decision) == ["invalid-approval"]
    assert "changed after signing" in decision.reasons[0].message


def test_alg_none_is_refused(keys, config) -> None:
    claims = raw_claims(max_usd=1e9)
    unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": kid(keys[0])})
    decision = decide(expensive(unsigned), config)
    assert codes(decision) == ["invalid-approval"]
    assert "algorithm must be EdDSA" in decision.reasons[0].message


def test_hmac_with_the_public_key_as_secret_is_refused(keys, config) -> None:
    # The classic confusion: sign HS256 with the (public) key bytes the webhook holds.
    public_pem = (keys[1] / f"{kid(keys[0])}.pem").read_bytes()
    header = base64.urlsafe_b64encode(
        json.dumps({"alg": "HS256", "kid": kid(keys[0]), "typ": "JWT"}).encode()
    ).rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps(raw_claims(max_usd=1e9)).encode()).rstrip(b"=")

    signature = base64.urlsafe_b64encode(
        hmac.new(public_pem, header + b"." + body, hashlib.sha256).digest()
    ).rstrip(b"=")
    forged = b".".join([header, body, signature]).decode()
    decision = decide(expensive(forged), config)
    assert codes(decision) == ["invalid-approval"]


def test_a_key_cannot_sign_for_another_approver(keys, config) -> None:
    # A listed key signing claims that name someone else as the approver.
    forged = signed(keys[0], raw_claims(sub="bob", max_usd=5000.0))
    decision = decide(expensive(forged), config)
    assert codes(decision) == ["invalid-approval"]
    assert "signed for another approver" in decision.reasons[0].message


@pytest.mark.parametrize("garbage", ["", "x", "a.b.c", "eyJ.eyJ.sig", "é" * 10, "a" * 5000])
def test_malformed_tokens_are_clear_denials(garbage, config) -> None:
    decision = decide(expensive(garbage), config)
    # "" is no approval at all: the workload is simply over the threshold
    assert codes(decision) == (["invalid-approval"] if garbage else ["over-threshold"])
    assert all("\n" not in r.message for r in decision.reasons)


def test_nan_max_usd_cannot_cover_everything(keys, config) -> None:
    forged = signed(keys[0], json.dumps(raw_claims(max_usd=float("nan"))))
    decision = decide(expensive(forged), config)
    assert codes(decision) == ["invalid-approval"]


def test_key_rotation_two_keys_then_one(tmp_path, table, policy) -> None:
    approvers = tmp_path / "approvers"
    old = keygen("carol", tmp_path / "k1")
    new = keygen("carol", tmp_path / "k2")
    approvers.mkdir()
    for pair in (old, new):
        (approvers / pair.public_path.name).write_bytes(pair.public_path.read_bytes())
    keyring = Keyring(approvers, check_every=0)
    config = Config(table, policy, verify_approval=keyring.verify)
    assert decide(expensive(token(old.private_path)), config).allowed
    assert decide(expensive(token(new.private_path)), config).allowed
    (approvers / old.public_path.name).unlink()
    time.sleep(0.01)
    assert not decide(expensive(token(old.private_path)), config).allowed  # reloaded
    assert decide(expensive(token(new.private_path)), config).allowed


def test_namespace_policy_names_who_may_approve_and_how_much(keys, table, tmp_path) -> None:
    policy = policy_with(
        approver_groups={"leads": ["bob"]},
        namespaces={"team-a": {"approvers": ["group:leads"], "max_approval_usd": 1500}},
    )
    config = Config(table, policy, verify_approval=Keyring(keys[1]).verify)
    decision = decide(expensive(token(keys[0], max_usd=5000.0)), config)
    messages = " ".join(r.message for r in decision.reasons)
    assert codes(decision) == ["invalid-approval", "invalid-approval"]
    assert '"carol" may not approve for namespace "team-a" (approvers there: bob)' in messages
    assert "more than the $1,500.00 one approval may grant" in messages


def test_a_namespace_that_takes_no_approvals(keys, table) -> None:
    config = Config(
        table, policy_with(over_threshold="deny"), verify_approval=Keyring(keys[1]).verify
    )
    decision = decide(expensive(token(keys[0])), config)
    assert codes(decision) == ["over-threshold"]
    assert "takes no approvals" in decision.reasons[0].message


def test_approvals_travel_with_workflows_to_their_pods(keys, config) -> None:
    approval = token(keys[0])
    workflow = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            "name": "wf",
            "namespace": "team-a",
            "labels": {"owner": "alice", "experiment": "exp-1"},
            "annotations": {**H100, "costgate.io/approval": approval},
        },
        "spec": {
            "entrypoint": "main",
            "templates": [
                {
                    "name": "main",
                    "nodeSelector": dict(H100_NODES),
                    "container": {"image": "x", "resources": {"limits": {"nvidia.com/gpu": "8"}}},
                }
            ],
        },
    }
    decision = decide(workflow, config)
    assert decision.allowed
    assert decision.pod_annotations["costgate.io/approval"] == approval


def test_minting_refuses_bad_arguments(keys) -> None:
    with pytest.raises(ValueError, match="an experiment or a workload name, not both"):
        mint(keys[0], namespace="n", max_usd=10, expires_in=60, experiment="e", name="x")
    with pytest.raises(ValueError, match="must be positive"):
        mint(keys[0], namespace="n", max_usd=-1, expires_in=60, experiment="e")
    with pytest.raises(ValueError, match="must be lowercase letters"):
        keygen("Not A Name", keys[1])


def test_a_foreign_file_in_the_approvers_directory_is_skipped(keys) -> None:
    (keys[1] / "junk.pem").write_text("not a key")
    keyring = Keyring(keys[1])
    assert keyring.key_ids == (kid(keys[0]),)
    assert isinstance(keyring.verify(token(keys[0])), Approval)
    assert isinstance(keyring.verify("nope"), Reason)


# --- through the CLI and the real server ---------------------------------------------------


def test_cli_keygen_approve_and_estimate(tmp_path: Path, capsys) -> None:
    assert main(["keygen", "--approver", "carol", "--out", str(tmp_path / "k")]) == 0
    private = next((tmp_path / "k").glob("carol.*.key"))
    public_dir = tmp_path / "pub"
    public_dir.mkdir()
    public = private.with_suffix(".pem")
    (public_dir / public.name).write_bytes(public.read_bytes())
    capsys.readouterr()
    approve = ["approve", "--key", str(private), "--namespace", "demo"]
    bound = ["--experiment", "llm-pretrain-42", "--max-cost", "2000", "--expires", "1h"]
    assert main([*approve, *bound]) == 0
    out, err = capsys.readouterr()
    approval = out.strip()
    assert "kubectl annotate --local -f FILE costgate.io/approval=" in err
    manifest = str(ADMISSION / "manifests" / "pod-gpu.yaml")
    assert main(["estimate", "-f", manifest, "-o", "json"]) == 1
    capsys.readouterr()
    args = ["estimate", "-f", manifest, "-o", "json"]
    assert main([*args, "--approval", approval, "--approvers", str(public_dir)]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["allowed"] and any(w.startswith("approved by carol") for w in row["warnings"])
    assert main([*approve, "--name", "x", "--max-cost", "5", "--expires", "soon"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "--expires 'soon' is not a duration" in err


@pytest.mark.parametrize(
    ("key", "bound", "said"),
    [
        pytest.param(
            "missing.key",
            ["--experiment", "e"],
            "missing.key",
            id="a key file that does not exist",
        ),
        pytest.param(
            None,
            ["--experiment", "e", "--max-cost", "-1"],
            "must be positive",
            id="a negative maximum",
        ),
    ],
)
def test_cli_approve_refuses_what_mint_refuses_with_exit_2(
    keys, tmp_path: Path, capsys, key: str | None, bound: list[str], said: str
) -> None:
    path = tmp_path / key if key else keys[0]
    args = ["approve", "--key", str(path), "--namespace", "demo", "--expires", "1h"]
    if "--max-cost" not in bound:
        bound = [*bound, "--max-cost", "5"]
    assert main([*args, *bound]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("costgate: ") and said in err


def test_the_real_server_admits_an_approved_pod(tmp_path: Path, keys) -> None:
    server = start_server(tmp_path, "--approvers-dir", str(keys[1]))
    try:
        review = capture("validate-pod-create-gpu")
        obj = review["request"]["object"]
        approval = mint(
            keys[0], namespace="demo", experiment="llm-pretrain-42", max_usd=5000, expires_in=600
        )
        obj["metadata"]["annotations"]["costgate.io/approval"] = approval
        with server.client() as client:
            answer = client.post("/validate", json=review).json()["response"]
            assert answer["allowed"] is True
            assert answer["auditAnnotations"]["approval-max-usd"] == "5000.00"
            obj["metadata"]["annotations"]["costgate.io/approval"] = _edit_payload(
                approval, max_usd=1e9
            )
            denied = client.post("/validate", json=review).json()["response"]
            assert denied["allowed"] is False
            assert "changed after signing" in denied["status"]["message"]
    finally:
        stop_process(server.process)
    assert approval not in server.log.read_text()  # no token contents in logs


def test_an_approval_where_the_webhook_has_no_keys_says_so(keys, table, policy) -> None:
    decision = decide(expensive(token(keys[0])), Config(table, policy))
    assert codes(decision) == ["invalid-approval"]
    assert "this webhook has no approver keys" in decision.reasons[0].message


def test_an_oversized_token_is_refused_before_parsing(keys) -> None:
    verdict = Keyring(keys[1]).verify("a" * 5000)
    assert isinstance(verdict, Reason)
    assert "(too long)" in verdict.message
