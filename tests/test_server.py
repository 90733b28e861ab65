"""The real `costgate serve` process, over TLS, as the API server talks to it.

One server process per module (module-scoped fixture): it is started with
`python -m webhook.cli serve --port P --cert-dir D` and no COSTGATE_* variables, so it runs on
its embedded defaults (bundled pricing and policy, a self-signed certificate in D).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import signal
import socket
import ssl
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonpatch
import pytest
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from tests.support.captures import capture, capture_bytes
from tests.support.config import env_without_costgate, pricing_data
from tests.support.servers import (
    START_TIMEOUT,
    Server,
    free_port,
    serve_command,
    start_server,
    stop_process,
    wait_ready,
)
from tests.support.tools import unavailable

pytestmark = pytest.mark.slow

MIB = 1024 * 1024
COST_ANNOTATION = "costgate.io/estimated-cost"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    cert_dir = tmp_path_factory.mktemp("certs")
    work = tmp_path_factory.mktemp("serve")
    log = work / "server.log"
    port = free_port()
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            serve_command(port, cert_dir),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env_without_costgate(),
            cwd=work,
        )
    server = Server(f"https://127.0.0.1:{port}", port, cert_dir / "ca.crt", log, process)
    try:
        wait_ready(server)
        yield server
    finally:
        stop_process(process)


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def _review(response: httpx.Response) -> dict[str, Any]:
    """The AdmissionReview answer, checked for the envelope every answer must have."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    review = response.json()
    assert review["apiVersion"] == "admission.k8s.io/v1"
    assert review["kind"] == "AdmissionReview"
    return review["response"]


# --- TLS -----------------------------------------------------------------------------------------


def test_the_serving_certificate_verifies_against_the_generated_ca(
    server: Server, client: httpx.Client
) -> None:
    response = client.get("/healthz")  # the client checks the chain and the host name
    assert response.status_code == 200
    assert response.text == "ok"

    # what the server presents is a leaf issued by that CA, not the CA (or itself) served raw
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock,
        server.tls_context().wrap_socket(sock, server_hostname="127.0.0.1") as tls,
    ):
        presented = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True) or b"")
    ca = x509.load_pem_x509_certificate(server.ca.read_bytes())
    assert presented != ca
    presented.verify_directly_issued_by(ca)
    constraints = presented.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca is False
    san = presented.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)


def test_a_client_without_the_ca_rejects_the_certificate(server: Server) -> None:
    with (
        httpx.Client(verify=ssl.create_default_context(), timeout=5.0) as stranger,
        pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        stranger.get(f"{server.base_url}/healthz")


def _handshake(server: Server, maximum: ssl.TLSVersion) -> str:
    """The TLS version negotiated by a client that offers at most `maximum`."""
    context = server.tls_context()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1_1 is deprecated
        try:
            context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
            context.maximum_version = maximum
            context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let old protocols be offered at all
        except (ValueError, ssl.SSLError) as exc:
            unavailable(f"this OpenSSL cannot build a {maximum.name} client: {exc}")
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock,
        context.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
    ):
        return tls.version() or ""


@pytest.mark.parametrize(
    ("maximum", "expected"),
    [
        pytest.param(ssl.TLSVersion.TLSv1_2, "TLSv1.2", id="a TLS 1.2 client is served"),
        pytest.param(ssl.TLSVersion.TLSv1_3, "TLSv1.3", id="a TLS 1.3 client is served"),
    ],
)
def test_modern_tls_clients_are_served(
    server: Server, maximum: ssl.TLSVersion, expected: str
) -> None:
    assert _handshake(server, maximum) == expected


def test_a_tls_1_1_client_is_refused(server: Server) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tls11 = ssl.TLSVersion.TLSv1_1
    try:
        version = _handshake(server, tls11)
    except ssl.SSLError as exc:
        if "NO_PROTOCOLS_AVAILABLE" in str(exc) or "NO_CIPHERS_AVAILABLE" in str(exc):
            unavailable(f"this OpenSSL refuses to offer TLS 1.1 itself: {exc}")
        refused = exc
    else:
        pytest.fail(f"the server accepted a TLS 1.1 client ({version})")
    # the server (TLS 1.2 at least) closes the connection on the TLS 1.1 ClientHello
    assert type(refused) is ssl.SSLEOFError, refused


