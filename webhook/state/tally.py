"""Live usages added up per namespace and per owner, kept current as workloads come and go.

Admission reads the sums in O(1) whatever the number of live workloads: the sums are
updated when a record changes, never recomputed on a read. Records can carry an expiry:
a reservation (admitted, not yet seen in the cluster) or, in memory, the deadline after
which a workload cannot be running any more.
"""

from __future__ import annotations

import heapq
import sys
import threading
from typing import TypeVar

from ..core.usage import Totals, Usage

__all__ = ["Tally"]


class _Sum:
    __slots__ = ("_totals", "by_type", "count", "gpus", "usd")

    def __init__(self) -> None:
        self.gpus = 0.0
        self.usd = 0.0
        self.count = 0
        self.by_type: dict[str, float] = {}
        self._totals: Totals | None = None

    def add(self, usage: Usage, sign: int) -> None:
        self._totals = None
        self.gpus += sign * usage.gpus
        self.usd += sign * usage.usd
        self.count += sign
        for gpu_type, count in usage.gpus_by_type:
            left = self.by_type.get(gpu_type, 0.0) + sign * count
            if left > 1e-9:
                self.by_type[gpu_type] = left
            else:
                self.by_type.pop(gpu_type, None)

    def totals(self) -> Totals:
        """The sums as admission reads them, built once per change rather than per read."""
        if self._totals is None:
            # float sums drift by ulps under add/remove; what is shown and compared is rounded
            self._totals = Totals(
                round(max(self.gpus, 0.0), 6),
                {t: round(c, 6) for t, c in self.by_type.items()},
                round(max(self.usd, 0.0), 2),
                self.count,
            )
        return self._totals


_EMPTY = Totals()


def _interned(usage: Usage) -> Usage:
    """The same namespace, owner, experiment and type names, stored once: 50,000 records
    parsed from JSON would otherwise hold 50,000 copies of each."""
    intern = sys.intern
    return usage._replace(
        namespace=intern(usage.namespace),
        owner=intern(usage.owner),
        experiment=intern(usage.experiment),
        gpus_by_type=tuple((intern(t), c) for t, c in usage.gpus_by_type),
    )


class Tally:
    """uid -> Usage, with the sums per namespace and per (namespace, owner). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, Usage] = {}
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._namespaces: dict[str, _Sum] = {}
        self._owners: dict[tuple[str, str], _Sum] = {}

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, uid: str) -> bool:
        return uid in self._records

    def put(self, uid: str, usage: Usage | None, expires: float | None = None) -> None:
        """Record what `uid` holds now (None: nothing any more); `expires` (Unix time) drops
        it then unless it is put again."""
        # Totals are read without the lock: a reader sees the sums before or after a change
        with self._lock:
            self._drop(uid)
            if usage is None:
                return
            usage = _interned(usage)
            self._records[uid] = usage
            self._sums(usage, +1)
            if expires is not None:
                self._expiry[uid] = expires
                heapq.heappush(self._heap, (expires, uid))

    def remove(self, uid: str) -> None:
        with self._lock:
            self._drop(uid)

    def expire(self, now: float) -> None:
        """Drop every record whose expiry has passed."""
        heap = self._heap
        if not heap or heap[0][0] > now:
            return  # the common case, read on every admission: no lock taken
        with self._lock:
            while self._heap and self._heap[0][0] <= now:
                when, uid = heapq.heappop(self._heap)
                if self._expiry.get(uid) == when:
                    self._drop(uid)

    def namespace_totals(self, namespace: str) -> Totals:
        found = self._namespaces.get(namespace)
        return found.totals() if found is not None else _EMPTY

    def owner_totals(self, namespace: str, owner: str) -> Totals:
        found = self._owners.get((namespace, owner))
        return found.totals() if found is not None else _EMPTY

    def namespaces(self) -> list[str]:
        return sorted(self._namespaces)

    def owners(self, namespace: str) -> list[str]:
        return sorted(o for ns, o in list(self._owners) if ns == namespace)

    def _drop(self, uid: str) -> None:
        old = self._records.pop(uid, None)
        self._expiry.pop(uid, None)
        if old is not None:
            self._sums(old, -1)

    def _sums(self, usage: Usage, sign: int) -> None:
        _add(self._namespaces, usage.namespace, usage, sign)
        _add(self._owners, (usage.namespace, usage.owner), usage, sign)


_K = TypeVar("_K", str, tuple[str, str])


def _add(table: dict[_K, _Sum], key: _K, usage: Usage, sign: int) -> None:
    """Add (sign +1) or take away (-1) `usage` in the sum under `key`; an emptied sum goes."""
    found = table.get(key)
    if found is None:
        found = table[key] = _Sum()
    found.add(usage, sign)
    if found.count == 0:
        del table[key]
