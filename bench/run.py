"""The one command for every benchmark: `python bench/run.py` (or `make bench`).

Runs the in-process core benchmark (bench/core.py), the large-Workflow pricing benchmark
(bench/workflow.py), the kinds table's largest samples (bench/kinds.py), the quota-cache
benchmark (bench/quota.py), then the server benchmark
(bench/server.py) unless wrk, taskset or a second CPU is missing, prints one table and writes
it as JSON to bench/results/latest.json. Exit status: 0 when every benchmark ran and every
answer was right (targets missed included: they are results, not failures), 1 otherwise.

    python bench/run.py                 # the benchmarks above (make bench)
    python bench/run.py --quick         # every benchmark briefly: a smoke (make test)
    python bench/run.py --against REV   # the core paths, REV vs the work tree (bench/against.py)

`--quick` runs every benchmark, the load and soak of bench/load.py and the machinery of
`--against` (the work tree against itself) included, with a few calls or a second each,
unpinned and without waiting for a quiet machine: no target is checked and no result file is
written; the server's wrk rows are skipped when wrk is missing. It fails only when a
benchmark could not run or an answer was wrong. `--against REV --quick` is a short comparison.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import against
import load
import server
from quiet import ATTEMPTS, BUSY_LIMIT
from report import Row, render, write_json

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results" / "latest.json"


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _source_state() -> str:
    """The commit measured, and a fingerprint of webhook/'s uncommitted changes if any."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=BENCH.parent, capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    if not git("status", "--porcelain", "--", "webhook"):
        return f"webhook/ at {commit}"
    diff = hashlib.sha256(git("diff", "HEAD", "--", "webhook").encode()).hexdigest()[:12]
    return f"webhook/ at {commit} with uncommitted changes (diff sha256 {diff})"


def _in_process(name: str, quick: bool) -> Callable[[], list[Row]]:
    """bench/NAME.py's run(): imported only now, so a `webhook` that no longer has what it
    imports fails that benchmark alone."""
    return lambda: importlib.import_module(name).run(_log, quick)


def _attempt(
    name: str, benchmark: Callable[[], list[Row]], rows: list[Row], notes: list[str]
) -> bool:
    """Run one benchmark into `rows`: False (and a note, the traceback on stderr) when it
    could not run."""
    try:
        rows += benchmark()
    except Exception as exc:
        traceback.print_exc()
        notes.append(f"{name} benchmark failed: {type(exc).__name__}: {exc}")
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="every benchmark briefly: no targets, nothing written"
    )
    parser.add_argument(
        "--against", metavar="REV", help="only the core paths, REV vs the work tree, as ratios"
    )
    args = parser.parse_args(argv)
    if args.against is not None:
        return _against(args.against, args.quick)
    started = time.monotonic()
    quick: bool = args.quick
    notes = [_source_state()]
    rows: list[Row] = []
    ran = [
        _attempt(name, _in_process(name, quick), rows, notes)
        for name in ("core", "workflow", "kinds", "quota")
    ]
    reason = server.missing_prerequisites(quick)
    if reason is not None:
        _log(f"server benchmark skipped: {reason}")
        notes.append(f"server benchmark skipped: {reason}")
    else:
        if quick and not server.quick_plan().wrk:
            notes.append("server wrk rows skipped: wrk is not installed (apt-get install -y wrk)")
        ran.append(_attempt("server", lambda: server.run(_log, quick), rows, notes))
    if quick:
        if reason is None:
            ran.append(_attempt("load", lambda: load.run(log=_log, quick=True), rows, notes))
        ran.append(_attempt("against", _against_itself, rows, notes))
    failed = not all(ran) or any(not row.ok for row in rows)
    skipped = reason is not None or (quick and not server.quick_plan().wrk)
    if skipped and os.environ.get("CI") == "true":
        # CI installs wrk (make test): a part skipped there is a smoke that did not run
        notes.append("CI=true: a skipped part fails the run")
        failed = True
    noisy = [row.measurement for row in rows if (row.others_cpu or 0.0) > BUSY_LIMIT]
    if noisy and not quick:
        notes.append(
            f"other processes took more than {BUSY_LIMIT:.0%} of a CPU during "
            f"{len(noisy)} measurement(s) even after {ATTEMPTS} tries: those may read slow"
        )

    print()
    if quick:
        rows = [replace(row, target="", met=None) for row in rows]
        notes.append(
            f"quick run ({time.monotonic() - started:.0f} s): a smoke, not a measurement; "
            "no target checked, nothing written"
        )
    print(render(rows))
    for note in notes:
        print(f"note: {note}")
    if not quick:
        write_json(rows, RESULTS, notes)
        print(f"written to {RESULTS.relative_to(BENCH.parent)}")
    return 1 if failed else 0


def _against_itself() -> list[Row]:
    """The --against machinery, the work tree on both sides: one row, the ratios' spread."""
    _, comparisons = against.run(None, _log, quick=True)
    ratios = [c.median_ratio for c in comparisons]
    return [
        Row(
            "against",
            "against: the work tree vs itself (core paths, medians)",
            f"ratios {min(ratios):.2f} to {max(ratios):.2f} over {len(ratios)} paths",
        )
    ]


def _against(rev: str, quick: bool) -> int:
    try:
        table, _ = against.run(rev, _log, quick)
    except RuntimeError as exc:  # a revision that is not one, a worker that failed
        _log(f"--against {rev}: {exc}")
        return 1
    print()
    print(table)
    print(f"note: after = {_source_state()}")
    if not quick:
        print(f"written to {against.RESULTS.relative_to(BENCH.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
