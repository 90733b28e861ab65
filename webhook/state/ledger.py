"""The budget ledger: what each experiment has spent, written so that it is spent once.

One document per namespace (in the cluster, the ConfigMap `costgate-ledger-<namespace>`):

    {"spent":   {"<experiment>/<period>": usd, ...},           # confirmed charges
     "pending": {"<entry>": ["<experiment>/<period>", usd, unix_time], ...},
     "approvals": {"<jti>": {"until": unix_time,                # the token's expiry
                             "spent":   {"<entry>": ["<what>", usd], ...},
                             "pending": {"<entry>": ["<what>", usd, unix_time], ...}}}}

A budget of several experiments (the shared one of unlisted experiments, the namespace's)
is the sum of their keys in the period, so it is read and charged in the same document
write as the experiment's own: no replica can pass either by racing another.

A charge is written as pending under the object's uid. The validating webhook sees the
object before it is stored, and a later webhook may still deny it, so a pending charge is
confirmed once the watch cache has seen the object, and dropped when the object never
appeared within a grace period. What an approval admitted is kept per object (the denial
names them) and charged in the same write as the budget, so the two cannot half-happen; a
token's entries are forgotten a day after it expired. The arithmetic lives in the pure
functions below; the two ledgers (memory, ConfigMap) only differ in how they store a
document.
"""

from __future__ import annotations

import copy
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import orjson

from ..core.rules.approval import check_allowance
from ..core.types import Reason
from ..core.usage import AllowanceCharge, AllowanceEntry, BudgetCharge, BudgetScope

__all__ = [
    "ChargeResult",
    "ConfigMapLedger",
    "Ledger",
    "MemoryLedger",
    "allowance_in",
    "budget_key",
    "reconciled",
    "spent_by",
    "spent_in",
    "with_allowance",
    "with_charge",
    "with_charges",
]

log = logging.getLogger("costgate.ledger")

Doc = dict[str, Any]
DATA_KEY = "ledger.json"
NAME_PREFIX = "costgate-ledger-"
GRACE_SECONDS = 300.0  # a charge whose object is not seen by then was denied later: dropped
# An approval's entries are kept this long after it expired (no review can use it by then,
# whatever the policy's clock skew), then dropped, so the document does not grow for ever.
KEEP_AFTER_EXPIRY = 86400.0


class ChargeResult(NamedTuple):
    ok: bool
    spent: float  # what the deciding budget had spent in the period before this charge
    error: str = ""  # the ledger could not be read or written
    refusal: Reason | None = None  # the approval's allowance refused the charge: why
    budget: int = 0  # the deciding budget (that refused it): its index in charge.budgets()


def budget_key(experiment: str, period: str) -> str:
    return f"{experiment}/{period}"


def _empty() -> Doc:
    return {"spent": {}, "pending": {}}


def spent_in(doc: Doc, key: str) -> float:
    """Confirmed plus pending spend under `key`."""
    total = float(doc.get("spent", {}).get(key, 0.0))
    for entry_key, usd, _ in doc.get("pending", {}).values():
        if entry_key == key:
            total += usd
    return round(total, 2)


def _covered(key: str, scope: BudgetScope, period: str) -> bool:
    experiment, _, in_period = key.rpartition("/")
    # an experiment is a label value: a key with another "/" is not an experiment's
    return in_period == period and "/" not in experiment and scope.covers(experiment)


def spent_by(doc: Doc, scope: BudgetScope, period: str) -> float:
    """Confirmed plus pending spend of the experiments `scope` covers in `period`."""
    if scope.kind == "experiment":
        return spent_in(doc, budget_key(scope.experiment, period))
    total = sum(
        float(usd) for key, usd in doc.get("spent", {}).items() if _covered(key, scope, period)
    )
    for key, usd, _ in doc.get("pending", {}).values():
        if _covered(key, scope, period):
            total += usd
    return round(total, 2)


class _Sums:
    """A document's spend in one period per experiment and in all, added up once per
    version of the document (a write replaces it, never changes it in place): a budget of
    all experiments is then read in O(listed), not O(keys), on every review."""

    __slots__ = ("doc", "experiments", "period", "total")

    def __init__(self, doc: Doc, period: str) -> None:
        self.doc, self.period = doc, period
        everyone = BudgetScope("namespace")
        self.experiments: dict[str, float] = {}
        for key, usd in doc.get("spent", {}).items():
            if _covered(key, everyone, period):
                name = key.rpartition("/")[0]
                self.experiments[name] = self.experiments.get(name, 0.0) + float(usd)
        for key, usd, _ in doc.get("pending", {}).values():
            if _covered(key, everyone, period):
                name = key.rpartition("/")[0]
                self.experiments[name] = self.experiments.get(name, 0.0) + usd
        self.total = sum(self.experiments.values())

    def spent(self, scope: BudgetScope) -> float:
        if scope.kind == "experiment":
            return round(self.experiments.get(scope.experiment, 0.0), 2)
        listed = sum(self.experiments.get(name, 0.0) for name in scope.listed)
        total = self.total - listed if scope.kind == "unlisted" else self.total
        return round(max(total, 0.0), 2)


