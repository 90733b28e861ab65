"""The guards of tests/support/tools.py: a test whose tool, module or capability is missing
skips on a developer's machine and fails under CI=true."""

from __future__ import annotations

import pytest

from tests.support.tools import require, require_module, require_tool, unavailable

MISSING_TOOL = "costgate-no-such-tool"
MISSING_MODULE = "costgate_no_such_module"


@pytest.mark.parametrize("ci", [None, "false", ""])
def test_a_missing_tool_skips_outside_ci(ci: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match=f"{MISSING_TOOL} not found"):
        require_tool(MISSING_TOOL)


@pytest.mark.parametrize(
    "guard",
    [
        pytest.param(lambda: require_tool(MISSING_TOOL, hint="h"), id="require_tool"),
        pytest.param(lambda: require_module(MISSING_MODULE), id="require_module"),
        pytest.param(lambda: require(False, "no such thing"), id="require"),
        pytest.param(lambda: unavailable("no such thing"), id="unavailable"),
    ],
)
def test_anything_missing_fails_under_ci(guard, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"CI=true and .*: CI must run every test"):
        guard()


def test_a_missing_module_skips_outside_ci_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=f"cannot import {MISSING_MODULE}"):
        require_module(MISSING_MODULE)


def test_what_is_there_passes_the_guards(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    assert require_tool("python3", "python").endswith(("python3", "python"))
    assert require_module("json").dumps([]) == "[]"
    require(True, "never said")
