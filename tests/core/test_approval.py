"""Who counts as the same person for the no-self-approval rule."""

from __future__ import annotations

import pytest

from webhook.core.rules.approval import same_person

SAME = [
    ("a plain user name", "alice", "alice"),
    ("an OIDC-prefixed user", "alice", "oidc:alice"),
    ("an e-mail user", "alice", "alice@example.com"),
    ("a service account named after the approver", "alice", "system:serviceaccount:ml:alice"),
    ("names differing only in case and spaces", "alice", " Alice "),
    ("an upper-case approver name", "Alice", "alice"),
]
OTHERS = [
    ("another user", "alice", "bob"),
    ("a user whose name only contains the approver's", "alice", "alice2"),
    ("a namespace named like the approver", "alice", "system:serviceaccount:alice:runner"),
    ("no user at all", "alice", ""),
    ("no approver name", "", "alice"),
    ("neither", "", ""),
]


@pytest.mark.parametrize(("approver", "user"), [c[1:] for c in SAME], ids=[c[0] for c in SAME])
def test_names_of_the_approver_are_the_same_person(approver: str, user: str) -> None:
    assert same_person(approver, user)


@pytest.mark.parametrize(("approver", "user"), [c[1:] for c in OTHERS], ids=[c[0] for c in OTHERS])
def test_other_names_are_not_the_same_person(approver: str, user: str) -> None:
    assert not same_person(approver, user)
