"""Guards for what a test needs from its environment: an external tool (kubectl, hadolint),
a module that installs on some platforms only (atheris, cel-python), a capability of the
OpenSSL at hand, the locked package versions.

Every test that cannot run without such a thing goes through `unavailable` (directly or via
`require_tool`, `require_module`, `require`): on a developer's machine it skips, saying what is
missing; in CI (the environment variable CI is "true", as .ci/run and CI services set it) it
fails with the same message, so a CI run that lacks a tool goes red instead of green with
fewer tests.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str) -> NoReturn:
    """Skip the test, or fail it under CI=true, for `reason`. The skip is reported at the
    test (`pytest -rs`), not here."""
    if in_ci():
        pytest.fail(f"CI=true and {reason}: CI must run every test", pytrace=False)
    raise pytest.skip.Exception(reason, _use_item_location=True)


def require(condition: bool, reason: str) -> None:
    """Go on only when `condition` holds; otherwise `unavailable(reason)`."""
    if not condition:
        unavailable(reason)


def find_tool(*names: str) -> str | None:
    """The first of `names` found, each looked for next to this Python (the virtualenv's
    scripts, where the test extra installs kubectl and hadolint wheels) and then on PATH."""
    scripts = Path(sys.executable).parent
    for name in names:
        if (scripts / name).is_file():
            return str(scripts / name)
        if found := shutil.which(name):
            return found
    return None


def require_tool(*names: str, hint: str = "") -> str:
    """The path of the first of `names` found (see `find_tool`), or `unavailable`."""
    found = find_tool(*names)
    if found is None:
        unavailable(f"{' or '.join(names)} not found" + (f" ({hint})" if hint else ""))
    return found


def require_module(name: str, *, hint: str = "") -> ModuleType:
    """The module `name`, imported, or `unavailable`."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        unavailable(f"cannot import {name}: {exc}" + (f" ({hint})" if hint else ""))
