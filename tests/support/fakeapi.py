"""An in-process fake Kubernetes API server for tests that drive the real ``kubernetes`` client.

No kube-apiserver can run where the tests run, so this serves, over plain HTTP on 127.0.0.1, the
part of the API that a watch cache and an optimistic-concurrency ledger use, shaped like the real
server's answers:

* LIST with ``limit``/``continue`` over a consistent snapshot (every page reports the snapshot's
  resourceVersion; a compacted snapshot answers 410 Expired with an inconsistent-continue token);
* WATCH as chunked JSON lines: replay from ``resourceVersion``, synthetic ADDED events for
  ``resourceVersion`` absent or "0", BOOKMARKs, ``timeoutSeconds``, and the one
  ``ERROR`` 410 "too old resource version" event after a compaction;
* GET, POST (``generateName``, 409 AlreadyExists), PUT (resourceVersion precondition, 409 Conflict),
  PATCH (merge patch, JSON patch), DELETE, and a ``Status`` body for every error.

Test controls inject what a controller has to survive: compaction, dropped watches, 409 storms, 5xx
answers, an unreachable server and latency. One global resourceVersion counter is shared by all
resources, as etcd's revision is.

    with FakeApiServer() as api, api.client() as c:
        core = kubernetes.client.CoreV1Api(c)
        rv = core.list_namespaced_config_map("default").metadata.resource_version

TokenReview and SubjectAccessReview answer from tables a test fills (``add_user``, ``grant``):
a token is a user, and a grant lets a user or ``group:<name>`` use one verb on one resource, in
one namespace or (``namespace=None``) in all of them and cluster-wide, as a ClusterRoleBinding,
or on one non-resource URL (``grant_url``).

Knowingly simpler than the real server: no authn/authz of its own clients (the reviews only answer
for others), no admission, defaulting or schema validation (objects are stored as sent; no
controllers, so pods get no status); JSON only; strategic merge patch is applied as a JSON merge
patch (lists replaced, not merged by key), server-side apply is 415; ``/status`` is served as the
object itself; DELETE is immediate (no grace period, finalizers or namespace cascade); LIST ignores
``resourceVersion``/``resourceVersionMatch`` and serves the latest state; continue snapshots live
until ``compact()`` or until 32 newer ones exist, not for etcd's 5 minutes; bookmarks come after
``bookmark_interval`` idle seconds, not about once a minute; a watch without ``timeoutSeconds``
never times out; fieldSelector accepts any dotted path; ``metadata.generation`` bumps when ``spec``
changes.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import contextlib
import functools
import gc
import random
import re
import socket
import socketserver
import sys
import threading
import time
import traceback
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import kubernetes.client
import orjson

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace or "", name): the sort order of the real API's lists


@dataclass(frozen=True)
class Resource:
    plural: str
    kind: str
    group: str  # "" for the core group
    version: str
    namespaced: bool = True
    crd: bool = False  # served by a CustomResourceDefinition (items carry kind/apiVersion)
    deleted_object: bool = False  # DELETE answers the object, not a Status (pods and CRDs)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """The resource as the real server names it in messages: "pods", "workflows.argoproj.io"."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


# One line per resource served.
RESOURCES: tuple[Resource, ...] = (
    Resource("pods", "Pod", "", "v1", deleted_object=True),
    Resource("configmaps", "ConfigMap", "", "v1"),
    Resource("namespaces", "Namespace", "", "v1", namespaced=False),
    Resource("jobs", "Job", "batch", "v1"),
    Resource("cronjobs", "CronJob", "batch", "v1"),
    Resource("resourceclaims", "ResourceClaim", "resource.k8s.io", "v1"),
    Resource("resourceclaimtemplates", "ResourceClaimTemplate", "resource.k8s.io", "v1"),
    Resource("deployments", "Deployment", "apps", "v1"),
    Resource("statefulsets", "StatefulSet", "apps", "v1"),
    Resource("replicasets", "ReplicaSet", "apps", "v1"),
    Resource("leaderworkersets", "LeaderWorkerSet", "leaderworkerset.x-k8s.io", "v1", crd=True),
    Resource("pytorchjobs", "PyTorchJob", "kubeflow.org", "v1", crd=True),
    Resource("workflows", "Workflow", "argoproj.io", "v1alpha1", crd=True),
    Resource("cronworkflows", "CronWorkflow", "argoproj.io", "v1alpha1", crd=True),
    Resource("workflowtemplates", "WorkflowTemplate", "argoproj.io", "v1alpha1", crd=True),
    Resource(
        "clusterworkflowtemplates",
        "ClusterWorkflowTemplate",
        "argoproj.io",
        "v1alpha1",
        namespaced=False,
        crd=True,
    ),
)

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
_MESSAGES = {
    401: "Unauthorized",
    403: "forbidden",
    404: "the server could not find the requested resource",
    405: "the server does not allow this method on the requested resource",
    429: "Too many requests, please try again later.",
    500: "Internal error occurred: injected failure",
    503: "the server is currently unable to handle the request",
    504: "Timeout: request did not complete within requested timeout - context deadline exceeded",
}
_CONTINUE_EXPIRED = (
    "The provided continue parameter is too old to display a consistent list result. You can "
    "start a new list without the continue parameter, or use the continue token in this response "
    "to retrieve the remainder of the results. Continuing with the provided token results in an "
    "inconsistent list - objects that were created, modified, or deleted between the time the "
    "first chunk was returned and now may show up in the list."
)
# The review APIs served: (group, version, plural) -> kind. POST only, answered, never stored.
_REVIEWS = {
    ("authentication.k8s.io", "v1", "tokenreviews"): "TokenReview",
    ("authorization.k8s.io", "v1", "subjectaccessreviews"): "SubjectAccessReview",
}
_URL = "<non-resource URL>"  # the group a grant of a non-resource URL is kept under
_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})  # Go's strconv.ParseBool
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # what the real generateName suffix draws from
_SNAPSHOTS_KEPT = 32  # list snapshots for continue tokens, least recently used evicted (-> 410)
_INITIAL_WRITE = 1 << 16  # synthetic ADDED events (a chunk each) go out in writes of this size
_LIVENESS_POLL = 0.1  # how often an idle watch checks that its client is still there


def status(code: int, message: str, reason: str | None = None, details: Obj | None = None) -> Obj:
    """A failure ``Status`` as the real API server writes it."""
    body: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason if reason is not None else _REASONS.get(code, "Unknown"),
    }
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


