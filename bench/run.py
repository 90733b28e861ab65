"""The one command for every benchmark: `python bench/run.py` (or `make bench`).

Runs the in-process core benchmark (bench/core.py), the large-Workflow pricing benchmark
(bench/workflow.py), the quota-cache benchmark (bench/quota.py), then the server benchmark
(bench/server.py) unless wrk, taskset or a second CPU is missing, prints one table and writes
it as JSON to bench/results/latest.json. Exit status: 0 when every benchmark ran and every
answer was right (targets missed included: they are results, not failures), 1 otherwise.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import core
import quota
import server
import workflow
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


def main() -> int:
    notes = [_source_state()]
    failed = False
    rows: list[Row] = []
    try:
        rows += core.run(_log)
    except RuntimeError as exc:
        failed = True
        notes.append(f"core benchmark failed: {exc}")
    try:
        rows += workflow.run(_log)
    except RuntimeError as exc:
        failed = True
        notes.append(f"workflow benchmark failed: {exc}")
    try:
        rows += quota.run(_log)
    except RuntimeError as exc:
        failed = True
        notes.append(f"quota benchmark failed: {exc}")
    reason = server.missing_prerequisites()
    if reason is not None:
        _log(f"server benchmark skipped: {reason}")
        notes.append(f"server benchmark skipped: {reason}")
    else:
        try:
            rows += server.run(_log)
        except RuntimeError as exc:
            failed = True
            notes.append(f"server benchmark failed: {exc}")
    failed = failed or any(not row.ok for row in rows)
    noisy = [row.measurement for row in rows if (row.others_cpu or 0.0) > BUSY_LIMIT]
    if noisy:
        notes.append(
            f"other processes took more than {BUSY_LIMIT:.0%} of a CPU during "
            f"{len(noisy)} measurement(s) even after {ATTEMPTS} tries: those may read slow"
        )

    print()
    print(render(rows))
    for note in notes:
        print(f"note: {note}")
    write_json(rows, RESULTS, notes)
    print(f"written to {RESULTS.relative_to(BENCH.parent)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
