"""How costgate writes for kubectl: quoting what users control, money, durations, warning
lines, the one-line denial, and the sentences about requests costgate cannot read.

Values the user controls (names, labels, annotations) pass through `quote`, so they cannot
inject newlines into kubectl output or stretch a message without bound.
"""

from __future__ import annotations

import datetime as dt
import reprlib
from collections.abc import Iterable

from ..types import (
    Reason,
)

__all__ = [
    "MAX_LISTED",
    "SHORT_WARNING",
    "WARNING_PREFIX",
    "amount",
    "denial",
    "format_duration",
    "internal_error",
    "invalid_request",
    "money",
    "more_warnings",
    "nested_too_deep",
    "object_name",
    "one_line",
    "out_of_range",
    "quote",
    "review_too_slow",
    "state_unavailable",
    "utc",
    "warning",
    "would_deny",
    "wrong_type",
]

WARNING_PREFIX = "costgate: "


# AdmissionResponse.warnings: "Limit warnings to 120 characters if possible. Warnings over
# 256 characters and large numbers of warnings may be truncated."
SHORT_WARNING = 120


_MAX_WARNING = 256


_MAX_QUOTED = 80


# Problems, templates and labels spelled out in one message; the rest are counted, so that
# 10,000 bad containers make a denial one can read rather than a megabyte of it.
MAX_LISTED = 10


# repr bounded in depth and width: a value nested 1,000 levels deep (orjson reads 1024, Python
# recurses about 1000) or a list of a million items quotes in constant time, without raising
_REPR = reprlib.Repr()


_REPR.maxstring = _REPR.maxother = _MAX_QUOTED


def quote(value: object) -> str:
    """A user-controlled value in double quotes, control characters escaped, length bounded."""
    text = value if isinstance(value, str) else _REPR.repr(value)
    if len(text) > _MAX_QUOTED:
        text = text[: _MAX_QUOTED - 1] + "…"
    if '"' in text or "\\" in text:
        text = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{one_line(text)}"'


def one_line(text: str) -> str:
    """`text` with what kubectl would not print as itself (newlines, NUL, bidi overrides,
    zero-width characters) escaped. User-controlled names also reach sentences unquoted,
    inside field paths and template names, so the one-line guarantee is kept here."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)


def money(usd: float) -> str:
    return f"${usd:,.2f}"


def format_duration(seconds: int) -> str:
    """A runtime limit as people write it: `7d`, `12h`, `90m`."""
    if seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def warning(text: str) -> str:
    """A kubectl warning line: prefixed, one line, within the API server's limit."""
    line = WARNING_PREFIX + one_line(text)
    return line if len(line) <= _MAX_WARNING else line[: _MAX_WARNING - 1] + "…"


def more_warnings(count: int) -> str:
    return warning(f"{count:,} more warnings not shown; costgate estimate -f FILE lists them all")


def would_deny(code: str, message: str) -> str:
    return warning(f"would be denied in enforce mode ({code}): {message}")


def denial(reasons: Iterable[Reason]) -> str:
    """The status message kubectl prints after "denied the request:": one line."""
    reasons = tuple(reasons)
    if len(reasons) == 1:
        return one_line(reasons[0].message)
    texts = [one_line(r.message) for r in reasons[:MAX_LISTED]]
    listed = " ".join(f"({i}) {t};" for i, t in enumerate(texts, 1))[:-1]
    more = len(reasons) - len(texts)
    return f"{len(reasons)} problems: {listed}" + (f"; and {more:,} more" if more else "")


def object_name(kind: str, name: str) -> str:
    return f"{kind.lower()} {quote(name)}"


def amount(value: float, money_: bool) -> str:
    return money(value) if money_ else f"{value:g}"


def utc(seconds: float) -> str:
    """A Unix time as UTC ISO 8601 (formatting only: the core reads no clock)."""
    return dt.datetime.fromtimestamp(int(seconds), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def wrong_type(path: str, expected: str, value: object) -> str:
    return f"field {path} must be {_TYPE_NAMES.get(expected, expected)}, not {_describe(value)}"


def out_of_range(path: str, value: object, high: int) -> str:
    return f"field {path} must be a whole number from 0 to {high}, not {quote(value)}"


# what a field should be (ObjectError's `expected`), and what a value is, in words
_TYPE_NAMES = {
    "dict": "an object",
    "object": "an object",
    "list": "a list",
    "str": "a string",
    "int": "an integer",
    "bool": "a boolean",
}


_VALUE_NAMES = {
    dict: "an object",
    list: "a list",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
}


def _describe(value: object) -> str:
    return _VALUE_NAMES.get(type(value), type(value).__name__)


def nested_too_deep() -> str:
    return (
        "the object is nested too deeply to read (lists, objects or templates calling "
        "templates, hundreds of levels down); flatten it"
    )


def invalid_request(detail: str) -> str:
    return f"costgate cannot read this AdmissionReview: {one_line(detail)}"


def internal_error(request_id: str) -> str:
    return (
        f"costgate could not evaluate this request (internal error, request id {request_id}); "
        f"retry, and if it persists give the request id to the platform team"
    )


def review_too_slow(seconds: float) -> str:
    return (
        f"costgate could not finish reviewing this object in {seconds:g}s, the most a review "
        f"may take so that it cannot hold up the others; retry, and if it persists check it "
        f"with costgate estimate and make it smaller"
    )


def state_unavailable(detail: str) -> str:
    return (
        f"costgate cannot check this namespace's quotas and budgets ({detail}); retry in a "
        f"minute, and if it persists tell the platform team"
    )