def _spent(
    sums: dict[str, _Sums], namespace: str, doc: Doc, scope: BudgetScope, period: str
) -> float:
    """`spent_by`, through the ledger's memo `sums` of the namespace's document."""
    if scope.kind == "experiment":
        return spent_in(doc, budget_key(scope.experiment, period))
    found = sums.get(namespace)
    if found is None or found.doc is not doc or found.period != period:
        found = sums[namespace] = _Sums(doc, period)
    return found.spent(scope)


def with_charge(
    doc: Doc, charge: BudgetCharge, entry: str, now: float
) -> tuple[Doc | None, float, int]:
    """(the document with the charge added, or None when it would pass a limit; the spend
    before it in the budget that decides: the first it would pass, else the first; that
    budget's index in `charge.budgets()`). Charging the same entry again replaces its
    amount (a retried review)."""
    key = budget_key(charge.experiment, charge.period)
    pending = dict(doc.get("pending", {}))
    pending.pop(entry, None)  # a retried review replaces its own charge, never adds to it
    rest = {"spent": doc.get("spent", {}), "pending": pending}
    first = 0.0
    for index, (scope, limit) in enumerate(charge.budgets()):
        spent = spent_by(rest, scope, charge.period)
        if charge.enforce and spent + charge.usd > limit + 1e-9:
            return None, spent, index
        first = spent if index == 0 else first
    pending[entry] = [key, round(charge.usd, 2), round(now, 3)]
    return {**doc, "spent": dict(doc.get("spent", {})), "pending": pending}, first, 0


def allowance_in(doc: Doc, jti: str) -> dict[str, AllowanceEntry]:
    """What approval `jti` admitted, confirmed and pending, per ledger entry."""
    section = doc.get("approvals", {}).get(jti)
    if not section:
        return {}
    use = {k: AllowanceEntry(what, usd) for k, (what, usd) in section.get("spent", {}).items()}
    pending = section.get("pending", {})
    use.update({k: AllowanceEntry(what, usd) for k, (what, usd, _) in pending.items()})
    return use


def with_allowance(
    doc: Doc, allowance: AllowanceCharge, entry: str, now: float
) -> tuple[Doc | None, Reason | None]:
    """(the document with the approval charged under `entry`, or None when its allowance
    cannot take it; why not). The rule is the core's (rules.approval.check_allowance), here
    applied to the document about to be written."""
    approval = allowance.approval
    if allowance.enforce:
        refusal = check_allowance(allowance, allowance_in(doc, approval.jti), entry)
        if refusal is not None:
            return None, refusal
    approvals = dict(doc.get("approvals", {}))
    section = approvals.get(approval.jti) or {"spent": {}, "pending": {}}
    pending = dict(section.get("pending", {}))
    pending.pop(entry, None)  # a retried review replaces its own entry
    pending[entry] = [allowance.what, round(allowance.usd, 2), round(now, 3)]
    spent = {k: v for k, v in section.get("spent", {}).items() if k != entry}
    approvals[approval.jti] = {"until": approval.expires_at, "spent": spent, "pending": pending}
    return {**doc, "approvals": approvals}, None


def with_charges(
    doc: Doc,
    charge: BudgetCharge | None,
    allowance: AllowanceCharge | None,
    entry: str,
    now: float,
) -> tuple[Doc | None, ChargeResult]:
    """The budget charge and the approval charge of one admission, both or neither: (the
    document with them, or None when one is refused; the result to report)."""
    spent = 0.0
    if charge is not None:
        charged, spent, budget = with_charge(doc, charge, entry, now)
        if charged is None:
            return None, ChargeResult(False, spent, budget=budget)
        doc = charged
    if allowance is not None:
        allowed, refusal = with_allowance(doc, allowance, entry, now)
        if allowed is None:
            return None, ChargeResult(False, spent, refusal=refusal)
        doc = allowed
    return doc, ChargeResult(True, spent)