# --- admission over the wire ---------------------------------------------------------------------


def test_validate_denies_the_8_gpu_pod_over_the_threshold(client: httpx.Client) -> None:
    # 8 × h100-80gb at $6.88/h (pricing/default.yaml) × 24h (costgate.io/max-runtime) = $1,320.96
    assert pricing_data()["gpus"]["h100-80gb"]["usd_per_hour"] == 6.88
    request = capture("validate-pod-create-gpu")["request"]
    assert request["object"]["metadata"]["annotations"]["costgate.io/max-runtime"] == "24h"

    answer = _review(client.post("/validate", content=capture_bytes("validate-pod-create-gpu")))

    assert answer["uid"] == request["uid"]
    assert answer["allowed"] is False
    assert answer["status"]["code"] == 403
    assert answer["status"]["reason"] == "Forbidden"
    assert answer["status"]["message"].startswith(
        "estimated cost $1,320.96 (8 × h100-80gb at $6.88/h × 24h) exceeds the $100.00 limit "
        'for namespace "demo"'
    )
    assert "\n" not in answer["status"]["message"]  # kubectl prints it on one line
    assert "patch" not in answer
    assert answer["auditAnnotations"]["decision"] == "deny"


def test_the_api_servers_timeout_query_parameter_is_ignored(client: httpx.Client) -> None:
    # the API server calls webhooks as POST /validate?timeout=10s
    uid = capture("validate-pod-create-gpu")["request"]["uid"]
    response = client.post(
        "/validate", params={"timeout": "10s"}, content=capture_bytes("validate-pod-create-gpu")
    )
    answer = _review(response)
    assert answer["uid"] == uid
    assert answer["allowed"] is False


