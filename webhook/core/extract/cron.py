"""A CronJob's or CronWorkflow's schedule read into what it can spend: runs a month and the
fire times that say how many runs overlap.

Kubernetes and Argo read schedules with robfig/cron's standard parser: five fields, the
`@yearly` ... `@hourly` macros and `@every <duration>`; no seconds field, no `H`, `L`, `W`
or `#`. croniter expands the fields. A schedule fires `len(times)` times on each day it
fires; the days are counted in the calendar month of a four-year cycle (so 29 February
counts) where it fires most, and never more than the policy's month (hours_per_month / 24
days). Fire times are wall-clock times in the schedule's time zone: where that zone has
daylight saving, the hour repeated when clocks go back is counted once more (an upper bound).
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
import zoneinfo
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from croniter import croniter  # type: ignore[import-untyped]  # no stubs shipped

from .. import messages
from ..types import Schedule
from .podspec import ObjectError, field

__all__ = ["read_schedule"]

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_POLICIES = ("Allow", "Forbid", "Replace")
_UNSUPPORTED = "H, L, W and # are not supported by Kubernetes or Argo"  # croniter's, not robfig's
_BRACKETED = re.compile(r"^\[.*\]\s*", re.DOTALL)
_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1, "m": 60}
_UNIT_SECONDS["h"] = 3600
# Bounds on what one review may make costgate read (real schedules are a few, and short)
_MOST_SCHEDULES = 100
_LONGEST = 1000
_CYCLE = range(2024, 2028)  # a leap year and three others


class _Bad(Exception):
    """What is wrong with one schedule string (the caller names the field)."""

    index = 0  # which of the schedules


def read_schedule(
    spec: Mapping[str, Any],
    *,
    schedules: tuple[tuple[str, Any], ...],
    zone_key: str,
    hours_per_month: float,
) -> Schedule:
    """The Schedule of `schedules` ((field path, value) each) in `spec`'s time zone (field
    `zone_key`) and concurrencyPolicy; ObjectError naming the field when one is unreadable."""
    zone_name = field(spec, zone_key, "spec", str, "")
    policy = field(spec, "concurrencyPolicy", "spec", str, "Allow")
    if policy not in _POLICIES:
        text = messages.invalid_concurrency_policy(policy, _POLICIES)
        raise ObjectError("spec.concurrencyPolicy", "string", policy, message=text)
    if len(schedules) > _MOST_SCHEDULES:
        text = messages.too_many_schedules(len(schedules), _MOST_SCHEDULES)
        raise ObjectError("spec.schedules", "list", schedules, message=text)
    for path, value in schedules:
        if type(value) is not str:
            raise ObjectError(path, "string", value)
        if len(value) > _LONGEST:  # before any cache keeps it
            raise ObjectError(
                path, "string", value, message=messages.invalid_schedule(path, value, "too long")
            )
    values = tuple(value for _, value in schedules)
    try:
        return _schedule(values, zone_name, policy, hours_per_month)
    except _Bad as exc:
        path, value = schedules[exc.index]
        text = messages.invalid_schedule(path, value, str(exc))
        raise ObjectError(path, "string", value, message=text) from None
    except _BadZone as exc:
        where = schedules[exc.index][0] if exc.prefixed else f"spec.{zone_key}"
        text = messages.unknown_time_zone(where, exc.name)
        raise ObjectError(where, "string", exc.name, message=text) from None


@lru_cache(maxsize=256)
def _schedule(
    values: tuple[str, ...], zone_name: str, policy: str, hours_per_month: float
) -> Schedule:
    """The Schedule of these schedule strings; remembered, as a CronJob is reviewed again on
    every update (a minute schedule fires 1,440 times a day)."""
    runs = 0.0
    times: list[int] = []
    every: list[int] = []
    most_days = hours_per_month / 24
    for index, value in enumerate(values):
        try:
            zone, expression = _zone_prefix(value.strip(), zone_name)
            if expression.startswith("@every"):
                seconds = _every(expression)
                every.append(seconds)
                runs += hours_per_month * 3600 / seconds
                continue
            fires, days, hour_most = _parse(_MACROS.get(expression, expression))
        except (_Bad, _BadZone) as exc:
            exc.index = index
            raise
        # where clocks go back, the repeated hour's fires once more (an upper bound)
        extra = hour_most if zone and _has_dst(zone) else 0
        runs += len(fires) * min(days, most_days) + extra
        times += fires
    shown = ", ".join(messages.quote(v) for v in values)
    return Schedule(shown, runs, policy, tuple(sorted(times)), tuple(every))


class _BadZone(Exception):
    index = 0

    def __init__(self, name: str, prefixed: bool) -> None:
        super().__init__(name)
        self.name = name
        self.prefixed = prefixed


def _zone_prefix(text: str, zone_name: str) -> tuple[str, str]:
    """The time zone (a `CRON_TZ=` or `TZ=` prefix wins over the field) and the rest."""
    prefixed = False
    for prefix in ("CRON_TZ=", "TZ="):
        if text.startswith(prefix):
            zone_name, _, text = text[len(prefix) :].partition(" ")
            text, prefixed = text.strip(), True
            break
    if zone_name and not _known_zone(zone_name):
        raise _BadZone(zone_name, prefixed)
    return zone_name, text


@lru_cache(maxsize=64)
def _known_zone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


@lru_cache(maxsize=64)
def _has_dst(name: str) -> bool:
    zone = zoneinfo.ZoneInfo(name)
    winter, summer = dt.datetime(2026, 1, 15, tzinfo=zone), dt.datetime(2026, 7, 15, tzinfo=zone)
    return winter.utcoffset() != summer.utcoffset()


def _every(expression: str) -> int:
    """Seconds between runs of `@every <Go duration>`; robfig runs at least a second apart."""
    text = expression[len("@every") :].strip()
    if not text or _GO_DURATION.sub("", text):
        raise _Bad("@every takes a duration such as 90m or 1h30m")
    seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _GO_DURATION.findall(text))
    return max(1, int(seconds))


@lru_cache(maxsize=256)
def _parse(expression: str) -> tuple[list[int], int, int]:
    """(minutes after midnight of each fire on a day it fires, the most days it fires in a
    calendar month, the most fires in one hour) of a five-field expression."""
    fields = expression.split()
    if len(fields) != 5:
        count = f"{len(fields)} field{'' if len(fields) == 1 else 's'}"
        raise _Bad(f"it has {count}, not 5 (minute hour day month weekday)")
    try:
        expanded, nth = croniter.expand(expression)
    except (ValueError, KeyError, TypeError, IndexError) as exc:  # croniter's are ValueErrors
        text = _BRACKETED.sub("", str(exc))  # croniter repeats the expression: quoted apart
        raise _Bad(_UNSUPPORTED if "hash" in text.lower() else text or "unreadable") from None
    if nth or any(v != "*" and type(v) is not int for values in expanded for v in values):
        raise _Bad(_UNSUPPORTED)
    minutes, hours, doms, months, dows = (
        None if values == ["*"] else set(values) for values in expanded
    )
    fire_minutes = sorted(minutes) if minutes is not None else list(range(60))
    fire_hours = sorted(hours) if hours is not None else list(range(24))
    fires = [h * 60 + m for h in fire_hours for m in fire_minutes]
    return fires, _most_days(doms, months, dows), len(fire_minutes)


def _most_days(doms: set[int] | None, months: set[int] | None, dows: set[int] | None) -> int:
    """The most days one calendar month has on which the schedule fires. As cron does: when
    both day fields are restricted a day matching either fires, else it must match both."""
    dows = {d % 7 for d in dows} if dows is not None else None  # 7 is Sunday too
    most = 0
    for year in _CYCLE:
        for month in range(1, 13):
            if months is not None and month not in months:
                continue
            first, length = calendar.monthrange(year, month)  # Monday is 0
            days = 0
            for day in range(1, length + 1):
                dom_ok = doms is None or day in doms
                dow_ok = dows is None or (first + day - 1 + 1) % 7 in dows  # cron: Sunday 0
                both = doms is not None and dows is not None
                days += (dom_ok or dow_ok) if both else (dom_ok and dow_ok)
            most = max(most, days)
    return most
