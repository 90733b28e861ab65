"""Self-approval through another identity (issue #13, item 11).

Approvers are people, and a person has more than one Kubernetes identity: alice signs as
`alice` but also logs in as `oidc:alice.smith@corp.com`, and through the built-in `edit`
role she may impersonate `system:serviceaccount:demo:ci`. The policy's
`approver_identities` maps each approver (by name or key id) to those users and groups;
an approval is refused on a workload submitted under any of them, by a member of one of
those groups, or by a proxy that says (in request.userInfo.extra) it acts for her. Each
attempt has a test below; the same token is still accepted from a colleague, and
`costgate estimate --as USER` gives the server's answer.

The pod is the captured 8 × H100 for 24h in namespace demo ($1,320.96, above the $100
threshold), its owner label set to bob so that only the submitter can make it alice's.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.answers import response_of
from tests.support.captures import capture
from tests.support.config import policy_data, policy_with
from webhook.approvals import Keyring, keygen, mint
from webhook.cli import main
from webhook.service import AdmissionService
from webhook.tables import TableError, load_config

POD = "validate-pod-create-gpu"  # 8 × h100-80gb at $6.88/h × 24h = $1,320.96, namespace demo
CI = "system:serviceaccount:demo:ci"  # alice may impersonate it (edit role in demo)
OIDC = "oidc:alice.smith@corp.com"
ALICE = {"alice": {"users": [OIDC, CI, "asmith"], "groups": ["team-alice"]}}
SELF = "nobody approves their own workload: ask another approver"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(alice's private key, the directory of approvers' public keys)."""
    root = tmp_path_factory.mktemp("approvers")
    pair = keygen("alice", root / "private")
    (root / "public").mkdir()
    (root / "public" / pair.public_path.name).write_bytes(pair.public_path.read_bytes())
    return pair.private_path, root / "public"


@pytest.fixture(scope="module")
def token(keys: tuple[Path, Path]) -> str:
    """alice's approval of experiment llm-pretrain-42 in demo, up to $1,500, for an hour."""
    return mint(
        keys[0], namespace="demo", experiment="llm-pretrain-42", max_usd=1500.0, expires_in=3600
    )


@pytest.fixture(scope="module")
def svc(keys: tuple[Path, Path]) -> AdmissionService:
    """The webhook holding alice's public key, with her identities in the policy."""
    config = load_config(verify_approval=Keyring(keys[1]).verify)
    policy = policy_with(approver_identities=ALICE)
    return AdmissionService(dataclasses.replace(config, policy=policy))


def submitted(
    svc: AdmissionService,
    token: str,
    username: str,
    groups: list[str] | None = None,
    extra: dict[str, Any] | None = None,
    owner: str = "bob",
) -> dict[str, Any]:
    """The validating answer to the approved pod, submitted as this user."""
    doc = copy.deepcopy(capture(POD))
    metadata = doc["request"]["object"]["metadata"]
    metadata["labels"]["owner"] = owner
    metadata["annotations"]["costgate.io/approval"] = token
    user: dict[str, Any] = {"username": username, "groups": groups or ["system:authenticated"]}
    if extra is not None:
        user["extra"] = extra
    doc["request"]["userInfo"] = user
    return response_of(svc.handle(json.dumps(doc).encode(), "validate"), doc["request"]["uid"])


def refusal(response: dict[str, Any]) -> tuple[bool, str, str]:
    return (
        response["allowed"],
        response["auditAnnotations"].get("reasons", ""),
        response.get("status", {}).get("message", ""),  # an admission has no status
    )


SA_GROUPS = ["system:serviceaccounts", "system:serviceaccounts:demo", "system:authenticated"]

OTHER_IDENTITIES = [
    # (case, username, groups, the identity the message names)
    ("a service account alice can impersonate", CI, SA_GROUPS, f'submitted by "{CI}"'),
    ("alice's OIDC name", OIDC, ["oidc:ml", "system:authenticated"], f'submitted by "{OIDC}"'),
    (
        "her OIDC name in another case",
        "oidc:Alice.Smith@corp.com",
        None,
        'submitted by "oidc:Alice.Smith@corp.com"',
    ),
]


@pytest.mark.parametrize(
    ("username", "groups", "named"),
    [c[1:] for c in OTHER_IDENTITIES],
    ids=[c[0] for c in OTHER_IDENTITIES],
)
def test_an_approver_cannot_approve_what_they_submit_under_another_identity(
    svc: AdmissionService, token: str, username: str, groups: list[str] | None, named: str
) -> None:
    """alice approves a pod and submits it as the CI service account (which her edit role
    lets her impersonate) or under her OIDC name: none of these names is `alice`, but the
    policy lists them as hers, so the approval is refused and the message says whose."""
    allowed, reasons, message = refusal(submitted(svc, token, username, groups))
    assert (allowed, reasons) == (False, "invalid-approval")
    assert f'{named}, an identity of "alice" in the policy\'s approver_identities; {SELF}' in (
        message
    )


def test_identities_listed_under_the_approvers_key_id_count_too(
    keys: tuple[Path, Path], token: str
) -> None:
    """The policy may name the approver by key id (`alice.<8 hex>`), as `approvers:` does:
    the CI service account listed there is alice's too, and her approval is refused."""
    (key_id,) = Keyring(keys[1]).key_ids
    config = load_config(verify_approval=Keyring(keys[1]).verify)
    policy = policy_with(approver_identities={key_id: {"users": [CI]}})
    by_key = AdmissionService(dataclasses.replace(config, policy=policy))
    allowed, reasons, message = refusal(submitted(by_key, token, CI, SA_GROUPS))
    assert (allowed, reasons) == (False, "invalid-approval")
    assert f'submitted by "{CI}", an identity of "alice"' in message