def reconciled(
    doc: Doc, seen: Callable[[str], bool | None], now: float, grace: float = GRACE_SECONDS
) -> Doc | None:
    """The document with pending charges confirmed (their object was seen) or dropped (not
    seen within `grace`); None when nothing changes. `seen` answers None when it cannot
    tell (the cache is not in sync), and such charges stay pending."""
    spent = dict(doc.get("spent", {}))
    pending = dict(doc.get("pending", {}))
    changed = False
    for entry, (key, usd, at) in list(pending.items()):
        verdict = seen(entry.partition("+")[0])
        if verdict:
            spent[key] = round(float(spent.get(key, 0.0)) + usd, 2)
        elif verdict is False and now - at > grace:
            log.info("dropped a charge whose object never appeared", extra={"entry": entry})
        else:
            continue
        del pending[entry]
        changed = True
    approvals = _approvals_reconciled(doc.get("approvals", {}), seen, now, grace)
    if approvals is not None:
        changed = True
    else:
        approvals = doc.get("approvals", {})
    if not changed:
        return None
    updated: Doc = {**doc, "spent": spent, "pending": pending}
    if approvals:
        updated["approvals"] = approvals
    else:
        updated.pop("approvals", None)
    return updated


def _approvals_reconciled(
    approvals: dict[str, Any], seen: Callable[[str], bool | None], now: float, grace: float
) -> dict[str, Any] | None:
    """The approvals section with pending entries confirmed or dropped as budget charges
    are, and tokens expired for a day forgotten; None when nothing changes."""
    changed = False
    kept: dict[str, Any] = {}
    for jti, section in approvals.items():
        if now > float(section.get("until", 0)) + KEEP_AFTER_EXPIRY:
            changed = True
            continue
        spent = dict(section.get("spent", {}))
        pending = dict(section.get("pending", {}))
        for entry, (what, usd, at) in list(pending.items()):
            verdict = seen(entry.partition("+")[0])
            if verdict:
                spent[entry] = [what, usd]
            elif verdict is False and now - at > grace:
                log.info(
                    "dropped an approval's charge whose object never appeared",
                    extra={"entry": entry, "jti": jti},
                )
            else:
                continue
            del pending[entry]
            changed = True
        kept[jti] = {**section, "spent": spent, "pending": pending}
    return kept if changed else None


def _due(doc: Doc, now: float) -> bool:
    """Whether reconciling could change the document: pending charges, or a token past
    keeping."""
    if doc.get("pending"):
        return True
    return any(
        section.get("pending") or now > float(section.get("until", 0)) + KEEP_AFTER_EXPIRY
        for section in doc.get("approvals", {}).values()
    )


class Ledger(Protocol):
    blocking: bool  # whether a charge waits on the network (then it runs off the event loop)

    def spent(self, namespace: str, scope: str | BudgetScope, period: str) -> float: ...

    def charge(
        self,
        charge: BudgetCharge | None,
        entry: str,
        now: float,
        allowance: AllowanceCharge | None = None,
    ) -> ChargeResult: ...

    def allowance_use(self, namespace: str, jti: str) -> dict[str, AllowanceEntry]: ...

    def document(self, namespace: str) -> Doc: ...

    def namespaces(self) -> list[str]: ...


class MemoryLedger:
    """The ledger of a single process (the embedded default): same arithmetic, a dict."""

    blocking = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._docs: dict[str, Doc] = {}
        self._sums: dict[str, _Sums] = {}

    def spent(self, namespace: str, scope: str | BudgetScope, period: str) -> float:
        doc = self._docs.get(namespace)
        return _spent(self._sums, namespace, doc, _scope(scope), period) if doc else 0.0

    def charge(
        self,
        charge: BudgetCharge | None,
        entry: str,
        now: float,
        allowance: AllowanceCharge | None = None,
    ) -> ChargeResult:
        namespace = _namespace(charge, allowance)
        with self._lock:
            doc = self._docs.get(namespace, _empty())
            updated, result = with_charges(doc, charge, allowance, entry, now)
            if updated is not None:
                self._docs[namespace] = updated
            return result

    def allowance_use(self, namespace: str, jti: str) -> dict[str, AllowanceEntry]:
        doc = self._docs.get(namespace)
        return allowance_in(doc, jti) if doc else {}

    def document(self, namespace: str) -> Doc:
        return self._docs.get(namespace, _empty())

    def namespaces(self) -> list[str]:
        return sorted(self._docs)


def _scope(scope: str | BudgetScope) -> BudgetScope:
    return BudgetScope("experiment", scope) if isinstance(scope, str) else scope


