"""Before vs after in one run: bench/core.py's paths (the JSON parse, `evaluate(parse_review())`
and `AdmissionService.handle()` on the captured reviews) timed against the `webhook` package
of a git revision and against the work tree's, interleaved, as ratios (work tree / revision).

    python bench/run.py --against REV      # the table; also bench/results/against.json
    python bench/against.py REV            # the same

REV is checked out with `git worktree add --detach` in a temporary directory (removed at the
end; the work tree is not touched). Each side runs in its own worker process: this tree's
bench/core.py with the side's root first on PYTHONPATH and as its directory, so the two
`webhook` packages never meet in one interpreter (each worker checks which one it imported).
Both sides therefore run the same benchmark code, which imports from `webhook` only what
both have: `tables.load_config`, `core.engine.Config` and `evaluate`, `admission.parse_review`
and `service.AdmissionService`.

Each worker checks every answer and warms every path up (WARMUP_CALLS calls), then the two
take turns, ROUNDS times: for each case one side times BATCHES_PER_ROUND batches of
CALLS_PER_BATCH calls of each path (the paths taking turns batch by batch, as in core.py),
then the other, the side going first alternating from round to round. Only one worker runs at
a time, so a slow moment of the machine falls on both sides alike. Per side, as in core.py:
**median** = median over its batches of the batch's mean per call, **p99** = 99th percentile
of its single calls. `orjson.loads` is the same code on both sides: its ratio shows the noise.
No targets here; the **others' CPU** column is what other processes took meanwhile.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from quiet import CpuTimes, others_share, wait_quiet
from report import machine, percentile

__all__ = ["FULL", "QUICK", "Comparison", "Plan", "render", "run", "worktree"]

BENCH = Path(__file__).resolve().parent
REPOSITORY = BENCH.parent
RESULTS = BENCH / "results" / "against.json"


@dataclass(frozen=True, slots=True)
class Plan:
    warmup_calls: int
    rounds: int
    batches_per_round: int
    calls_per_batch: int
    patient: bool  # wait for a quiet machine before the first round


# Per side and path, the 40,000 calls of core.py's own measurement, in 40 short blocks rather
# than 20 batches of 2,000: the finer the turns, the more alike a busy moment hits both sides.
FULL = Plan(warmup_calls=2_000, rounds=40, batches_per_round=1, calls_per_batch=1_000, patient=True)
QUICK = Plan(warmup_calls=50, rounds=2, batches_per_round=1, calls_per_batch=100, patient=False)


@dataclass(frozen=True, slots=True)
class Comparison:
    """One path of one case on both sides."""

    case: str
    path: str
    before_median_us: float
    before_p99_us: float
    after_median_us: float
    after_p99_us: float
    calls: int  # per side
    others_cpu: float  # share of one CPU other processes took during this case's blocks

    @property
    def median_ratio(self) -> float:
        return self.after_median_us / self.before_median_us

    @property
    def p99_ratio(self) -> float:
        return self.after_p99_us / self.before_p99_us


@dataclass(slots=True)
class _Collected:
    means: list[float] = field(default_factory=list)
    singles: list[int] = field(default_factory=list)


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=REPOSITORY, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


@contextmanager
def worktree(rev: str) -> Iterator[tuple[str, Path]]:
    """(the commit, a temporary checkout of it), removed on exit."""
    try:
        commit = _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except RuntimeError:
        raise RuntimeError(f"{rev!r} is not a commit of {REPOSITORY}") from None
    tmp = Path(tempfile.mkdtemp(prefix="costgate-against-"))
    tree = tmp / "tree"
    try:
        _git("worktree", "add", "--detach", "--quiet", str(tree), commit)
        yield commit, tree
    finally:
        if tree.exists():
            try:
                _git("worktree", "remove", "--force", str(tree))
            except RuntimeError:
                _git("worktree", "prune")
        shutil.rmtree(tmp, ignore_errors=True)


class _Worker:
    """One side: bench/against.py --worker ROOT, spoken to in JSON lines."""

    def __init__(self, label: str, root: Path, plan: Plan, log_path: Path) -> None:
        self.label, self.root, self.log_path = label, root, log_path
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(root)]
        command += ["--warmup", str(plan.warmup_calls)]
        with self.log_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                command,
                cwd=root,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )

    def _receive(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            raise RuntimeError(
                f"the {self.label} worker exited with {self.process.returncode}:\n{self.tail()}"
            )
        message: dict[str, Any] = json.loads(line)
        if "error" in message:
            raise RuntimeError(f"the {self.label} worker: {message['error']}")
        return message

    def ready(self) -> dict[str, Any]:
        return self._receive()

    def sample(
        self, case: int, batches: int, calls: int
    ) -> dict[str, tuple[list[float], list[int]]]:
        assert self.process.stdin is not None
        request = {"case": case, "batches": batches, "calls_per_batch": calls}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        samples: dict[str, tuple[list[float], list[int]]] = self._receive()["samples"]
        return samples

    def tail(self) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-20:])

    def close(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()  # the worker's cue to exit
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def compare(
    sides: Sequence[tuple[str, Path]], plan: Plan, log: Callable[[str], None]
) -> list[Comparison]:
    """Time both sides (before, after) in turns; their comparisons, per case and path."""
    with tempfile.TemporaryDirectory(prefix="costgate-against-logs-") as logs:
        workers = [
            _Worker(label, root, plan, Path(logs) / f"worker-{i}.log")
            for i, (label, root) in enumerate(sides)
        ]
        try:
            return _compare(workers, plan, log)
        finally:
            for worker in workers:
                worker.close()


def _compare(workers: list[_Worker], plan: Plan, log: Callable[[str], None]) -> list[Comparison]:
    cases: list[dict[str, Any]] = []
    for worker in workers:
        ready = worker.ready()
        log(f"against: {worker.label}: {ready['webhook']} (answers checked, warmed up)")
        cases = ready["cases"]
    live = [worker.process.pid for worker in workers]
    if plan.patient:
        wait_quiet(log, live)
    collected = {
        (side, case, path): _Collected()
        for side in range(len(workers))
        for case in range(len(cases))
        for path in cases[case]["paths"]
    }
    others = {case: [0.0, 0.0] for case in range(len(cases))}  # CPU-seconds, seconds
    for round_ in range(plan.rounds):
        log(f"against: round {round_ + 1} of {plan.rounds}")
        order = list(range(len(workers)))
        if round_ % 2:
            order.reverse()
        for case in range(len(cases)):
            for side in order:
                before = CpuTimes.now(live)
                found = workers[side].sample(case, plan.batches_per_round, plan.calls_per_batch)
                after = CpuTimes.now(live)
                others[case][0] += others_share(before, after) * (after.at - before.at)
                others[case][1] += after.at - before.at
                for path, (means, singles) in found.items():
                    collected[side, case, path].means.extend(means)
                    collected[side, case, path].singles.extend(singles)
    comparisons = []
    for case, described in enumerate(cases):
        for path, label in described["paths"].items():
            (b_median, b_p99, calls), (a_median, a_p99, _) = (
                _summary(collected[side, case, path]) for side in (0, 1)
            )
            busy, elapsed = others[case]
            comparisons.append(
                Comparison(
                    described["label"],
                    label,
                    b_median,
                    b_p99,
                    a_median,
                    a_p99,
                    calls,
                    busy / elapsed if elapsed > 0 else 0.0,
                )
            )
    return comparisons


def _summary(collected: _Collected) -> tuple[float, float, int]:
    ordered = sorted(collected.singles)
    median = statistics.median(collected.means) / 1000
    return median, percentile(ordered, 0.99) / 1000, len(ordered)


def render(comparisons: Sequence[Comparison], before: str, after: str) -> str:
    header = (
        "case: path",
        f"{before} median",
        "p99",
        f"{after} median",
        "p99",
        "median ratio",
        "p99 ratio",
        "others' CPU",
    )
    lines = [
        (
            f"{c.case}: {c.path}",
            f"{c.before_median_us:.1f} µs",
            f"{c.before_p99_us:.1f} µs",
            f"{c.after_median_us:.1f} µs",
            f"{c.after_p99_us:.1f} µs",
            f"{c.median_ratio:.2f}",
            f"{c.p99_ratio:.2f}",
            f"{c.others_cpu:.0%}",
        )
        for c in comparisons
    ]
    widths = [max(len(line[i]) for line in (header, *lines)) for i in range(len(header))]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, lines)])


def run(
    rev: str | None, log: Callable[[str], None] = print, quick: bool = False
) -> tuple[str, list[Comparison]]:
    """(the table, the comparisons) of REV (before) against the work tree (after). REV None:
    the work tree against itself, the check `run.py --quick` makes of this machinery."""
    plan = QUICK if quick else FULL
    here = ("work tree", REPOSITORY)
    if rev is None:
        comparisons = compare(
            [("work tree (1)", REPOSITORY), ("work tree (2)", REPOSITORY)], plan, log
        )
        return render(comparisons, "tree 1", "tree 2"), comparisons
    with worktree(rev) as (commit, tree):
        log(f"against: {rev} = {commit[:12]} checked out in {tree}")
        comparisons = compare([(rev, tree), here], plan, log)
    calls = comparisons[0].calls if comparisons else 0
    title = (
        f"core paths, {rev} ({commit[:12]}) vs the work tree, {calls:,} calls per side and path "
        f"in {plan.rounds} interleaved rounds; ratio = work tree / {rev}"
    )
    table = f"{title}\n\n{render(comparisons, rev, 'work tree')}"
    control = [c.median_ratio for c in comparisons if c.path.startswith("orjson")]
    if control:
        table += (
            f"\nnoise: orjson.loads is the same code on both sides; its median ratios were "
            f"{min(control):.2f} to {max(control):.2f} in this run"
        )
    if not quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "machine": machine(),
            "before": {"rev": rev, "commit": commit},
            "after": "work tree",
            "plan": asdict(plan),
            "rows": [
                {**asdict(c), "median_ratio": c.median_ratio, "p99_ratio": c.p99_ratio}
                for c in comparisons
            ],
        }
        RESULTS.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    return table, comparisons


# -- the worker --------------------------------------------------------------------------


def _worker(root: Path, warmup: int, requests: IO[str], answers: IO[str]) -> None:
    def send(message: dict[str, Any]) -> None:
        answers.write(json.dumps(message) + "\n")
        answers.flush()

    try:
        import core  # this tree's benchmark code, on the side's webhook package

        import webhook

        where = Path(webhook.__file__).resolve()
        if not where.is_relative_to(root.resolve()):
            raise RuntimeError(f"imported {where}, not the package under {root}")
        config, service = core.prepare()
        calls, described = [], []
        for case in core.CASES:
            body = (core.FIXTURES / case.fixture).read_bytes()
            core.check_answer(service, body, case)
            paths = core.paths(case, body, config, service)
            core.warm(paths, warmup)
            calls.append(paths)
            labels = {name: core.PATH_LABELS[name].format(endpoint=case.endpoint) for name in paths}
            described.append({"label": case.label, "paths": labels})
    except Exception as exc:
        send({"error": f"{type(exc).__name__}: {exc}"})
        raise
    send({"webhook": str(where.parent), "cases": described})
    for line in requests:
        request = json.loads(line)
        found = core.sample(calls[request["case"]], request["batches"], request["calls_per_batch"])
        send({"samples": found})


def main(argv: Sequence[str] = sys.argv[1:]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rev", nargs="?", help="the revision to compare the work tree with")
    parser.add_argument("--quick", action="store_true", help="a few calls: a smoke")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=FULL.warmup_calls, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        answers, sys.stdout = sys.stdout, sys.stderr  # stray prints must not reach the pipe
        _worker(args.worker, args.warmup, sys.stdin, answers)
        return 0

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    table, _ = run(args.rev, log, args.quick)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
