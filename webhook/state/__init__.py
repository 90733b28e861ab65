"""Quota and budget state for the webhook: live usage (a Tally) and the budget ledger,
from the cluster (watch cache + ConfigMap ledger) or from memory (a single process)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..core.usage import AllowanceUse, BudgetScope, Totals
from ..core.verdict import Decision
from .ledger import ChargeResult, Ledger, MemoryLedger
from .tally import Tally

if TYPE_CHECKING:
    from .cluster import ClusterState

__all__ = ["RESERVATION_SECONDS", "State", "memory_state"]

# Admitted but not yet seen by the watch: held this long, then the watch's record rules.
RESERVATION_SECONDS = 120.0


class State:
    """The UsageView the core reads, and what an admitted workload leaves behind."""

    def __init__(
        self,
        tally: Tally,
        ledger: Ledger,
        *,
        mode: str,
        ready: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.time,
        cluster: ClusterState | None = None,
    ) -> None:
        self.tally = tally
        self.ledger = ledger
        self.mode = mode  # "memory" or "cluster"
        self.ready = ready
        self.blocking = ledger.blocking  # its writes wait on the network
        self.cluster = cluster  # the ClusterState, when there is one
        self._clock = clock

    # UsageView: what has expired (memory: past its deadline; cluster: a reservation the
    # watch never confirmed) is dropped before any sum is read
    def namespace_totals(self, namespace: str) -> Totals:
        self.tally.expire(self._clock())
        return self.tally.namespace_totals(namespace)

    def owner_totals(self, namespace: str, owner: str) -> Totals:
        self.tally.expire(self._clock())
        return self.tally.owner_totals(namespace, owner)

    def spent(self, namespace: str, scope: str | BudgetScope, period: str) -> float:
        return self.ledger.spent(namespace, scope, period)

    def allowance_use(self, namespace: str, jti: str) -> AllowanceUse:
        return self.ledger.allowance_use(namespace, jti)

    def record(
        self, uid: str, decision: Decision, now: float, entry: str = ""
    ) -> ChargeResult | None:
        """Charge the budget and the approval's allowance (in one write, under ledger `entry`,
        default the uid), then hold the usage under the object's uid, for an admitted
        workload. The charge can fail (over the budget or the allowance after all: another
        replica spent it first; or the ledger is unreachable): then nothing is held and the
        caller denies."""
        result = None
        if decision.charge is not None or decision.allowance is not None:
            result = self.ledger.charge(decision.charge, entry or uid, now, decision.allowance)
            if not result.ok:
                return result
        if decision.usage is not None:
            if self.mode == "memory":
                # nothing will tell this process the workload ended: its deadline will
                runtime = decision.runtime_seconds
                until = (
                    now + runtime
                    if runtime and decision.estimate and not decision.estimate.per_month
                    else None
                )
            else:
                until = now + RESERVATION_SECONDS
            self.tally.put(uid, decision.usage, until)
        return result


def memory_state(clock: Callable[[], float] = time.time) -> State:
    """Quota state for a single process with no cluster: the embedded default."""
    return State(Tally(), MemoryLedger(), mode="memory", clock=clock)