def _namespace(charge: BudgetCharge | None, allowance: AllowanceCharge | None) -> str:
    """The namespace whose document one admission's charges go to (both name the
    workload's: an approval is for one namespace)."""
    if charge is not None:
        return charge.namespace
    assert allowance is not None, "nothing to charge"
    return allowance.approval.namespace


def _decode(configmap: dict[str, Any]) -> Doc:
    data = (configmap.get("data") or {}).get(DATA_KEY)
    if not data:
        return _empty()
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        log.error("unreadable ledger document; starting it over", extra={"data": data[:200]})
        return _empty()
    return doc if isinstance(doc, dict) else _empty()


class ConfigMapLedger:
    """The ledger in ConfigMaps, written with optimistic concurrency: every write carries
    the resourceVersion it read, and a 409 Conflict (another replica wrote first) means
    read again and recompute, so two replicas cannot both spend the last dollar.

    A charge takes at most `deadline` seconds, reads, writes and retries included, so that
    the validating webhook answers within its own timeout (10 s) when the API server is
    slow: after that the charge fails as unreachable and the policy answers."""

    blocking = True

    def __init__(
        self,
        # kubernetes.client.CoreV1Api, called raw (_preload_content=False, dict bodies),
        # which its annotations (model classes in and out) do not describe
        api: Any,
        namespace: str,
        *,
        attempts: int = 10,
        timeout: float = 3.0,
        deadline: float = 5.0,
        grace: float = GRACE_SECONDS,
    ) -> None:
        self.grace = grace
        self._api = _without_retries(api)
        self._namespace = namespace
        self._attempts = attempts
        self._timeout = timeout
        self._deadline = deadline
        self._lock = threading.Lock()
        self._turns: dict[str, threading.Lock] = {}  # namespace -> held while writing it
        # namespace -> (resourceVersion, document): fed by the watch and by our own writes
        self._cache: dict[str, tuple[str, Doc]] = {}
        self._sums: dict[str, _Sums] = {}

    @staticmethod
    def name_for(namespace: str) -> str:
        return NAME_PREFIX + namespace

    def observe(self, configmap: dict[str, Any], deleted: bool = False) -> None:
        """A ConfigMap event from the watch on costgate's namespace."""
        metadata = configmap.get("metadata") or {}
        name = str(metadata.get("name", ""))
        if not name.startswith(NAME_PREFIX):
            return
        namespace = name.removeprefix(NAME_PREFIX)
        with self._lock:
            if deleted:
                self._cache.pop(namespace, None)
                return
            version = str(metadata.get("resourceVersion", ""))
            current = self._cache.get(namespace)
            if current is None or _newer(version, current[0]):
                self._cache[namespace] = (version, _decode(configmap))

    def spent(self, namespace: str, scope: str | BudgetScope, period: str) -> float:
        found = self._cache.get(namespace)
        return _spent(self._sums, namespace, found[1], _scope(scope), period) if found else 0.0

    def document(self, namespace: str) -> Doc:
        found = self._cache.get(namespace)
        return found[1] if found else _empty()

    def allowance_use(self, namespace: str, jti: str) -> dict[str, AllowanceEntry]:
        found = self._cache.get(namespace)
        return allowance_in(found[1], jti) if found else {}

    def namespaces(self) -> list[str]:
        return sorted(self._cache)

    def charge(
        self,
        charge: BudgetCharge | None,
        entry: str,
        now: float,
        allowance: AllowanceCharge | None = None,
    ) -> ChargeResult:
        return self._update(
            _namespace(charge, allowance),
            lambda doc: with_charges(doc, charge, allowance, entry, now),
        )

    def reconcile(self, seen: Callable[[str], bool | None], now: float) -> int:
        """Confirm or drop pending charges in every ledger; the number of ledgers written."""

        def change(doc: Doc) -> tuple[Doc | None, ChargeResult]:
            updated = reconciled(doc, seen, now, self.grace)
            return (doc, _UNCHANGED) if updated is None else (updated, _WRITTEN)

        written = 0
        for namespace in list(self._cache):
            if not _due(self._cache[namespace][1], now):
                continue
            result = self._update(namespace, change, only_changed=True)
            written += result.ok
        return written

    def _update(
        self,
        namespace: str,
        change: Callable[[Doc], tuple[Doc | None, ChargeResult]],
        *,
        only_changed: bool = False,
    ) -> ChargeResult:
        end = time.monotonic() + self._deadline
        # One write at a time per document in this replica: concurrent charges only made
        # each other conflict (409), and a burst of them ran out of attempts.
        with self._lock:
            turn = self._turns.setdefault(namespace, threading.Lock())
        if not turn.acquire(timeout=self._deadline):
            return ChargeResult(False, 0.0, f"ledger busy: waited {self._deadline:g}s to write")
        try:
            return self._change(namespace, change, only_changed, end)
        finally:
            turn.release()

    def _change(
        self,
        namespace: str,
        change: Callable[[Doc], tuple[Doc | None, ChargeResult]],
        only_changed: bool,
        end: float,
    ) -> ChargeResult:
        from kubernetes.client.exceptions import ApiException  # the edge's own dependency

        name = self.name_for(namespace)
        fresh = False
        for attempt in range(self._attempts):
            try:
                version, doc = self._read(namespace, name, fresh, end)
                updated, result = change(doc)
                if updated is None:
                    if fresh:
                        return result
                    fresh = True  # refused on a cached copy: decide on the stored one
                    continue
                if only_changed and updated is doc:
                    return result
                self._write(namespace, name, version, updated, end)
                return result
            except ApiException as exc:
                if exc.status == 409:  # someone wrote first: read again, recompute
                    fresh = True
                    time.sleep(random.uniform(0, 0.005 * (attempt + 1)))
                    continue
                return ChargeResult(False, 0.0, f"the API server answered {exc.status}")
            except Exception as exc:  # connection refused, timeouts: the ledger is unreachable
                return ChargeResult(
                    False, 0.0, f"cannot reach the API server: {type(exc).__name__}"
                )
        return ChargeResult(False, 0.0, f"{self._attempts} conflicting writes in a row")

    def _time_left(self, end: float) -> float:
        """The timeout of the next call: what is left of the charge's deadline, at most
        `timeout`."""
        left = end - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no answer within {self._deadline:g}s")
        return min(self._timeout, left)

    def _read(self, namespace: str, name: str, fresh: bool, end: float) -> tuple[str, Doc]:
        from kubernetes.client.exceptions import ApiException

        if not fresh and namespace in self._cache:
            return self._cache[namespace]
        try:
            response = self._api.read_namespaced_config_map(
                name, self._namespace, _preload_content=False, _request_timeout=self._time_left(end)
            )
        except ApiException as exc:
            if exc.status == 404:
                return "", _empty()
            raise
        configmap = orjson.loads(response.data)
        version = str(configmap["metadata"]["resourceVersion"])
        doc = _decode(configmap)
        with self._lock:
            self._cache[namespace] = (version, doc)
        return version, doc

    def _write(self, namespace: str, name: str, version: str, doc: Doc, end: float) -> None:
        metadata: dict[str, Any] = {
            "name": name,
            "namespace": self._namespace,
            "labels": {"app.kubernetes.io/name": "costgate", "costgate.io/ledger": "true"},
            "annotations": {"costgate.io/ledger-for": namespace},
        }
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata,
            "data": {DATA_KEY: orjson.dumps(doc, option=orjson.OPT_SORT_KEYS).decode()},
        }
        timeout = self._time_left(end)
        if version:
            metadata["resourceVersion"] = version
            response = self._api.replace_namespaced_config_map(
                name, self._namespace, body, _preload_content=False, _request_timeout=timeout
            )
        else:  # a 409 AlreadyExists (another replica created it) is retried like a conflict
            response = self._api.create_namespaced_config_map(
                self._namespace, body, _preload_content=False, _request_timeout=timeout
            )
        stored = orjson.loads(response.data)
        with self._lock:
            self._cache[namespace] = (str(stored["metadata"]["resourceVersion"]), doc)


_UNCHANGED = ChargeResult(False, 0.0)  # a reconciliation that had nothing to write
_WRITTEN = ChargeResult(True, 0.0)


def _without_retries(api: Any) -> Any:
    """The same CoreV1Api on a client without urllib3's own retries: they retry a timed-out
    GET or PUT three times, so one slow write took four timeouts (12 s, past the webhook's).
    The ledger retries conflicts itself, within its deadline."""
    from kubernetes import client

    configuration = copy.copy(api.api_client.configuration)
    configuration.retries = False
    return client.CoreV1Api(client.ApiClient(configuration))


def _newer(version: str, than: str) -> bool:
    """resourceVersions are opaque strings; etcd's are integers, compared as such when they
    are, and a different string otherwise counts as newer."""
    if version.isdigit() and than.isdigit():
        return int(version) > int(than)
    return version != than