class FakeApiError(Exception):
    """An error answer; ``status`` is the Status body, ``code`` the HTTP status."""

    def __init__(
        self,
        code: int,
        message: str,
        reason: str | None = None,
        details: Obj | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.status = status(code, message, reason, details)
        self.headers = tuple(headers)


def _details(res: Resource, name: str) -> Obj:
    details: Obj = {"name": name}
    if res.group:
        details["group"] = res.group
    details["kind"] = res.plural
    return details


def _not_found(res: Resource, name: str) -> FakeApiError:
    return FakeApiError(404, f'{res.qualified} "{name}" not found', None, _details(res, name))


def _conflict(res: Resource, name: str, why: str) -> FakeApiError:
    message = f'Operation cannot be fulfilled on {res.qualified} "{name}": {why}'
    return FakeApiError(409, message, "Conflict", _details(res, name))


_MODIFIED = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


def _unknown_path() -> FakeApiError:
    return FakeApiError(404, _MESSAGES[404], "NotFound", {})


def _clone(obj: Any) -> Any:
    return orjson.loads(orjson.dumps(obj))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@functools.cache
def _serializer() -> kubernetes.client.ApiClient:
    return kubernetes.client.ApiClient(kubernetes.client.Configuration())


def _as_dict(obj: Any) -> Obj:
    """A plain JSON dict from a dict or a ``kubernetes.client`` model."""
    if isinstance(obj, dict):
        return _clone(obj)
    return _clone(_serializer().sanitize_for_serialization(obj))


def _meta(obj: Obj) -> Obj:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = obj["metadata"] = {}
    return meta


def _key(obj: Obj) -> Key:
    meta = obj["metadata"]
    return meta.get("namespace") or "", meta["name"]


# --- selectors -------------------------------------------------------------------------------

_SET_RE = re.compile(r"^\s*([^\s!=(),]+)\s+(in|notin)\s*\(([^)]*)\)\s*$")
_CMP_RE = re.compile(r"^\s*([^\s!=(),]+)\s*(==|=|!=)\s*([^\s!=(),]*)\s*$")
_HAS_RE = re.compile(r"^\s*(!?)\s*([^\s!=(),]+)\s*$")


def _split_top(text: str) -> list[str]:
    """Split a selector at the commas that are not inside parentheses."""
    parts: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in parts if p.strip()]


def _label_test(requirement: str) -> Callable[[dict[str, str]], bool]:
    if m := _SET_RE.match(requirement):
        key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if m := _CMP_RE.match(requirement):
        key, op, value = m.groups()
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if m := _HAS_RE.match(requirement):
        negate, key = m.group(1) == "!", m.group(2)
        return lambda labels: (key in labels) != negate
    raise FakeApiError(400, f"unable to parse requirement: {requirement.strip()!r}")


