"""Keeping up with one resource of the API server: list, then watch from the list's
resourceVersion, then (410 Gone) list again, in a thread of its own.

Events are read as raw JSON lines (orjson) rather than through the client's model classes:
50,000 pods turned into V1Pod objects would cost seconds and hundreds of MB. What is kept of
an object is up to the handlers the Watcher is given.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import orjson

__all__ = ["Handler", "Resource", "Watcher"]

log = logging.getLogger("costgate.cluster")

Handler = Callable[[str, dict[str, Any]], None]  # (event type, object)


class Resource(NamedTuple):
    """A resource costgate watches: how to list and watch it with the client."""

    name: str  # e.g. "pods"; also the metrics label
    group: str
    kind: str
    list_call: Callable[..., Any]  # the client method; extra positional args in `args`
    args: tuple[Any, ...] = ()
    optional: bool = False  # a CRD that may not be installed (Argo)
    label_selector: str = ""


class Watcher:
    """list + watch of one resource, resuming from the last resourceVersion and listing
    again after 410 Gone, with backoff on errors. `synced` is set after the first list."""

    def __init__(
        self,
        resource: Resource,
        *,
        on_event: Handler,
        on_relist: Callable[[Iterator[dict[str, Any]]], None],
        page_size: int = 500,
        watch_seconds: int = 300,
        read_timeout: float = 30.0,
        max_backoff: float = 30.0,
    ) -> None:
        self.resource = resource
        self._on_event = on_event
        self._on_relist = on_relist
        self._page_size = page_size
        self._watch_seconds = watch_seconds
        self._read_timeout = read_timeout
        self._max_backoff = max_backoff
        self.synced = threading.Event()
        self.absent = False  # the resource is not served (CRD not installed)
        self.failing_since: float | None = None
        self.relists = 0
        self.resource_version = ""
        self._stop = threading.Event()
        self._response: Any = None
        self._thread = threading.Thread(
            target=self._run, name=f"watch-{resource.name}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.close()  # unblocks the read
        self._thread.join(timeout=5)

    def _call(self, **kwargs: Any) -> Any:
        selector = (
            {"label_selector": self.resource.label_selector} if self.resource.label_selector else {}
        )
        return self.resource.list_call(
            *self.resource.args, _preload_content=False, **selector, **kwargs
        )

    def _run(self) -> None:
        from kubernetes.client.exceptions import ApiException

        backoff = 0.5
        while not self._stop.is_set():
            try:
                self._list()
                self.failing_since = None
                backoff = 0.5
                while not self._stop.is_set() and self._watch():
                    self.failing_since = None
            except ApiException as exc:
                if exc.status == 404 and self.resource.optional:
                    if not self.absent:
                        log.info(
                            "not served; watching for it later",
                            extra={"resource": self.resource.name},
                        )
                    self.absent = True
                    self.synced.set()
                    self._stop.wait(60)
                    continue
                self._failed(f"API answered {exc.status}")
            except Exception as exc:
                if self._stop.is_set():
                    return
                self._failed(type(exc).__name__)
            self._stop.wait(backoff)
            backoff = min(backoff * 2, self._max_backoff)

    def _failed(self, why: str) -> None:
        if self.failing_since is None:
            self.failing_since = time.monotonic()
            log.warning(
                "watch failed; retrying", extra={"resource": self.resource.name, "error": why}
            )

    def _list(self) -> None:
        """List in pages, handing items on page by page: 50,000 pods are never all parsed
        in memory at once."""
        version = ""

        def items() -> Iterator[dict[str, Any]]:
            nonlocal version
            token = ""
            while True:
                response = self._call(
                    limit=self._page_size, _continue=token or None, _request_timeout=60
                )
                page = orjson.loads(response.data)
                metadata = page.get("metadata") or {}
                version = version or str(metadata.get("resourceVersion", ""))
                yield from page.get("items") or ()
                token = metadata.get("continue") or ""
                if not token:
                    return

        self._on_relist(items())
        self.resource_version = version
        self.absent = False
        self.relists += 1
        self.synced.set()

    def _watch(self) -> bool:
        """One watch request; True to watch again from where it ended, False to list again."""
        from kubernetes.watch.watch import iter_resp_lines

        response = self._call(
            watch=True,
            resource_version=self.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=self._watch_seconds,
            _request_timeout=(5, self._watch_seconds + self._read_timeout),
        )
        self._response = response
        try:
            for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]  # unannotated
                if self._stop.is_set():
                    return False
                if not line:
                    continue
                event = orjson.loads(line)
                kind = event.get("type")
                obj = event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:  # our resourceVersion is compacted away
                        log.info(
                            "watch expired; listing again", extra={"resource": self.resource.name}
                        )
                        return False
                    raise RuntimeError(f"watch error {obj.get('code')}: {obj.get('message')}")
                version = (obj.get("metadata") or {}).get("resourceVersion")
                if kind != "BOOKMARK":
                    self._on_event(kind, obj)
                if version:
                    self.resource_version = str(version)
        finally:
            self._response = None
            response.release_conn()
        return True