def test_mutate_stamps_the_estimate_with_a_patch_that_applies(client: httpx.Client) -> None:
    request = capture("mutate-pod-create-dryrun")["request"]
    obj = request["object"]
    assert request["dryRun"] is True
    # No gpu-type and no GPU nodeSelector: priced as the dearest nvidia.com/gpu type in the
    # table, for the pod's own deadline (7200 s, below the 12h default, so it is kept).
    pricing = pricing_data()
    dearest = max(
        g["usd_per_hour"] for g in pricing["gpus"].values() if g["resource"] == "nvidia.com/gpu"
    )
    deadline = obj["spec"]["activeDeadlineSeconds"]
    assert deadline == 7200
    expected = f"{round(dearest * 1 * deadline / 3600, 2):.2f}"

    answer = _review(client.post("/mutate", content=capture_bytes("mutate-pod-create-dryrun")))

    assert answer["uid"] == request["uid"]
    assert answer["allowed"] is True
    assert answer["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(answer["patch"]))
    patched = jsonpatch.apply_patch(obj, ops)  # the pod has no annotations: the patch adds them
    assert patched["metadata"]["annotations"][COST_ANNOTATION] == expected
    # nothing else changed: the smaller deadline is kept, the rest of the pod untouched
    assert patched["spec"]["activeDeadlineSeconds"] == deadline
    del patched["metadata"]["annotations"]
    assert patched == obj

    # the validating webhook tells the user the same estimate
    validated = _review(
        client.post("/validate", content=capture_bytes("validate-pod-create-dryrun"))
    )
    assert validated["allowed"] is True
    assert validated["warnings"][0].startswith(f"costgate: estimated cost ${expected} (1 × ")


@pytest.mark.parametrize(
    ("endpoint", "fixture"),
    [
        pytest.param("mutate", "mutate-pod-create-plain", id="mutate leaves a plain pod alone"),
        pytest.param(
            "validate", "validate-pod-create-plain", id="validate leaves a plain pod alone"
        ),
    ],
)
def test_a_pod_without_gpus_is_allowed_untouched(
    client: httpx.Client, endpoint: str, fixture: str
) -> None:
    answer = _review(client.post(f"/{endpoint}", content=capture_bytes(fixture)))
    assert answer["uid"] == capture(fixture)["request"]["uid"]
    assert answer["allowed"] is True
    assert "patch" not in answer
    assert "patchType" not in answer
    assert "warnings" not in answer
    assert "status" not in answer


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/validate", id="GET on the validating endpoint is not allowed"),
        pytest.param("/mutate", id="GET on the mutating endpoint is not allowed"),
    ],
)
def test_admission_endpoints_only_take_post(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 405
    assert "error" in response.json()


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/healthz", id="the liveness probe answers"),
        pytest.param("/readyz", id="the readiness probe answers"),
    ],
)
def test_probes_answer_ok(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.text == "ok"


# --- metrics -------------------------------------------------------------------------------------

Counts = dict[tuple[str, ...], float]


def _metrics(client: httpx.Client) -> tuple[Counts, Counts]:
    """(requests by (endpoint, kind, outcome), durations observed by (endpoint,), over kinds)."""
    response = client.get("/metrics")
    assert response.status_code == 200
    requests: Counts = {}
    durations: Counts = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == "costgate_admission_requests_total":
                labels = sample.labels
                key = (labels["endpoint"], labels["kind"], labels["outcome"])
                requests[key] = sample.value
            elif sample.name == "costgate_admission_duration_seconds_count":
                key = (sample.labels["endpoint"],)  # summed over kinds
                durations[key] = durations.get(key, 0.0) + sample.value
    return requests, durations


def _delta(before: Counts, after: Counts) -> Counts:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


def test_metrics_count_every_review_by_endpoint_kind_and_outcome(client: httpx.Client) -> None:
    odd_kind = capture("validate-pod-create-gpu")
    odd_kind["request"]["kind"] = {"group": "", "version": "v1", "kind": 'Evil"\nkind'}
    before, durations_before = _metrics(client)

    for _ in range(3):
        client.post("/validate", content=capture_bytes("validate-pod-create-gpu"))
    for _ in range(2):
        client.post("/mutate", content=capture_bytes("mutate-pod-create-dryrun"))
    client.post("/validate", content=capture_bytes("validate-pod-create-plain"))
    client.post("/validate", content=json.dumps(odd_kind))
    assert client.post("/mutate", content=b"not json").status_code == 400

    after, durations_after = _metrics(client)
    assert _delta(before, after) == {
        ("validate", "Pod", "deny"): 3,
        ("mutate", "Pod", "patch"): 2,
        ("validate", "Pod", "skip"): 1,
        # a kind costgate does not handle is counted as "other", whatever the sender wrote
        ("validate", "other", "skip"): 1,
        ("mutate", "", "invalid"): 1,
    }
    assert _delta(durations_before, durations_after) == {("validate",): 5, ("mutate",): 3}
    assert "Evil" not in client.get("/metrics").text


def test_metrics_count_oversized_reviews_too(client: httpx.Client) -> None:
    before, _ = _metrics(client)
    answer = _review(client.post("/validate", content=_oversized_review()))
    assert answer["status"]["code"] == 413
    after, _ = _metrics(client)
    counted = sum(v for key, v in _delta(before, after).items() if key[0] == "validate")
    assert counted == 1


# --- bad input through the real server -----------------------------------------------------------

GPU_UID = capture("validate-pod-create-gpu")["request"]["uid"]


def _oversized_review() -> bytes:
    doc = capture("validate-pod-create-gpu")
    doc["request"]["object"]["metadata"]["annotations"]["example.com/huge"] = "x" * (3 * MIB)
    body = json.dumps(doc).encode()
    assert len(body) > 3 * MIB
    assert body.index(GPU_UID.encode()) < 1024  # the uid is in the prefix, as the API server writes
    return body


def _oversized_without_uid() -> bytes:
    return b'{"kind":"AdmissionReview","padding":"' + b"x" * (3 * MIB + 16) + b'"}'


def _chunks(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def _nesting_bomb() -> bytes:
    return b'{"request":{"uid":"u1","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}}"


def _bad_utf8() -> bytes:
    doc = capture("validate-pod-create-gpu")
    doc["request"]["object"]["metadata"]["annotations"]["example.com/bad"] = "@@BAD@@"
    body = json.dumps(doc).encode()
    return body.replace(b"@@BAD@@", b"\xff\xfe\xc3(")


def _unhashable_operation() -> bytes:
    doc = capture("validate-pod-create-gpu")
    doc["request"]["operation"] = ["CREATE"]
    return json.dumps(doc).encode()


@dataclass(frozen=True)
class BadInput:
    body: Callable[[], bytes | Iterator[bytes]]
    uid: str | None  # the uid the answer must carry; None: an HTTP error with a JSON body
    code: int
    keep_alive: bool  # the connection stays usable for the next request


BAD_INPUTS = [
    pytest.param(
        BadInput(_oversized_review, GPU_UID, 413, keep_alive=False),
        id="a review over 3 MiB is refused with its uid recovered from the prefix",
    ),
    pytest.param(
        BadInput(lambda: _chunks(_oversized_review()), GPU_UID, 413, keep_alive=False),
        id="a chunked review over 3 MiB without Content-Length is refused with its uid",
    ),
    pytest.param(
        BadInput(_oversized_without_uid, None, 413, keep_alive=False),
        id="a body over 3 MiB with no uid gets an HTTP 413 with a JSON error",
    ),
    pytest.param(
        BadInput(_nesting_bomb, "u1", 400, keep_alive=True),
        id="a JSON nesting bomb gets a 400 answer with its uid",
    ),
    pytest.param(
        BadInput(_bad_utf8, GPU_UID, 400, keep_alive=True),
        id="bytes that are not UTF-8 inside a review get a 400 answer with its uid",
    ),
    pytest.param(
        BadInput(lambda: b"\x00garbage{{{", None, 400, keep_alive=True),
        id="garbage with no uid gets an HTTP 400 with a JSON error",
    ),
    pytest.param(
        BadInput(_unhashable_operation, GPU_UID, 400, keep_alive=True),
        id="a review whose operation is a list gets a 400 answer with its uid",
    ),
]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_gets_a_well_formed_answer_and_the_server_stays_up(
    server: Server, case: BadInput
) -> None:
    with server.client() as fresh:  # a connection of its own, to see whether it survives
        with fresh.stream("POST", "/validate", content=case.body()) as response:
            local = response.extensions["network_stream"].get_extra_info("client_addr")
            response.read()
        if case.uid is None:
            assert response.status_code == case.code
            assert response.headers["content-type"] == "application/json"
            error = response.json()
            assert set(error) == {"error"}
            assert error["error"].startswith("costgate cannot read this AdmissionReview")
        else:
            answer = _review(response)
            assert answer["uid"] == case.uid
            assert answer["allowed"] is False
            assert answer["status"]["code"] == case.code
            assert answer["status"]["message"].startswith(
                "costgate cannot read this AdmissionReview"
            )
        assert "Traceback" not in response.text

        with fresh.stream("GET", "/healthz") as health:
            again = health.extensions["network_stream"].get_extra_info("client_addr")
            health.read()
        assert health.status_code == 200
        if case.keep_alive:
            assert again == local, "the server dropped a keep-alive connection"

        # and a real review is still answered properly afterwards
        follow_up = _review(
            fresh.post("/validate", content=capture_bytes("validate-pod-create-gpu"))
        )
        assert follow_up["uid"] == GPU_UID
        assert follow_up["status"]["code"] == 403
    assert server.process.poll() is None


def test_the_server_is_still_running_after_the_module(server: Server, client: httpx.Client) -> None:
    assert server.process.poll() is None
    assert client.get("/readyz").status_code == 200


# --- start-up ------------------------------------------------------------------------------------


def test_the_server_refuses_to_start_with_a_bad_policy(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nthreshold_usd: -5\n")
    port = free_port()
    process = subprocess.Popen(
        serve_command(port, tmp_path / "certs", "--policy", str(policy)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env_without_costgate(),
        cwd=tmp_path,
    )
    try:
        _, stderr_bytes = process.communicate(timeout=START_TIMEOUT)
    finally:
        stop_process(process)
    stderr = stderr_bytes.decode()

    assert process.returncode != 0
    assert str(policy) in stderr
    assert "threshold_usd" in stderr
    assert "Traceback" not in stderr
    assert "serving https" not in stderr
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def _served_serial(port: int, *cas: Path) -> int:
    context = ssl.create_default_context()
    for ca in cas:
        context.load_verify_locations(cafile=str(ca))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        context.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_a_renewed_certificate_is_served_without_a_restart(tmp_path: Path) -> None:
    """The Secret renewed under a running server (as cert-manager does): new handshakes
    present the new certificate, and a broken pair meanwhile changes nothing."""
    from webhook.certs import issue

    first = issue(tmp_path / "certs", ["127.0.0.1", "localhost"])
    tls = tmp_path / "tls"
    tls.mkdir()
    (tls / "tls.crt").write_bytes(first.cert.read_bytes())
    (tls / "tls.key").write_bytes(first.key.read_bytes())
    server = start_server(
        tmp_path,
        "--tls-cert",
        str(tls / "tls.crt"),
        "--tls-key",
        str(tls / "tls.key"),
        env={"COSTGATE_RELOAD_INTERVAL": "0.1"},
    )
    try:
        before = _served_serial(server.port, first.ca)
        assert before == x509.load_pem_x509_certificate(first.cert.read_bytes()).serial_number
        (tls / "tls.crt").write_text("not a certificate")  # a half-made renewal
        time.sleep(0.5)
        assert _served_serial(server.port, first.ca) == before
        renewed = issue(tmp_path / "renewed", ["127.0.0.1", "localhost"])
        (tls / "tls.key").write_bytes(renewed.key.read_bytes())
        (tls / "tls.crt").write_bytes(renewed.cert.read_bytes())
        expected = x509.load_pem_x509_certificate(renewed.cert.read_bytes()).serial_number
        deadline = time.monotonic() + 10
        while _served_serial(server.port, first.ca, renewed.ca) != expected:
            assert time.monotonic() < deadline, "the renewed certificate was never served"
            time.sleep(0.1)
        assert "refused a changed file" in server.log.read_text()
    finally:
        stop_process(server.process)


def test_sigterm_lets_the_review_in_flight_finish(tmp_path: Path) -> None:
    """A review whose body is still arriving when SIGTERM comes is answered in full."""
    server = start_server(tmp_path)
    try:
        body = capture_bytes("validate-pod-create-gpu")
        context = server.tls_context()
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock,
            context.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
        ):
            head = (
                f"POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            tls.sendall(head.encode() + body[:100])
            time.sleep(0.2)
            server.process.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            tls.sendall(body[100:])
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                chunk = tls.recv(65536)
                if not chunk:
                    break
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        assert b'"uid":"' in answer
        # uvicorn finishes, then re-raises the signal: the exit status says SIGTERM
        assert server.process.wait(timeout=15) == -signal.SIGTERM
    finally:
        stop_process(server.process)


def _workers(pid: int) -> list[int]:
    """uvicorn's worker processes under a supervisor (not multiprocessing's resource tracker)."""
    children = [
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    ]
    return [
        child
        for child in children
        if b"resource_tracker" not in Path(f"/proc/{child}/cmdline").read_bytes()
    ]


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_two_workers_serve_and_stop_on_sigterm(tmp_path: Path) -> None:
    """`--workers 2` runs two worker processes behind one socket (uvicorn's supervisor);
    both start, reviews over fresh connections are answered with their uid, and SIGTERM
    stops the supervisor and its workers."""
    server = start_server(tmp_path, "--workers", "2")
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while len(workers := _workers(server.process.pid)) < 2:
            assert time.monotonic() < deadline, "the second worker never started"
            time.sleep(0.1)
        body = capture_bytes("validate-pod-create-gpu")
        uid = json.loads(body)["request"]["uid"]
        for _ in range(20):
            with server.client() as client:  # a new connection each time
                answer = client.post("/validate", content=body)
            assert answer.status_code == 200
            assert answer.json()["response"]["uid"] == uid
        server.process.send_signal(signal.SIGTERM)
        # the supervisor stops its workers and exits cleanly (one worker re-raises SIGTERM)
        assert server.process.wait(timeout=20) == 0
        deadline = time.monotonic() + 5
        while any(_running(pid) for pid in workers):
            assert time.monotonic() < deadline, "a worker outlived its supervisor"
            time.sleep(0.1)
    finally:
        stop_process(server.process)