def _field_value(obj: Obj, path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _field_test(requirement: str) -> Callable[[Obj], bool]:
    m = _CMP_RE.match(requirement)
    if not m:
        raise FakeApiError(400, f"invalid selector: {requirement.strip()!r}")
    path, op, value = m.groups()
    if op == "!=":
        return lambda obj: _field_value(obj, path) != value
    return lambda obj: _field_value(obj, path) == value


def _selector(query: dict[str, str]) -> Callable[[Obj], bool] | None:
    """The labelSelector and fieldSelector of a request as one predicate, None for everything."""
    label_tests = [_label_test(r) for r in _split_top(query.get("labelSelector", ""))]
    field_tests = [_field_test(r) for r in _split_top(query.get("fieldSelector", ""))]
    if not label_tests and not field_tests:
        return None

    def match(obj: Obj) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(t(labels) for t in label_tests) and all(t(obj) for t in field_tests)

    return match


# --- patches ---------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (returns a new value, shares untouched subtrees)."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise FakeApiError(422, f"invalid JSON pointer: {path!r}", "Invalid")
    return [t.replace("~1", "/").replace("~0", "~") for t in path.split("/")[1:]]


def _index(container: list[Any], token: str, *, adding: bool = False) -> int:
    if adding and token == "-":
        return len(container)
    if not token.isdigit():
        raise FakeApiError(422, f"invalid array index {token!r}", "Invalid")
    i = int(token)
    if i > len(container) or (i == len(container) and not adding):
        raise FakeApiError(422, f"array index {i} out of bounds", "Invalid")
    return i


def _walk(doc: Any, tokens: list[str]) -> Any:
    for token in tokens:
        if isinstance(doc, dict) and token in doc:
            doc = doc[token]
        elif isinstance(doc, list):
            doc = doc[_index(doc, token)]
        else:
            raise FakeApiError(422, f"doc is missing path: /{'/'.join(tokens)}", "Invalid")
    return doc


def _ptr_remove(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        raise FakeApiError(422, "unable to remove the whole document", "Invalid")
    parent = _walk(doc, tokens[:-1])
    last = tokens[-1]
    if isinstance(parent, list):
        return parent.pop(_index(parent, last))
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    raise FakeApiError(422, f"unable to remove nonexistent key: {last}", "Invalid")


def _ptr_add(doc: Any, tokens: list[str], value: Any, *, replace: bool = False) -> Any:
    if not tokens:
        return value
    parent = _walk(doc, tokens[:-1])
    last = tokens[-1]
    if isinstance(parent, list):
        i = _index(parent, last, adding=not replace)
        if replace:
            parent[i] = value
        else:
            parent.insert(i, value)
    elif isinstance(parent, dict):
        if replace and last not in parent:
            raise FakeApiError(422, f"replace operation does not apply: {last}", "Invalid")
        parent[last] = value
    else:
        raise FakeApiError(422, f"doc is missing path: /{'/'.join(tokens)}", "Invalid")
    return doc


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test) on a copy of ``doc``."""
    if not isinstance(ops, list):
        raise FakeApiError(400, "json patch must be a list of operations")
    doc = _clone(doc)
    for op in ops:
        if not isinstance(op, dict):
            raise FakeApiError(400, "json patch operation must be an object")
        kind, path = op.get("op"), _pointer(op.get("path"))
        if kind == "add":
            doc = _ptr_add(doc, path, _clone(op.get("value")))
        elif kind == "replace":
            doc = _ptr_add(doc, path, _clone(op.get("value")), replace=True)
        elif kind == "remove":
            _ptr_remove(doc, path)
        elif kind == "move":
            doc = _ptr_add(doc, path, _ptr_remove(doc, _pointer(op.get("from"))))
        elif kind == "copy":
            doc = _ptr_add(doc, path, _clone(_walk(doc, _pointer(op.get("from")))))
        elif kind == "test":
            if _walk(doc, path) != op.get("value"):
                raise FakeApiError(422, f"testing value {op.get('path')} failed", "Invalid")
        else:
            raise FakeApiError(400, f"unexpected json patch operation {kind!r}")
    return doc


# --- continue tokens -------------------------------------------------------------------------


def _encode_token(rv: int, start: Key) -> str:
    raw = orjson.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": list(start)})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str) -> tuple[int, Key]:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        ns, name = data["start"]
        return int(data["rv"]), (str(ns), str(name))
    except (ValueError, TypeError, KeyError, binascii.Error, orjson.JSONDecodeError) as e:
        raise FakeApiError(400, f"continue key is not valid: {e}") from None


# --- the server ------------------------------------------------------------------------------


@dataclass
class _Route:
    res: Resource | None = None
    namespace: str | None = None
    name: str | None = None
    document: Obj | None = None  # a discovery answer
    review: str | None = None  # TokenReview or SubjectAccessReview


@dataclass
class _FailRule:
    remaining: int
    status: int
    method: str | None
    plural: str | None
    retry_after: int | None


# A history entry: (rv, plural, type, object, previous object). Type "GAP" marks a bulk_load,
# whose objects have no events: a watch of that resource that has to cross it gets 410.
_Event = tuple[int, str, str, Obj, Obj | None]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fakeapi"
    sys_version = ""
    server: FakeApiServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # Malformed requests and unknown methods: a Status too, never the stock HTML page.
        self.close_connection = True
        text = message or self.responses.get(code, ("error",))[0]
        data = orjson.dumps(status(code, text))
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_GET(self) -> None:
        self.server._handle(self, "GET")

    def do_POST(self) -> None:
        self.server._handle(self, "POST")

    def do_PUT(self) -> None:
        self.server._handle(self, "PUT")

    def do_PATCH(self) -> None:
        self.server._handle(self, "PATCH")

    def do_DELETE(self) -> None:
        self.server._handle(self, "DELETE")

    def do_HEAD(self) -> None:
        self.server._handle(self, "HEAD")

    def do_OPTIONS(self) -> None:
        self.server._handle(self, "OPTIONS")


class FakeApiServer(ThreadingHTTPServer):
    """A fake kube-apiserver on 127.0.0.1:<random port>, one per test.

    ``missing`` names resources that are "not installed" (404 like a missing CRD);
    ``bookmark_interval`` is the idle time after which a watch that asked for bookmarks gets one.
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        *,
        missing: Iterable[str] = (),
        bookmark_interval: float = 1.0,
        resources: Iterable[Resource] = RESOURCES,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._resources = {r.plural: r for r in resources}
        self.missing = frozenset(missing)
        if unknown := self.missing - set(self._resources):
            raise ValueError(f"unknown resources: {sorted(unknown)}")
        self._by_path = {(r.group, r.version, r.plural): r for r in self._resources.values()}
        self._by_kind = {(r.api_version, r.kind): r for r in self._resources.values()}
        self.bookmark_interval = bookmark_interval
        self._cond = threading.Condition(threading.RLock())
        self._rv = 0
        self._objs: dict[str, dict[Key, Obj]] = {p: {} for p in self._resources}
        self._sorted: dict[str, tuple[list[Key], list[Obj]]] = {}
        self._snapshots: OrderedDict[tuple[str, int], tuple[list[Key], list[Obj]]] = OrderedDict()
        self._hist: list[_Event] = []
        self._hist_rvs: list[int] = []
        self._hist_base = 0  # absolute index of _hist[0]
        self._floor = 0  # history up to this resourceVersion is forgotten
        self._watches: dict[int, socket.socket] = {}
        self._watch_ids = iter(range(1, sys.maxsize))
        self._drop_gen = 0
        self._conns: set[socket.socket] = set()
        self._handler_threads: set[threading.Thread] = set()
        self._fail_rules: list[_FailRule] = []
        self._conflicts: dict[str, int] = {}
        self._delay_s = 0.0
        self._down = False
        self._closed = False
        self._stopping = threading.Event()
        self._accept_thread: threading.Thread | None = None
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._users: dict[str, Obj] = {}  # bearer token -> userInfo
        self._grants: set[tuple[str, str, str, str, str | None]] = set()
        self.errors: list[str] = []  # unexpected exceptions in the server (should stay empty)
        super().__init__((host, port), _Handler)

    # --- lifecycle ---------------------------------------------------------------------------

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn); skip it to start fast.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.server_address[0]}:{self.port}"

    @property
    def resource_version(self) -> str:
        """The current global resourceVersion."""
        with self._cond:
            return str(self._rv)

    def client(self) -> kubernetes.client.ApiClient:
        """A real ``kubernetes.client.ApiClient`` for this server (close it, or use ``with``)."""
        config = kubernetes.client.Configuration()
        config.host = self.url
        return kubernetes.client.ApiClient(config)

    def kubeconfig(self, path: Path) -> Path:
        """Write a kubeconfig at `path` whose only context is this server, for processes and
        CLI commands that load one (`costgate serve`, `costgate status`)."""
        path.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
            f"clusters: [{{name: fake, cluster: {{server: '{self.url}'}}}}]\n"
            "users: [{name: me, user: {token: not-a-secret}}]\n"
            "contexts: [{name: fake, context: {cluster: fake, user: me}}]\n"
        )
        return path

    def start(self) -> FakeApiServer:
        if self._closed:
            raise RuntimeError("a stopped FakeApiServer cannot be restarted")
        if self._accept_thread is None:
            self._start_accepting()
        return self

    def stop(self) -> None:
        """Stop serving: closes the port, every connection and every open watch."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
        self._stopping.set()
        self._close_listener()
        self._drop_connections()
        deadline = time.monotonic() + 2.0
        with self._cond:
            threads = list(self._handler_threads)
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _start_accepting(self) -> None:
        thread = threading.Thread(
            target=self._accept_loop, args=(self.socket,), name="fakeapi-accept", daemon=True
        )
        self._accept_thread = thread
        thread.start()

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, addr = listener.accept()
            except OSError:
                return
            with self._cond:
                refuse = self._down or self._closed
                if not refuse:
                    self._conns.add(conn)
            if refuse:
                conn.close()
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.process_request(conn, addr)

    def _close_listener(self) -> None:
        with contextlib.suppress(OSError):
            self.socket.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
        self.socket.close()
        if self._accept_thread is not None:
            self._accept_thread.join(1.0)
            self._accept_thread = None

    def _drop_connections(self, watches_only: bool = False) -> None:
        """Cut connections abruptly (no final chunk), as a network failure would."""
        with self._cond:
            self._drop_gen += 1
            self._cond.notify_all()
            conns = list(self._watches.values()) if watches_only else list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address),
            name="fakeapi-conn",
            daemon=True,
        )
        with self._cond:
            self._handler_threads.add(thread)
        thread.start()

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            with self._cond:
                self._handler_threads.discard(threading.current_thread())

    def shutdown_request(self, request: Any) -> None:
        with self._cond:
            self._conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            return  # the peer went away, or a test cut the connection
        with self._cond:
            self.errors.append(traceback.format_exc())

    # --- test controls -----------------------------------------------------------------------

    def down(self) -> None:
        """Become unreachable: refuse new connections and cut every open one (watches too)."""
        with self._cond:
            if self._down or self._closed:
                return
            self._down = True
        self._close_listener()
        self._drop_connections()

    def up(self) -> None:
        """Serve again, on the same port."""
        with self._cond:
            if not self._down or self._closed:
                return
            self._down = False
        self.socket = socket.socket(self.address_family, self.socket_type)
        self.server_bind()
        self.server_activate()
        self._start_accepting()

    def drop_watches(self) -> None:
        """Cut every open watch stream mid-stream, as a lost connection would."""
        self._drop_connections(watches_only=True)

    def watch_count(self) -> int:
        with self._cond:
            return len(self._watches)

    def delay(self, seconds: float) -> None:
        """Add this much latency before every answer (0 to stop)."""
        with self._cond:
            self._delay_s = float(seconds)

    def fail_next(
        self,
        n: int,
        status: int = 503,
        method: str | None = None,
        plural: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        """The next ``n`` requests matching method/plural (None: any) answer ``status``."""
        rule = _FailRule(n, status, method.upper() if method else None, plural, retry_after)
        with self._cond:
            self._fail_rules.append(rule)

    def conflict_next(self, n: int, plural: str = "configmaps") -> None:
        """The next ``n`` PUTs to ``plural`` get 409 Conflict whatever their resourceVersion."""
        self._resource(plural)
        with self._cond:
            self._conflicts[plural] = self._conflicts.get(plural, 0) + n

    def clear_faults(self) -> None:
        """End injected failures and conflicts still pending (a storm that stops)."""
        with self._cond:
            self._fail_rules.clear()
            self._conflicts.clear()

    def add_user(
        self, token: str, username: str, *, groups: Iterable[str] = (), uid: str = ""
    ) -> None:
        """A TokenReview of `token` authenticates `username` (with `groups`)."""
        with self._cond:
            self._users[token] = {"username": username, "uid": uid, "groups": list(groups)}

    def grant(
        self, subject: str, verb: str, group: str, resource: str, namespace: str | None = None
    ) -> None:
        """A SubjectAccessReview lets `subject` (a user, or ``group:<name>``) `verb` the
        `resource` of `group` in `namespace`; None: every namespace and cluster-wide."""
        with self._cond:
            self._grants.add((subject, verb, group, resource, namespace))

    def revoke_all(self) -> None:
        """Every grant withdrawn (users stay known)."""
        with self._cond:
            self._grants.clear()

    def grant_url(self, subject: str, verb: str, path: str) -> None:
        """A SubjectAccessReview lets `subject` `verb` the non-resource URL `path` (as a
        ClusterRole's nonResourceURLs does; no wildcards)."""
        with self._cond:
            self._grants.add((subject, verb, _URL, path, None))

    def compact(self) -> str:
        """Forget all history up to now: older watch RVs and continue tokens get 410 Expired."""
        with self._cond:
            self._floor = self._rv
            self._hist_base += len(self._hist)
            self._hist = []
            self._hist_rvs = []
            self._snapshots.clear()
            self._cond.notify_all()
            return str(self._rv)

    def create(self, plural: str, obj: Any) -> Obj:
        """Create as another client would (raises FakeApiError 409 if the name exists)."""
        res = self._resource(plural)
        return self._full(res, self._create(res, None, _as_dict(obj)))

    def put(self, obj: Any, plural: str | None = None) -> Obj:
        """Create or unconditionally replace; ``plural`` defaults from apiVersion/kind."""
        body = _as_dict(obj)
        if plural is None:
            found = self._by_kind.get((body.get("apiVersion", ""), body.get("kind", "")))
            if found is None:
                raise ValueError(f"no resource for {body.get('apiVersion')}/{body.get('kind')}")
            plural = found.plural
        res = self._resource(plural)
        meta = _meta(body)
        meta.pop("resourceVersion", None)
        ns = (meta.get("namespace") or "default") if res.namespaced else ""
        with self._cond:
            if (ns, meta.get("name")) in self._objs[plural]:
                return self._full(res, self._replace(res, ns, meta["name"], body))
            return self._full(res, self._create(res, None, body))

    def modify(
        self, plural: str, namespace: str | None, name: str, fn: Callable[[Obj], Obj | None]
    ) -> Obj:
        """Apply ``fn`` (returns the new object, or None after changing it in place)."""
        res = self._resource(plural)
        with self._cond:
            current = self._objs[plural].get((namespace or "", name))
            if current is None:
                raise _not_found(res, name)
            obj = self._full(res, _clone(current))
            changed = fn(obj)
            body = _as_dict(changed if changed is not None else obj)
            _meta(body).pop("resourceVersion", None)
            return self._full(res, self._replace(res, namespace, name, body))

    def remove(self, plural: str, namespace: str | None, name: str) -> Obj:
        res = self._resource(plural)
        return self._full(res, self._delete(res, namespace, name))

    def get(self, plural: str, namespace: str | None, name: str) -> Obj | None:
        res = self._resource(plural)
        with self._cond:
            obj = self._objs[plural].get((namespace or "", name))
        return None if obj is None else _clone(self._full(res, obj))

    def objects(self, plural: str) -> list[Obj]:
        """Every stored object of ``plural``, sorted by namespace/name."""
        res = self._resource(plural)
        with self._cond:
            _, objs = self._view(plural)
        return [_clone(self._full(res, o)) for o in objs]

    def bulk_load(self, plural: str, objs: Iterable[Any]) -> str:
        """Load many objects fast, with consecutive resourceVersions and no watch events.

        History restarts after the load: a watch of ``plural`` from an older resourceVersion (or
        one open meanwhile) gets 410 Expired, as if the events had been compacted.
        """
        res = self._resource(plural)
        gc_was_enabled = gc.isenabled()
        gc.disable()  # the collector's passes over 10^5 fresh containers would dominate
        try:
            batch = _clone([o if isinstance(o, dict) else _as_dict(o) for o in objs])
            return self._bulk_store(res, batch)
        finally:
            if gc_was_enabled:
                gc.enable()

    def _bulk_store(self, res: Resource, batch: list[Obj]) -> str:
        for obj in batch:
            obj.pop("apiVersion", None)
            obj.pop("kind", None)
            meta = _meta(obj)
            if not meta.get("name"):
                raise ValueError("bulk_load objects need metadata.name")
            if res.namespaced:
                meta["namespace"] = meta.get("namespace") or "default"
            else:
                meta.pop("namespace", None)
        stamp = _now()
        uid_base = uuid.uuid4().hex[:20]  # unique per load; a counter fills the node part
        uid_prefix = f"{uid_base[:8]}-{uid_base[8:12]}-4{uid_base[13:16]}-a{uid_base[17:20]}-"
        with self._cond:
            store = self._objs[res.plural]
            for i, obj in enumerate(batch):
                self._rv += 1
                meta = obj["metadata"]
                meta.setdefault("uid", f"{uid_prefix}{i:012x}")
                meta.setdefault("creationTimestamp", stamp)
                meta["resourceVersion"] = str(self._rv)
                store[_key(obj)] = obj
            self._sorted.pop(res.plural, None)
            self._hist.append((self._rv, res.plural, "GAP", {}, None))
            self._hist_rvs.append(self._rv)
            self._cond.notify_all()
            return str(self._rv)

    # --- the store ---------------------------------------------------------------------------

    def _resource(self, plural: str) -> Resource:
        res = self._resources.get(plural)
        if res is None:
            raise ValueError(f"unknown resource {plural!r}")
        if plural in self.missing:
            raise ValueError(f"resource {plural!r} is declared missing")
        return res

    @staticmethod
    def _full(res: Resource, obj: Obj) -> Obj:
        return {"kind": res.kind, "apiVersion": res.api_version, **obj}

    def _view(self, plural: str) -> tuple[list[Key], list[Obj]]:
        """The objects of ``plural`` sorted by key; immutable, rebuilt after a change."""
        view = self._sorted.get(plural)
        if view is None:
            items = sorted(self._objs[plural].items())
            view = ([k for k, _ in items], [o for _, o in items])
            self._sorted[plural] = view
        return view

    def _commit(self, res: Resource, etype: str, new: Obj, old: Obj | None) -> Obj:
        """Assign the next resourceVersion to ``new`` (a fresh dict), store it, record the event."""
        self._rv += 1
        new["metadata"]["resourceVersion"] = str(self._rv)
        store = self._objs[res.plural]
        if etype == "DELETED":
            store.pop(_key(new), None)
        else:
            store[_key(new)] = new
        self._sorted.pop(res.plural, None)
        self._hist.append((self._rv, res.plural, etype, new, old))
        self._hist_rvs.append(self._rv)
        self._cond.notify_all()
        return new

    def _namespace_of(self, res: Resource, path_ns: str | None, meta: Obj) -> str:
        if not res.namespaced:
            meta.pop("namespace", None)
            return ""
        body_ns = meta.get("namespace")
        if path_ns is None:
            ns = body_ns or "default"
        elif body_ns and body_ns != path_ns:
            raise FakeApiError(
                400,
                "the namespace of the provided object does not match the namespace sent on the "
                "request",
            )
        else:
            ns = path_ns
        meta["namespace"] = ns
        return ns

    def _create(self, res: Resource, path_ns: str | None, body: Obj) -> Obj:
        obj = _clone(body)
        if not isinstance(obj, dict):
            raise FakeApiError(400, "the body of the request must be an object")
        obj.pop("apiVersion", None)
        obj.pop("kind", None)
        meta = _meta(obj)
        ns = self._namespace_of(res, path_ns, meta)
        for field in ("resourceVersion", "uid", "deletionTimestamp"):
            meta.pop(field, None)
        with self._cond:
            store = self._objs[res.plural]
            name = meta.get("name")
            if not name:
                prefix = meta.get("generateName")
                if not prefix:
                    raise FakeApiError(
                        422,
                        f'{res.kind} "" is invalid: metadata.name: Required value: name or '
                        "generateName is required",
                        "Invalid",
                        {"kind": res.kind},
                    )
                while not name or (ns, name) in store:
                    name = prefix + "".join(random.choices(_NAME_CHARS, k=5))
                meta["name"] = name
            if (ns, name) in store:
                raise FakeApiError(
                    409,
                    f'{res.qualified} "{name}" already exists',
                    "AlreadyExists",
                    _details(res, name),
                )
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
            meta["generation"] = 1
            return self._commit(res, "ADDED", obj, None)

    def _replace(
        self,
        res: Resource,
        path_ns: str | None,
        name: str,
        body: Obj,
        *,
        http_put: bool = False,
    ) -> Obj:
        new = _clone(body)
        if not isinstance(new, dict):
            raise FakeApiError(400, "the body of the request must be an object")
        new.pop("apiVersion", None)
        new.pop("kind", None)
        meta = _meta(new)
        if meta.get("name") not in (None, "", name):
            raise FakeApiError(
                400,
                f"the name of the object ({meta['name']}) does not match the name on the URL "
                f"({name})",
            )
        meta["name"] = name
        ns = self._namespace_of(res, path_ns, meta)
        with self._cond:
            old = self._objs[res.plural].get((ns, name))
            if old is None:
                raise _not_found(res, name)
            if http_put and self._conflicts.get(res.plural):
                self._conflicts[res.plural] -= 1
                raise _conflict(res, name, _MODIFIED)
            return self._update(res, old, new)

    def _update(self, res: Resource, old: Obj, new: Obj) -> Obj:
        """Store ``new`` (a fresh dict) over ``old`` after the resourceVersion/uid preconditions."""
        meta, old_meta = new["metadata"], old["metadata"]
        name = old_meta["name"]
        wanted = meta.get("resourceVersion")
        if wanted and wanted != old_meta["resourceVersion"]:
            raise _conflict(res, name, _MODIFIED)
        uid = meta.get("uid")
        if uid and uid != old_meta["uid"]:
            raise _conflict(
                res,
                name,
                f"Precondition failed: UID in precondition: {uid}, UID in object meta: "
                f"{old_meta['uid']}",
            )
        for field in ("name", "namespace", "uid", "creationTimestamp", "resourceVersion"):
            if field in old_meta:
                meta[field] = old_meta[field]
        generation = old_meta.get("generation")
        if generation is None:
            meta.pop("generation", None)
        else:
            meta["generation"] = generation
        if new == old:
            return old  # a no-op update writes nothing: same resourceVersion, no event
        if generation is not None and new.get("spec") != old.get("spec"):
            meta["generation"] = generation + 1
        return self._commit(res, "MODIFIED", new, old)

    def _patch(self, res: Resource, ns: str | None, name: str, ctype: str, raw: bytes) -> Obj:
        ctype = ctype.split(";")[0].strip().lower()
        merge = ctype == "application/merge-patch+json" or (
            ctype == "application/strategic-merge-patch+json" and not res.crd
        )
        if not merge and ctype != "application/json-patch+json":
            raise FakeApiError(
                415,
                f"the body of the request was in an unknown format - accepted media types "
                f"include: application/json-patch+json, application/merge-patch+json"
                f"{'' if res.crd else ', application/strategic-merge-patch+json'}",
            )
        patch = _parse_json(raw)
        if merge and not isinstance(patch, dict):
            raise FakeApiError(400, "a merge patch must be a JSON object")
        with self._cond:
            old = self._objs[res.plural].get((ns or "", name))
            if old is None:
                raise _not_found(res, name)
            base = self._full(res, old)
            new = _clone(merge_patch(base, patch) if merge else json_patch(base, patch))
            if not isinstance(new, dict):
                raise FakeApiError(422, "the patched object must be a JSON object", "Invalid")
            new.pop("apiVersion", None)
            new.pop("kind", None)
            meta = _meta(new)
            meta["name"] = name
            if res.namespaced:
                meta["namespace"] = ns or ""
            return self._update(res, old, new)

    def _delete(
        self, res: Resource, ns: str | None, name: str, preconditions: Obj | None = None
    ) -> Obj:
        with self._cond:
            old = self._objs[res.plural].get((ns or "", name))
            if old is None:
                raise _not_found(res, name)
            meta = old["metadata"]
            pre = preconditions or {}
            if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
                raise _conflict(
                    res,
                    name,
                    f"Precondition failed: ResourceVersion in precondition: "
                    f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                    f"{meta['resourceVersion']}",
                )
            if pre.get("uid") and pre["uid"] != meta["uid"]:
                raise _conflict(
                    res,
                    name,
                    f"Precondition failed: UID in precondition: {pre['uid']}, UID in object "
                    f"meta: {meta['uid']}",
                )
            return self._commit(res, "DELETED", _clone(old), old)

    # --- HTTP --------------------------------------------------------------------------------

    def _handle(self, h: _Handler, method: str) -> None:
        url = urlsplit(h.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length > 0 else b""
        with self._cond:
            self.requests.append((method, url.path, query))
            delay = self._delay_s
        if delay:
            self._stopping.wait(delay)
        try:
            route = self._route(url.path)
            self._injected_failure(method, route)
            self._dispatch(h, method, route, query, raw)
        except FakeApiError as e:
            self._send(h, e.code, e.status, e.headers)
        except OSError:
            raise
        except Exception:
            with self._cond:
                self.errors.append(traceback.format_exc())
            self._send(h, 500, status(500, "Internal error occurred: fakeapi bug", "InternalError"))

    def _send(
        self, h: _Handler, code: int, body: Obj | bytes, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Cache-Control", "no-cache, private")
        h.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            h.send_header(name, value)
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(data)

    def _injected_failure(self, method: str, route: _Route) -> None:
        plural = route.res.plural if route.res else None
        with self._cond:
            for rule in self._fail_rules:
                if rule.method not in (None, method) or rule.plural not in (None, plural):
                    continue
                rule.remaining -= 1
                if rule.remaining <= 0:
                    self._fail_rules.remove(rule)
                headers = [("Retry-After", str(rule.retry_after))] if rule.retry_after else []
                message = _MESSAGES.get(rule.status, "injected failure")
                raise FakeApiError(rule.status, message, None, {}, headers)

    def _route(self, path: str) -> _Route:
        parts = [unquote(p) for p in path.split("/") if p]
        if parts == ["version"]:
            return _Route(document=self._version_doc())
        if parts[:1] == ["api"]:
            if len(parts) == 1:
                return _Route(document=self._core_versions_doc())
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"]:
            if len(parts) == 1:
                return _Route(document=self._groups_doc())
            if len(parts) == 2:
                groups = [g for g in self._groups_doc()["groups"] if g["name"] == parts[1]]
                if not groups:
                    raise _unknown_path()
                return _Route(document={"kind": "APIGroup", "apiVersion": "v1", **groups[0]})
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise _unknown_path()
        if not rest:
            return _Route(document=self._resources_doc(group, version))
        if len(rest) == 1 and (group, version, rest[0]) in _REVIEWS:
            return _Route(review=_REVIEWS[group, version, rest[0]])
        ns: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            ns, rest = rest[1], rest[2:]
        plural, name, sub = rest[0], (rest[1] if len(rest) > 1 else None), rest[2:]
        res = self._by_path.get((group, version, plural))
        if (
            res is None
            or plural in self.missing
            or (ns is not None and not res.namespaced)
            or (ns is None and name is not None and res.namespaced)
            or sub not in ([], ["status"])  # status is served as the object itself
        ):
            raise _unknown_path()
        return _Route(res=res, namespace=ns, name=name)

    def _dispatch(
        self, h: _Handler, method: str, route: _Route, query: dict[str, str], raw: bytes
    ) -> None:
        res, ns, name = route.res, route.namespace, route.name
        if route.review is not None:
            if method != "POST":
                raise FakeApiError(405, _MESSAGES[405])
            self._send(h, 201, self._review(route.review, _parse_json(raw)))
            return
        if route.document is not None or res is None:
            if method != "GET":
                raise FakeApiError(405, _MESSAGES[405])
            self._send(h, 200, route.document or {})
            return
        if name is None:
            if method == "GET" and query.get("watch") in _TRUE:
                self._serve_watch(h, res, ns, query)
            elif method == "GET":
                self._send(h, 200, self._list(res, ns, query))
            elif method == "POST" and (ns is not None or not res.namespaced):
                self._send(h, 201, self._full(res, self._create(res, ns, _parse_json(raw))))
            elif method == "DELETE" and (ns is not None or not res.namespaced):
                self._send(h, 200, self._delete_collection(res, ns, query))
            else:
                raise FakeApiError(405, _MESSAGES[405])
            return
        if method == "GET":
            with self._cond:
                obj = self._objs[res.plural].get((ns or "", name))
            if obj is None:
                raise _not_found(res, name)
            self._send(h, 200, self._full(res, obj))
        elif method == "PUT":
            body = _parse_json(raw)
            self._send(h, 200, self._full(res, self._replace(res, ns, name, body, http_put=True)))
        elif method == "PATCH":
            ctype = h.headers.get("Content-Type", "")
            self._send(h, 200, self._full(res, self._patch(res, ns, name, ctype, raw)))
        elif method == "DELETE":
            options = _parse_json(raw) if raw.strip() else {}
            pre = options.get("preconditions") if isinstance(options, dict) else None
            gone = self._delete(res, ns, name, pre if isinstance(pre, dict) else None)
            if res.crd or res.deleted_object:
                self._send(h, 200, self._full(res, gone))
            else:
                details = {**_details(res, name), "uid": gone["metadata"]["uid"]}
                self._send(
                    h,
                    200,
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Success",
                        "details": details,
                    },
                )
        else:
            raise FakeApiError(405, _MESSAGES[405])

    def _list(self, res: Resource, ns: str | None, query: dict[str, str]) -> bytes:
        match = _selector(query)
        limit = _int_param(query, "limit")
        token = query.get("continue")
        snap_rv = 0
        start: Key | None = None
        with self._cond:
            if token:
                snap_rv, start = _decode_token(token)
                if snap_rv == -1:  # an inconsistent continuation, from the latest state
                    view, list_rv = self._view(res.plural), self._rv
                else:
                    view = self._snapshots.get((res.plural, snap_rv))
                    if view is None:
                        error = FakeApiError(410, _CONTINUE_EXPIRED, "Expired")
                        error.status["metadata"] = {"continue": _encode_token(-1, start)}
                        raise error
                    self._snapshots.move_to_end((res.plural, snap_rv))
                    list_rv = snap_rv
            else:
                view, list_rv = self._view(res.plural), self._rv
                snap_rv = list_rv
                if limit:
                    self._snapshots[(res.plural, list_rv)] = view
                    self._snapshots.move_to_end((res.plural, list_rv))
                    while len(self._snapshots) > _SNAPSHOTS_KEPT:
                        self._snapshots.popitem(last=False)
        keys, objs = view  # immutable: read outside the lock
        lo, hi = 0, len(keys)
        if ns is not None:
            lo, hi = bisect.bisect_left(keys, (ns,)), bisect.bisect_left(keys, (ns + "\0",))
        i = max(lo, bisect.bisect_right(keys, start)) if start else lo
        items: list[Obj] = []
        while i < hi and (not limit or len(items) < limit):
            obj = objs[i]
            i += 1
            if match is None or match(obj):
                items.append(obj)
        meta: Obj = {"resourceVersion": str(list_rv)}
        if limit and i < hi:
            meta["continue"] = _encode_token(snap_rv, keys[i - 1])
            if match is None:
                meta["remainingItemCount"] = hi - i
        if res.crd:
            items = [self._full(res, o) for o in items]
        return orjson.dumps(
            {
                "apiVersion": res.api_version,
                "kind": f"{res.kind}List",
                "metadata": meta,
                "items": items,
            }
        )

    def _delete_collection(self, res: Resource, ns: str | None, query: dict[str, str]) -> Obj:
        match = _selector(query)
        with self._cond:
            _, objs = self._view(res.plural)
            doomed = [
                o
                for o in objs
                if (ns is None or o["metadata"].get("namespace") == ns)
                and (match is None or match(o))
            ]
            gone = [self._commit(res, "DELETED", _clone(o), o) for o in doomed]
            rv = self._rv
        return {
            "apiVersion": res.api_version,
            "kind": f"{res.kind}List",
            "metadata": {"resourceVersion": str(rv)},
            "items": [self._full(res, o) if res.crd else o for o in gone],
        }

    # --- watch -------------------------------------------------------------------------------

    def _serve_watch(
        self, h: _Handler, res: Resource, ns: str | None, query: dict[str, str]
    ) -> None:
        match = _selector(query)
        rv_param = query.get("resourceVersion", "")
        bookmarks = query.get("allowWatchBookmarks") in _TRUE
        send_initial = query.get("sendInitialEvents")
        initial_bookmark = send_initial in _TRUE  # then a bookmark marks the end of the state
        timeout = _int_param(query, "timeoutSeconds")
        deadline = time.monotonic() + timeout if timeout else None
        from_rv = _parse_rv(rv_param) if rv_param not in ("", "0") else 0

        def wanted(obj: Obj | None) -> bool:
            if obj is None or (ns is not None and obj["metadata"].get("namespace") != ns):
                return False
            return match is None or match(obj)

        expired: str | None = None
        initial: list[Obj] = []
        with self._cond:
            gen = self._drop_gen
            if rv_param in ("", "0") or initial_bookmark:
                if send_initial is None or initial_bookmark:
                    initial = [o for o in self._view(res.plural)[1] if wanted(o)]
                cursor, covered = self._hist_base + len(self._hist), self._rv
            elif from_rv < self._floor:
                expired = f"too old resource version: {from_rv} ({self._floor})"
            else:
                cursor = self._hist_base + bisect.bisect_right(self._hist_rvs, from_rv)
                covered = from_rv
            watch_id = next(self._watch_ids)
            self._watches[watch_id] = h.connection
        try:
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Cache-Control", "no-cache, private")
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            if expired is not None:
                self._write_event(h, "ERROR", status(410, expired, "Expired"))
                h.wfile.write(b"0\r\n\r\n")
                return
            batch = bytearray()
            for obj in initial:
                batch += _chunk(_event_line("ADDED", self._full(res, obj)))
                if len(batch) >= _INITIAL_WRITE:
                    h.wfile.write(bytes(batch))
                    batch.clear()
            if batch:
                h.wfile.write(bytes(batch))
            if initial_bookmark:
                meta = {
                    "resourceVersion": str(covered),
                    "annotations": {"k8s.io/initial-events-end": "true"},
                }
                self._write_event(h, "BOOKMARK", self._bookmark(res, meta))
            self._watch_loop(h, res, gen, cursor, covered, wanted, bookmarks, deadline)
        finally:
            with self._cond:
                self._watches.pop(watch_id, None)

    def _watch_loop(
        self,
        h: _Handler,
        res: Resource,
        gen: int,
        cursor: int,
        covered: int,
        wanted: Callable[[Obj | None], bool],
        bookmarks: bool,
        deadline: float | None,
    ) -> None:
        interval = self.bookmark_interval
        last_sent = time.monotonic()
        while True:
            events: list[_Event] = []
            bookmark_rv: int | None = None
            timed_out = False
            with self._cond:
                while True:
                    if self._drop_gen != gen:
                        h.close_connection = True  # abrupt: no final chunk
                        with contextlib.suppress(OSError):
                            h.connection.shutdown(socket.SHUT_RDWR)
                        return
                    if cursor < self._hist_base:  # compacted while we lagged behind
                        events = [(self._floor, res.plural, "GAP", {}, None)]
                        break
                    if cursor < self._hist_base + len(self._hist):
                        events = self._hist[cursor - self._hist_base :]
                        cursor = self._hist_base + len(self._hist)
                        break
                    now = time.monotonic()
                    if deadline is not None and now >= deadline:
                        timed_out = True
                        break
                    if bookmarks and now - last_sent >= interval:
                        bookmark_rv = self._rv
                        break
                    if _peer_closed(h.connection):  # the client went away: end the watch
                        h.close_connection = True
                        return
                    waits = [_LIVENESS_POLL]
                    if deadline is not None:
                        waits.append(deadline - now)
                    if bookmarks:
                        waits.append(interval - (now - last_sent))
                    self._cond.wait(min(waits))
            if timed_out:
                h.wfile.write(b"0\r\n\r\n")  # the clean end of the stream
                return
            if bookmark_rv is not None:
                meta = {"resourceVersion": str(bookmark_rv)}
                self._write_event(h, "BOOKMARK", self._bookmark(res, meta))
                last_sent = time.monotonic()
                continue
            out = bytearray()
            for rv, plural, etype, obj, old in events:
                if plural != res.plural:
                    continue
                if etype == "GAP":
                    if out:
                        h.wfile.write(bytes(out))
                    message = f"too old resource version: {covered} ({rv})"
                    self._write_event(h, "ERROR", status(410, message, "Expired"))
                    h.wfile.write(b"0\r\n\r\n")
                    return
                covered = rv
                now_in, was_in = wanted(obj), wanted(old)
                if etype == "MODIFIED" and now_in and not was_in:
                    etype = "ADDED"  # moved into the selector
                elif etype == "MODIFIED" and was_in and not now_in and old is not None:
                    # Moved out: DELETED with the previous content at the event's version.
                    etype = "DELETED"
                    obj = {**old, "metadata": {**old["metadata"], "resourceVersion": str(rv)}}
                elif not now_in:
                    continue
                out += _chunk(_event_line(etype, self._full(res, obj)))
            if out:
                h.wfile.write(bytes(out))  # a chunk per event, written together
                last_sent = time.monotonic()

    @staticmethod
    def _bookmark(res: Resource, meta: Obj) -> Obj:
        return {"kind": res.kind, "apiVersion": res.api_version, "metadata": meta}

    @staticmethod
    def _write_event(h: _Handler, etype: str, obj: Obj) -> None:
        _write_chunk(h, _event_line(etype, obj))

    # --- discovery ---------------------------------------------------------------------------

    def _review(self, kind: str, body: Any) -> Obj:
        spec = body.get("spec") if isinstance(body, dict) else None
        if not isinstance(spec, dict):
            raise FakeApiError(400, f"{kind} needs a spec")
        answer: Obj
        with self._cond:
            if kind == "TokenReview":
                user = self._users.get(str(spec.get("token") or ""))
                answer = (
                    {"authenticated": True, "user": _clone(user)}
                    if user is not None
                    else {"user": {}, "error": "invalid bearer token"}
                )
            else:
                url = spec.get("nonResourceAttributes")
                attributes = spec.get("resourceAttributes") or {}
                namespace = attributes.get("namespace") or None
                subjects = [spec.get("user"), *(f"group:{g}" for g in spec.get("groups") or ())]
                wanted = (
                    attributes.get("verb"),
                    attributes.get("group") or "",
                    attributes.get("resource"),
                )
                if isinstance(url, dict):  # a URL is cluster-wide: no namespace to it
                    wanted, namespace = (url.get("verb"), _URL, url.get("path")), None
                allowed = any(
                    (subject, *wanted, scope) in self._grants
                    for subject in subjects
                    for scope in {None, namespace}
                )
                answer = {"allowed": allowed, "reason": "granted by fakeapi" if allowed else ""}
        return {"kind": kind, "apiVersion": body.get("apiVersion"), "spec": spec, "status": answer}

    def _served(self) -> list[Resource]:
        return [r for r in self._resources.values() if r.plural not in self.missing]

    def _version_doc(self) -> Obj:
        return {
            "major": "1",
            "minor": "33",
            "gitVersion": "v1.33.0",
            "gitCommit": "0" * 40,
            "gitTreeState": "clean",
            "buildDate": "2025-04-23T00:00:00Z",
            "goVersion": "go1.24.2",
            "compiler": "gc",
            "platform": "linux/amd64",
        }

    def _core_versions_doc(self) -> Obj:
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.port}"}
            ],
        }

    def _groups_doc(self) -> Obj:
        groups: dict[str, list[str]] = {}
        for r in self._served():
            if r.group and r.version not in groups.setdefault(r.group, []):
                groups[r.group].append(r.version)
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [
                {
                    "name": g,
                    "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in versions],
                    "preferredVersion": {
                        "groupVersion": f"{g}/{versions[0]}",
                        "version": versions[0],
                    },
                }
                for g, versions in groups.items()
            ],
        }

    def _resources_doc(self, group: str, version: str) -> Obj:
        served = [r for r in self._served() if (r.group, r.version) == (group, version)]
        if not served:
            raise _unknown_path()
        verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": served[0].api_version,
            "resources": [
                {
                    "name": r.plural,
                    "singularName": r.kind.lower(),
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": verbs,
                }
                for r in served
            ],
        }


def _event_line(etype: str, obj: Obj) -> bytes:
    return orjson.dumps({"type": etype, "object": obj}) + b"\n"


def _chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def _write_chunk(h: _Handler, data: bytes) -> None:
    h.wfile.write(_chunk(data))


def _peer_closed(conn: socket.socket) -> bool:
    """Whether the client closed its end (it sends nothing while it watches)."""
    try:
        return conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw or b"null")
    except orjson.JSONDecodeError as e:
        raise FakeApiError(400, f"the body of the request could not be decoded: {e}") from None


def _parse_rv(value: str) -> int:
    try:
        rv = int(value)
    except ValueError:
        rv = -1
    if rv < 0:
        raise FakeApiError(400, f'invalid resource version "{value}"')
    return rv


def _int_param(query: dict[str, str], name: str) -> int:
    value = query.get(name, "")
    try:
        return max(0, int(value)) if value else 0
    except ValueError:
        raise FakeApiError(400, f"invalid {name}: {value!r}") from None