def test_an_approver_cannot_approve_what_a_member_of_their_group_submits(
    svc: AdmissionService, token: str
) -> None:
    """A user of alice's personal group (`team-alice`, e.g. another of her logins) submits
    it: the policy lists the group as hers, so the approval is refused."""
    allowed, reasons, message = refusal(
        submitted(svc, token, "alice-laptop", ["team-alice", "system:authenticated"])
    )
    assert (allowed, reasons) == (False, "invalid-approval")
    assert 'submitted by "alice-laptop" in group "team-alice", a group of "alice"' in message


IMPERSONATIONS = [
    # (case, the proxy's userInfo.extra, the value the message names)
    (
        "an impersonating proxy naming her OIDC login",
        {"impersonation-proxy.example.com/original-user": [OIDC]},
        OIDC,
    ),
    (
        "an impersonating proxy naming her plain user name",
        {"username": ["alice"], "principalid": ["local://u-7xk2p"]},
        "alice",
    ),
    (
        "an impersonating proxy naming her group",
        {"impersonator.example.com/original-groups": ["system:authenticated", "team-alice"]},
        "team-alice",
    ),
]


@pytest.mark.parametrize(
    ("extra", "named"), [c[1:] for c in IMPERSONATIONS], ids=[c[0] for c in IMPERSONATIONS]
)
def test_an_approver_cannot_approve_what_is_submitted_on_their_behalf(
    svc: AdmissionService, token: str, extra: dict[str, list[str]], named: str
) -> None:
    """A proxy that impersonates (Rancher, kcp, an OIDC proxy) submits as its own service
    account and records the person it acts for in userInfo.extra. When that names alice
    (a name, a listed identity or group), the approval is hers, and refused."""
    allowed, reasons, message = refusal(
        submitted(svc, token, "system:serviceaccount:proxy:impersonator", SA_GROUPS, extra)
    )
    assert (allowed, reasons) == (False, "invalid-approval")
    assert f'on behalf of "{named}"' in message and f"{SELF}" in message


def test_a_workload_owned_under_a_listed_identity_is_the_approvers(
    svc: AdmissionService, token: str
) -> None:
    """bob submits a pod whose owner label is `asmith`, alice's directory login, which the
    policy lists as hers: the workload names her its owner, and her approval is refused."""
    allowed, reasons, message = refusal(submitted(svc, token, "bob", owner="asmith"))
    assert (allowed, reasons) == (False, "invalid-approval")
    assert f'owned by "asmith"; {SELF}' in message


def test_the_same_approval_still_covers_a_colleagues_workload(
    svc: AdmissionService, token: str
) -> None:
    """The refusal is about the person, not the token: bob submits the pod, in his own
    groups, with the extras a service-account token carries, and alice's approval covers it."""
    extra = {"authentication.kubernetes.io/credential-id": ["JTI=0f3c2a"]}
    response = submitted(svc, token, "oidc:bob@corp.com", ["oidc:ml"], extra)
    assert response["allowed"], response["status"]["message"]


def test_a_malformed_user_info_extra_is_a_clear_400(svc: AdmissionService, token: str) -> None:
    """userInfo.extra maps names to lists of strings; anything else cannot come from the
    API server, and is refused as unreadable rather than read as "no impersonation"."""
    response = submitted(svc, token, CI, SA_GROUPS, {"original-user": "alice"})
    assert (response["allowed"], response["status"]["code"]) == (False, 400)
    assert (
        "request.userInfo.extra must map names to lists of strings"
        in (response["status"]["message"])
    )


def test_costgate_estimate_as_the_users_identity_gives_the_servers_answer(
    svc: AdmissionService,
    token: str,
    keys: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`costgate estimate --as system:serviceaccount:demo:ci` refuses alice's approval with
    the server's words for the same pod submitted by that service account."""
    manifest = copy.deepcopy(capture(POD)["request"]["object"])
    manifest["metadata"]["labels"]["owner"] = "bob"
    manifest["metadata"].pop("managedFields")
    (tmp_path / "pod.yaml").write_text(yaml.safe_dump(manifest))
    (tmp_path / "policy.yaml").write_text(
        yaml.safe_dump({**policy_data(), "approver_identities": ALICE})
    )
    code = main(
        [
            "estimate",
            *("-f", str(tmp_path / "pod.yaml"), "-o", "json"),
            *("--policy", str(tmp_path / "policy.yaml")),
            *("--approval", token, "--approvers", str(keys[1])),
            *("--as", CI, "--as-group", "system:serviceaccounts:demo"),
        ]
    )
    rows = json.loads(capsys.readouterr().out)
    server = submitted(svc, token, CI, SA_GROUPS)
    assert (code, [r["message"] for r in rows[0]["reasons"]]) == (
        1,
        [server["status"]["message"]],
    )


def test_a_group_every_user_has_cannot_be_one_persons(tmp_path: Path) -> None:
    """Listing `system:authenticated` as alice's group would make every submitter alice
    (and her approvals worthless): the policy file is refused, naming the group."""
    with pytest.raises(TableError, match="'system:authenticated' is every user's group"):
        policy_with(approver_identities={"alice": {"groups": ["system:authenticated"]}})
