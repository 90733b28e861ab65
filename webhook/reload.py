"""Files that change under a running server: re-read when they change, the old value kept
when the new file is bad.

Kubernetes updates a mounted ConfigMap or Secret by swapping a symlink, so a file is known
by what `stat` reports through the link (inode, size, modification time), and a directory by
that of each entry in it too (files come and go: approvers' keys). The check runs in a
background thread every `interval` seconds, or from `check()`; never on every request.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Generic, TypeVar

__all__ = ["Reloader"]

log = logging.getLogger("costgate.reload")
T = TypeVar("T")
Fingerprint = tuple[tuple[int, int, int] | None, ...]


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _fingerprint(paths: Iterable[Path]) -> Fingerprint:
    found = []
    for path in paths:
        found.append(_stat(path))
        if path.is_dir():  # one level down: a file edited in place leaves its directory alone
            with contextlib.suppress(OSError):
                found += [_stat(entry) for entry in sorted(path.iterdir())]
    return tuple(found)


class Reloader(Generic[T]):
    """`current()` is the last good value of `load()`; `check()` reloads when the files
    changed and reports each result to `on_result(name, ok)`."""

    def __init__(
        self,
        name: str,
        paths: Iterable[Path],
        load: Callable[[], T],
        *,
        on_result: Callable[[str, bool], None] = lambda name, ok: None,
        interval: float = 2.0,
    ) -> None:
        self.name = name
        self._paths = list(paths)
        self._load = load
        self._on_result = on_result
        self._interval = interval
        self._seen = _fingerprint(self._paths)
        self._value = load()  # a bad file at start-up is an error for the caller
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def current(self) -> T:
        return self._value

    def check(self) -> bool:
        """Reload if the files changed; True when a new value was taken."""
        seen = _fingerprint(self._paths)
        if seen == self._seen:
            return False
        try:
            value = self._load()
        except Exception as exc:
            if _fingerprint(self._paths) != seen:
                return False  # written to while read: see below
            self._seen = seen
            log.error(
                "refused a changed file; keeping the one in use",
                extra={"file": self.name, "error": str(exc)},
            )
            self._on_result(self.name, False)
            return False
        if _fingerprint(self._paths) != seen:
            # written to while read (in place, not swapped by a rename): what was read may
            # be half a file, even a valid one; read it again, whole, at the next check
            return False
        self._seen = seen
        self._value = value
        log.info("reloaded", extra={"file": self.name})
        self._on_result(self.name, True)
        return True

    def start(self) -> Reloader[T]:
        if self._paths and self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"reload-{self.name}", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.check()
            except Exception:
                log.exception("reload check failed", extra={"file": self.name})
