"""One admission review, end to end: bytes in, bytes out, never an exception.

    body -> parse -> evaluate (core) -> Decision -> record (validate) -> AdmissionReview bytes
                                               -> Mutation (mutate)  -> AdmissionReview bytes

This is the seam where errors map to answers: an unreadable review becomes a 400 answer
carrying its uid (or, with no uid, an HTTP 400 with a JSON error); an unexpected exception
becomes one `internal-error` answer, denied or allowed as the policy says, logged with a
request id and never shown to the client as a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Literal, NamedTuple, Protocol

import orjson

from .admission import (
    ReviewError,
    error_review,
    mutate_review,
    parse_review,
    recover_uid,
    validate_review,
)
from .core import messages
from .core.engine import Config, evaluate, handles, mutate
from .core.rules.limits import over_budget_now
from .core.types import Reason, Request
from .core.usage import ledger_entry, object_uid
from .core.verdict import Decision, refused, with_warning

if TYPE_CHECKING:
    from .state import State

__all__ = ["AdmissionService", "Answer", "Endpoint", "Observer"]

log = logging.getLogger("costgate.service")

Endpoint = Literal["mutate", "validate"]

# The longest an admitted review waits for its ledger write, queueing for a thread included.
# Each write is bounded (ConfigMapLedger's deadline), but when the API server is slow they
# queue behind each other; past this the policy answers, before the validating webhook's
# timeoutSeconds (10) runs out and the API server rejects the request itself.
LEDGER_WAIT_SECONDS = 8.0

# No review may hold the event loop for long (every other review, /healthz and /readyz wait
# on it), so two sorts are decided on worker threads: bodies above OFF_LOOP_BYTES (parsing
# and reading them is linear in their size, ~1 ms per 64 KiB), and Argo objects, whose
# templates are walked: the core caps that walk (MAX_VISITS) at a fraction of a second,
# which is still too long for the loop. Pods, the hot path, stay on the loop.
OFF_LOOP_BYTES = 64 * 1024
_WALKED_GROUP = "argoproj.io"
# The longest a review may be decided for, queueing for a worker included; then it is
# denied (a worker still under way finishes and its answer is dropped). With the ledger wait
# after it, the answer still comes before the webhook's timeoutSeconds (10).
REVIEW_SECONDS = 1.5
# CPU-bound work shares the interpreter lock: more workers would not decide faster, and a
# flood of heavy objects must queue (and time out) rather than starve the loop.
REVIEW_WORKERS = 2


class Answer(NamedTuple):
    status: int
    body: bytes
    # for metrics and the decision log: the kind reviewed and the outcome ("allow", "deny",
    # "warn", "error", ...), and on /validate the decision and the request it answers
    kind: str = ""
    outcome: str = ""
    decision: Decision | None = None
    request: Request | None = None


class Observer(Protocol):
    def observe(self, endpoint: str, answer: Answer, seconds: float) -> None: ...


class _NoObserver:
    def observe(self, endpoint: str, answer: Answer, seconds: float) -> None:
        return None


class AdmissionService:
    """Answers AdmissionReviews with the current Config (swappable as a whole)."""

    def __init__(
        self,
        config: Config | Callable[[], Config],
        *,
        observer: Observer | None = None,
        clock: Callable[[], float] = time.time,
        state: State | None = None,
        review_seconds: float = REVIEW_SECONDS,
    ) -> None:
        self._config = config if callable(config) else (lambda: config)
        self._observer = observer or _NoObserver()
        self._clock = clock
        self.state = state
        self.review_seconds = review_seconds
        self._workers = ThreadPoolExecutor(REVIEW_WORKERS, thread_name_prefix="costgate-review")

    def handle(self, body: bytes, endpoint: Endpoint) -> Answer:
        started = time.perf_counter()
        step = self._answer(body, endpoint)
        answer = step if isinstance(step, Answer) else step.finish()
        self._observe(endpoint, answer, time.perf_counter() - started)
        return answer

    def _observe(self, endpoint: str, answer: Answer, seconds: float) -> None:
        """Metrics and the decision log; their failure never costs the answer."""
        try:
            self._observer.observe(endpoint, answer, seconds)
        except Exception:
            log.exception("observer failed", extra={"endpoint": endpoint})

    async def handle_async(self, body: bytes, endpoint: Endpoint) -> Answer:
        """As `handle`, with the work that can take long run off the event loop, so that
        other reviews are answered meanwhile: large or Argo reviews are decided on a worker
        (and denied past `review_seconds`), a ledger write that waits on the API server on
        a thread."""
        started = time.perf_counter()
        if len(body) > OFF_LOOP_BYTES:
            step = await self._off_loop(lambda: self._answer(body, endpoint), body, endpoint)
        else:
            parsed = self._parse(body)
            if isinstance(parsed, Answer):
                step = parsed
            elif parsed.group == _WALKED_GROUP:
                request = parsed
                step = await self._off_loop(
                    lambda: self._decide(request, endpoint), body, endpoint, request
                )
            else:
                step = self._decide(parsed, endpoint)
        if isinstance(step, Answer):
            answer = step
        elif self.state is not None and self.state.blocking and _charges(step.decision):
            # only a ledger charge waits on the network; a quota hold is memory, answered
            # here rather than queued behind ledger writes for a thread
            try:
                answer = await asyncio.wait_for(
                    asyncio.to_thread(step.finish), LEDGER_WAIT_SECONDS
                )  # a write still queued is cancelled; one under way ends by its deadline
            except TimeoutError:
                answer = step.finish(f"no answer from the ledger in {LEDGER_WAIT_SECONDS:g}s")
        else:
            answer = step.finish()
        self._observe(endpoint, answer, time.perf_counter() - started)
        return answer

    async def _off_loop(
        self,
        decide: Callable[[], Answer | _Admitted],
        body: bytes,
        endpoint: Endpoint,
        request: Request | None = None,
    ) -> Answer | _Admitted:
        """`decide` on a worker, or the denial of a review not decided in time. Nothing is
        recorded on the worker, so a review dropped here holds and charges nothing."""
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(self._workers, decide), self.review_seconds
            )  # a review still queued is cancelled; one under way runs on, its answer dropped
        except TimeoutError:
            uid = request.uid if request is not None else recover_uid(body)
            log.warning(
                "review not decided in time",
                extra={"uid": uid, "endpoint": endpoint, "seconds": self.review_seconds},
            )
            message = messages.review_too_slow(self.review_seconds)
            if uid is None:
                return Answer(503, orjson.dumps({"error": message}), "", "error")
            kind = ""  # as for any body read off the loop: its kind is not known
            if request is not None:
                kind = request.kind if handles(request.group, request.kind) else "other"
            payload = error_review(uid, message, status=503)
            return Answer(200, payload, kind, "error", None, request)

    def refuse(self, error: ReviewError, endpoint: Endpoint) -> Answer:
        """The answer to a body refused before parsing (too large), observed like any other."""
        answer = self.unreadable(error)
        self._observe(endpoint, answer, 0.0)
        return answer

    def _answer(self, body: bytes, endpoint: Endpoint) -> Answer | _Admitted:
        parsed = self._parse(body)
        return parsed if isinstance(parsed, Answer) else self._decide(parsed, endpoint)

    def _parse(self, body: bytes) -> Request | Answer:
        try:
            return parse_review(body)
        except ReviewError as exc:
            return self.unreadable(exc)

    def _decide(self, request: Request, endpoint: Endpoint) -> Answer | _Admitted:
        # metrics label: bounded to the kinds costgate handles, whatever the sender writes
        kind = request.kind if handles(request.group, request.kind) else "other"
        config: Config | None = None
        try:
            config = self._config()
            if kind == "other" and handles(request.group, request.kind, config.policy):
                kind = request.kind  # a kind of the policy's kinds table
            now = self._clock()
            if endpoint == "mutate":
                answer = mutate(request, config=config, now=now, state=self.state)
                return Answer(200, mutate_review(request.uid, answer), kind, answer.outcome)
            decision = evaluate(request, config=config, now=now, state=self.state)
            recorded = decision.usage is not None or decision.allowance is not None
            if self.state is not None and decision.allowed and recorded:
                if not self.state.ready() and (
                    _limited(decision, config) or decision.allowance is not None
                ):
                    decision = _unavailable(
                        decision, config, "its view of the cluster is not in sync"
                    )
                elif not request.dry_run:  # a dry run is never charged
                    return _Admitted(self, request, kind, decision, config, now)
            payload = validate_review(request.uid, decision)
            return Answer(200, payload, kind, decision.outcome, decision, request)
        except Exception:
            return self._internal_error(request, kind, endpoint, config)

    def _internal_error(
        self, request: Request, kind: str, endpoint: Endpoint, config: Config | None
    ) -> Answer:
        request_id = uuid.uuid4().hex[:12]
        log.exception(
            "internal error evaluating review",
            extra={
                "request_id": request_id,
                "uid": request.uid,
                "kind": request.kind,
                "namespace": request.namespace,
                "endpoint": endpoint,
            },
        )
        allow = config is not None and config.policy.on_internal_error == "allow"
        payload = error_review(
            request.uid, messages.internal_error(request_id), status=500, allowed=allow
        )
        return Answer(200, payload, kind, "error", None, request)

    @staticmethod
    def unreadable(exc: ReviewError) -> Answer:
        """The answer to a body that is not a usable review."""
        message = messages.invalid_request(exc.detail)
        if exc.uid is None:
            return Answer(exc.status, orjson.dumps({"error": message}), "", "invalid")
        return Answer(200, error_review(exc.uid, message, status=exc.status), "", "invalid")


def _charges(decision: Decision) -> bool:
    """Whether admitting it writes the ledger (a budget or an approval's allowance)."""
    return decision.charge is not None or decision.allowance is not None


def _limited(decision: Decision, config: Config) -> bool:
    workload = decision.workload
    return workload is not None and config.policy.for_namespace(workload.namespace).limits_anything


def _unavailable(decision: Decision, config: Config, detail: str) -> Decision:
    """The policy's answer when quotas or budgets apply but the state cannot be used."""
    if config.policy.on_state_unavailable == "allow":
        note = messages.warning(messages.state_unavailable(detail) + " (allowed by policy)")
        return with_warning(decision, note)
    return refused(decision, Reason("state-unavailable", messages.state_unavailable(detail)))


class _Admitted(NamedTuple):
    """An allowed review whose workload must be recorded (budget charge, quota hold) before
    the answer goes out. Finished apart because the ledger write may wait on the network."""

    service: AdmissionService
    request: Request
    kind: str
    decision: Decision
    config: Config
    now: float

    def finish(self, unavailable: str = "") -> Answer:
        """Record, then answer; with `unavailable`, the answer without recording (the ledger
        did not answer in time)."""
        request, decision = self.request, self.decision
        try:
            state = self.service.state
            assert state is not None
            uid = object_uid(request)
            entry = ledger_entry(request, self.now)  # the entry the core checked against
            result = None if unavailable else state.record(uid, decision, self.now, entry)
            error = unavailable or (result.error if result is not None else "")
            if error:
                decision = _unavailable(decision, self.config, error)
                if decision.allowed:  # allowed unrecorded: the quota still holds it
                    state.record(uid, decision, self.now)
            elif result is not None and result.refusal is not None:
                decision = refused(decision, result.refusal)  # the approval's allowance
            elif result is not None and not result.ok:
                charge, workload = decision.charge, decision.workload
                assert charge is not None and workload is not None  # only a charge is refused
                late = over_budget_now(charge, workload, result.spent, result.budget)
                decision = refused(decision, late)
            payload = validate_review(request.uid, decision)
            return Answer(200, payload, self.kind, decision.outcome, decision, request)
        except Exception:
            return self.service._internal_error(request, self.kind, "validate", self.config)
