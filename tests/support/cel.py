"""CEL as the Kubernetes API server evaluates a webhook's matchConditions, through
cel-python: the standard library plus the one function of the Kubernetes string extensions
(cel-go `ext.Strings`) the shipped conditions use, `lowerAscii()`, which cel-python lacks.

cel-python raises the interpreter's recursion limit for good (`sys.setrecursionlimit(2500)`
in `Environment()`); the tests that check how costgate meets input deeper than Python
recurses would then pass or fail by which test ran first. The limit is put back after each
call here."""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.support.tools import require_module

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def celpy() -> Any:
    """cel-python, or `unavailable`."""
    return require_module("celpy", hint="cel-python, in the test extra")


def _lower_ascii(value: Any) -> Any:
    """cel-go's lowerAscii: A-Z folded, every other character kept (not str.lower())."""
    return celpy().celtypes.StringType(str(value).translate(_ASCII_LOWER))


@contextmanager
def _recursion_limit_kept() -> Iterator[None]:
    limit = sys.getrecursionlimit()
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)


@functools.cache
def program(expression: str) -> Any:
    """The compiled expression (raises CELParseError if malformed)."""
    with _recursion_limit_kept():
        environment = celpy().Environment()
        return environment.program(
            environment.compile(expression), functions={"lowerAscii": _lower_ascii}
        )


def evaluate(expression: str, **variables: Any) -> bool:
    """The expression's value for these variables (object, request), which must be a
    bool: an error would count as a webhook failure in the API server."""
    cel = celpy()
    activation = {name: cel.json_to_cel(value) for name, value in variables.items()}
    compiled = program(expression)
    with _recursion_limit_kept():
        sys.setrecursionlimit(max(sys.getrecursionlimit(), 2500))  # as cel-python wants
        result = compiled.evaluate(activation)
    assert isinstance(result, cel.celtypes.BoolType), f"{result!r} from {expression}"
    return bool(result)
