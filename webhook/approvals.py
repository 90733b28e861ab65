"""Signed approval tokens: key pairs, minting, and verifying against approvers' public keys.

A token is a compact JWS (EdDSA over Ed25519, made and checked with PyJWT) whose header
names the key (`kid`) and whose claims bind the approval:

    {"iss": "costgate", "aud": "costgate-webhook", "sub": "<approver>", "ns": "<namespace>",
     "experiment": "<label value>" | "name": "<workload name>", "max_usd": 500.0,
     "iat": ..., "exp": ..., "jti": "...", "uses": 3, "reason": "..."}

A token is a spend allowance: what the workloads admitted under its `jti` are estimated to
cost together stays within `max_usd` (the webhook adds them up in its ledger), and `uses`,
when present, caps how many workloads it admits.

The webhook holds only public keys, one PEM file per key named `<approver>.<fingerprint>.pem`
(the key id is the file name without `.pem`), in a directory mounted from a ConfigMap or
Secret. Nobody can approve their own job by typing an annotation: only a private key holder
can sign, and the key id says who. Expiry, namespace, experiment and cost are compared with
the workload in the decision core (webhook.core.approval), with the request's time.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .core import messages
from .core.types import Approval, Reason
from .reload import Reloader

__all__ = ["AUDIENCE", "KeyPair", "Keyring", "keygen", "mint"]

ISSUER = "costgate"
AUDIENCE = "costgate-webhook"
ALGORITHM = "EdDSA"
_APPROVER = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_MAX_TOKEN_CHARS = 4096
_JTI = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # a ledger key and part of messages


def key_id(approver: str, public_key: Ed25519PublicKey) -> str:
    """`<approver>.<first 8 hex of SHA-256 of the raw key>`: says who, and changes on rotation."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"{approver}.{hashlib.sha256(raw).hexdigest()[:8]}"


@dataclass(frozen=True, slots=True)
class KeyPair:
    key_id: str
    private_path: Path
    public_path: Path


