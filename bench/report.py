"""What the benchmarks report: one `Row` per measurement, the nearest-rank percentile they all
use, the table `run.py` prints and the JSON it writes to bench/results/latest.json."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

__all__ = ["Row", "machine", "percentile", "render", "write_json"]


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table. `met` is None when the measurement has no target; `ok` is False
    when the benchmark itself failed (a wrong answer, a non-200, a socket error): its numbers
    then mean nothing."""

    section: str  # "core" or "server"
    measurement: str
    result: str
    target: str = ""
    met: bool | None = None
    ratio_to_noop: float | None = None  # requests/s of this endpoint / requests/s of /noop
    others_cpu: float | None = None  # share of one CPU other processes took meanwhile
    ok: bool = True
    data: Mapping[str, float | int | str | None] = field(default_factory=dict)


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of values sorted ascending (`fraction` 0.99 for p99)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def _status(row: Row) -> str:
    if not row.ok:
        return "ERROR"
    if row.met is None:
        return ""
    return "yes" if row.met else "MISSED"


def render(rows: Sequence[Row]) -> str:
    """The rows as a plain-text table."""
    header = ("measurement", "result", "target", "met", "vs /noop", "others' CPU")
    lines = [
        (
            row.measurement,
            row.result,
            row.target,
            _status(row),
            "" if row.ratio_to_noop is None else f"{row.ratio_to_noop:.2f}",
            "" if row.others_cpu is None else f"{row.others_cpu:.0%}",
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in (header, *lines)) for i in range(len(header))]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

    out = [fmt(header), fmt(["-" * width for width in widths])]
    section = rows[0].section if rows else ""
    for row, line in zip(rows, lines, strict=True):
        if row.section != section:
            out.append("")
            section = row.section
        out.append(fmt(line).rstrip())
    return "\n".join(out)


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in (
            Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace").splitlines()
        ):
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, str | int]:
    """What the numbers were measured on."""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count() or 0,
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "orjson": _package_version("orjson"),
        "uvicorn": _package_version("uvicorn"),
        "uvloop": _package_version("uvloop"),
        "httptools": _package_version("httptools"),
    }


def write_json(rows: Sequence[Row], path: Path, notes: Sequence[str] = ()) -> None:
    """The table as JSON, with the machine it ran on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"machine": machine(), "notes": list(notes), "rows": [asdict(row) for row in rows]}
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
