"""Kubernetes quantities and costgate durations, read into numbers.

`parse_quantity` follows the API server's grammar (k8s.io/apimachinery resource.Quantity),
which is stricter than the official Python client's helper: no `K`, no `NaN`, no spaces.
`parse_duration` reads the `costgate.io/max-runtime` annotation.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from functools import lru_cache

__all__ = ["MAX_DEADLINE_SECONDS", "format_hours", "parse_duration", "parse_quantity"]

# activeDeadlineSeconds is an int64 in the API but the API server caps it at MaxInt32.
MAX_DEADLINE_SECONDS = 2**31 - 1

_QUANTITY = re.compile(
    r"(?P<num>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?:(?P<bin>Ki|Mi|Gi|Ti|Pi|Ei)|(?P<exp>[eE][+-]?[0-9]+)|(?P<dec>[numkMGTPE]?))"
)
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_MAX_QUANTITY_CHARS = 64


def parse_quantity(value: object) -> Decimal | None:
    """A Kubernetes quantity as a Decimal, or None when it is not one.

    Accepts the strings the API server accepts and, for manifests read by the CLI, YAML
    numbers. Booleans are refused.
    """
    if type(value) is int:
        return Decimal(value)
    if type(value) is float:  # from YAML; the caller decides whether 1.5 makes sense
        return Decimal(repr(value)) if math.isfinite(value) else None
    if type(value) is not str or not value or len(value) > _MAX_QUANTITY_CHARS:
        return None
    if value.isascii() and value.isdigit():  # the common case: "1", "8" (not "²" or "٨")
        return Decimal(value)
    match = _QUANTITY.fullmatch(value)
    if match is None:
        return None
    try:
        number = Decimal(match["num"])
    except InvalidOperation:  # pragma: no cover - the regex admits only valid numbers
        return None
    if match["bin"]:
        return number * Decimal(1024) ** _BINARY[match["bin"]]
    if match["exp"]:
        exponent = int(match["exp"][1:])
        if abs(exponent) > 100:  # "1e999999" would be an absurd Decimal to build
            return None
        return number.scaleb(exponent)
    return number.scaleb(_DECIMAL[match["dec"] or ""])


_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)([dhms])")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


@lru_cache(maxsize=1024)  # the same few declarations arrive over and over
def parse_duration(text: str) -> int | None:
    """Seconds in a duration such as `90m`, `12h`, `2d`, `1h30m`, `3600` or `3600s`.

    None when the text is not a positive whole number of seconds within the API's limit.
    """
    text = text.strip()
    if not text or len(text) > 32:
        return None
    if text.isascii() and text.isdigit():
        seconds = Decimal(text)
    else:
        seconds = Decimal(0)
        pos = 0
        for match in _DURATION_PART.finditer(text):
            if match.start() != pos:
                return None
            seconds += Decimal(match[1]) * _UNIT_SECONDS[match[2]]
            pos = match.end()
        if pos != len(text):
            return None
    if seconds != seconds.to_integral_value() or not 0 < seconds <= MAX_DEADLINE_SECONDS:
        return None
    return int(seconds)


def format_hours(seconds: int) -> str:
    """A runtime as users read it in messages: `24h`, `90m`, `45s`, `1.5h` for 5400 s."""
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds < 3600:
        return f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"
    hours = seconds / 3600
    return f"{hours:.2f}".rstrip("0").rstrip(".") + "h"
