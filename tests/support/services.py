"""Admission services on the bundled tables with policy fields replaced: as `costgate serve`
builds one (no state), or with in-memory state and a clock the test moves."""

from __future__ import annotations

import dataclasses
from typing import Any

from tests.support.config import policy_with
from webhook.core.engine import Config
from webhook.core.types import ApprovalVerifier
from webhook.service import AdmissionService
from webhook.state import memory_state
from webhook.tables import check_gpu_names, load_config, load_pricing


class Clock:
    def __init__(self, now: float = 1_795_000_000.0) -> None:  # 2026-11
        self.now = now

    def __call__(self) -> float:
        return self.now


def service_for(
    clock: Clock | None = None, *, verify: ApprovalVerifier | None = None, **policy: Any
) -> tuple[AdmissionService, Any]:
    """With in-memory state; `verify` checks approval tokens (a Keyring's)."""
    clock = clock or Clock()
    config = Config(table=load_pricing(), policy=policy_with(**policy), verify_approval=verify)
    check_gpu_names(config.policy, config.table)
    state = memory_state(clock)
    return AdmissionService(config, clock=clock, state=state), state


def served(**policy: Any) -> AdmissionService:
    """The service as `costgate serve` builds it (YAML podSpecPatch readable), with policy
    fields replaced."""
    config = load_config()
    if policy:
        config = dataclasses.replace(config, policy=policy_with(**policy))
    return AdmissionService(config)