def keygen(approver: str, directory: Path) -> KeyPair:
    """A new Ed25519 key pair for `approver`: `<kid>.key` (private, 0600) stays with the
    approver; `<kid>.pem` goes into the webhook's approvers directory."""
    if not _APPROVER.fullmatch(approver):
        raise ValueError(f"approver name {approver!r} must be lowercase letters, digits and '-'")
    private = Ed25519PrivateKey.generate()
    kid = key_id(approver, private.public_key())
    directory.mkdir(parents=True, exist_ok=True)
    private_path = directory / f"{kid}.key"
    public_path = directory / f"{kid}.pem"
    pem = serialization.Encoding.PEM
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(
            private.private_bytes(
                pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    public_path.write_bytes(
        private.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return KeyPair(kid, private_path, public_path)


def _load_private(path: Path) -> tuple[str, Ed25519PrivateKey]:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    approver = path.name.split(".", 1)[0]
    return approver, key


def mint(
    key_path: Path,
    *,
    namespace: str,
    max_usd: float,
    expires_in: int,
    experiment: str = "",
    name: str = "",
    reason: str = "",
    uses: int | None = None,
    now: float | None = None,
) -> str:
    """A signed approval token. Exactly one of `experiment` and `name` binds it; `uses`
    caps the number of workloads it admits."""
    if bool(experiment) == bool(name):
        raise ValueError("an approval names an experiment or a workload name, not both")
    if max_usd <= 0 or expires_in <= 0:
        raise ValueError("the approved maximum and the lifetime must be positive")
    if uses is not None and uses <= 0:
        raise ValueError("--uses must be a positive number of workloads")
    approver, key = _load_private(key_path)
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": approver,
        "ns": namespace,
        "max_usd": float(max_usd),
        "iat": issued,
        "exp": issued + expires_in,
        "jti": uuid.uuid4().hex,
    }
    claims["experiment" if experiment else "name"] = experiment or name
    if reason:
        claims["reason"] = reason
    if uses is not None:
        claims["uses"] = uses
    kid = key_id(approver, key.public_key())
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": kid})


def _read_keys(directory: Path) -> dict[str, Ed25519PublicKey]:
    keys: dict[str, Ed25519PublicKey] = {}
    for path in sorted(directory.glob("*.pem")) if directory.is_dir() else ():
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except (OSError, ValueError):
            continue  # a half-written or foreign file: skipped, the others still serve
        if isinstance(key, Ed25519PublicKey):
            keys[path.name.removesuffix(".pem")] = key
    return keys


class Keyring:
    """Approvers' public keys from a directory (mounted from a ConfigMap or Secret), re-read
    when its files change. Only a review carrying a token needs them, so that review checks
    for changes, at most every `check_every` seconds, rather than a thread."""

    def __init__(
        self,
        directory: Path,
        *,
        check_every: float = 1.0,
        on_result: Callable[[str, bool], None] = lambda name, ok: None,
    ) -> None:
        self.directory = directory
        self.check_every = check_every
        self._reloader = Reloader(
            "approvers", [directory], lambda: _read_keys(directory), on_result=on_result
        )
        self._checked = 0.0

    def _fresh(self) -> dict[str, Ed25519PublicKey]:
        now = time.monotonic()
        if now - self._checked >= self.check_every:
            self._checked = now
            self._reloader.check()
        return self._reloader.current()

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(sorted(self._fresh()))

    def verify(self, token: str) -> Approval | Reason:
        """The token's claims if its signature verifies against a listed key; otherwise the
        reason, as an `invalid-approval` Reason. Expiry is left to the decision core."""
        keys = self._fresh()
        token = token.strip()
        if len(token) > _MAX_TOKEN_CHARS:
            return _invalid(messages.approval_malformed("too long"))
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            return _invalid(messages.approval_malformed("not a compact JWS"))
        if header.get("alg") != ALGORITHM:
            return _invalid(messages.approval_malformed(f"algorithm must be {ALGORITHM}"))
        kid = header.get("kid")
        if not isinstance(kid, str) or kid not in keys:
            return _invalid(messages.approval_unknown_key(str(kid), keys))
        try:
            claims = jwt.decode(
                token,
                keys[kid],
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={
                    "verify_exp": False,
                    "verify_iat": False,
                    "require": ["exp", "iat", "sub", "ns", "max_usd"],
                },
            )
        except jwt.InvalidSignatureError:
            return _invalid(messages.approval_bad_signature(kid))
        except jwt.InvalidTokenError as exc:
            return _invalid(messages.approval_malformed(str(exc)))
        return _approval(kid, claims, token)


def _invalid(text: str) -> Reason:
    return Reason("invalid-approval", text)


def _approval(kid: str, claims: dict[str, Any], token: str) -> Approval | Reason:
    approver = kid.split(".", 1)[0]
    if claims.get("sub") != approver:  # a key signs for its own approver only
        return _invalid(messages.approval_malformed("signed for another approver"))
    bound = [k for k in ("experiment", "name") if claims.get(k)]
    if len(bound) != 1:
        return _invalid(messages.approval_malformed("it must name one experiment or one name"))
    try:
        max_usd = float(claims["max_usd"])
    except (TypeError, ValueError):
        return _invalid(messages.approval_malformed("max_usd is not a number"))
    if not math.isfinite(max_usd) or max_usd <= 0:  # json accepts NaN; NaN compares False
        return _invalid(messages.approval_malformed("max_usd must be a positive number"))
    uses = claims.get("uses")
    if uses is not None and (type(uses) is not int or uses <= 0):
        return _invalid(messages.approval_malformed("uses must be a positive whole number"))
    jti = claims.get("jti")
    if not isinstance(jti, str) or not _JTI.fullmatch(jti):
        # costgate mints a uuid; a token without a usable one is known by its digest
        jti = "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:32]
    try:
        return Approval(
            key_id=kid,
            approver=approver,
            namespace=str(claims["ns"]),
            experiment=str(claims.get("experiment", "")),
            name=str(claims.get("name", "")),
            max_usd=max_usd,
            expires_at=int(claims["exp"]),
            issued_at=int(claims["iat"]),
            reason=str(claims.get("reason", "")),
            jti=jti,
            uses=uses,
        )
    except (TypeError, ValueError):
        return _invalid(messages.approval_malformed("claims of the wrong type"))
