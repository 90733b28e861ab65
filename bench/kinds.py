"""In-process benchmark of pricing the kinds of the kinds table (issue #14): for every kind,
the largest GPU sample of it in tests/fixtures/ml-operators/ and the captured manifests
(tests/fixtures/admission-kinds/manifests/), sent whole through AdmissionService.handle as
an AdmissionReview, parse included. Owns the "kinds" rows. Target: under 1 ms each.

    python bench/kinds.py    # this part alone
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import yaml
from report import Row, render
from workflow import _time

from webhook.admission import parse_review
from webhook.core.engine import evaluate
from webhook.service import AdmissionService
from webhook.tables import load_config

__all__ = ["largest_samples", "run"]

TARGET_US = 1000.0
FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"


def _review(obj: dict[str, Any]) -> bytes:
    group, _, version = str(obj["apiVersion"]).rpartition("/")
    return orjson.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "bench",
                "kind": {"group": group, "version": version, "kind": obj["kind"]},
                "resource": {"group": group, "version": version, "resource": "x"},
                "namespace": "bench",
                "name": str(obj.get("metadata", {}).get("name", "")),
                "operation": "CREATE",
                "userInfo": {"username": "bench"},
                "object": obj,
                "dryRun": False,
            },
        }
    )


def largest_samples() -> dict[tuple[str, str], tuple[str, bytes]]:
    """Per (group, kind) of the table: the largest sample costgate finds GPUs in, as a
    review body, with the file it came from."""
    config = load_config()
    files = [
        *sorted((FIXTURES / "ml-operators").glob("*/examples/**/*.yaml")),
        *sorted((FIXTURES / "admission-kinds" / "manifests").glob("*.yaml")),
    ]
    found: dict[tuple[str, str], tuple[str, bytes]] = {}
    for path in files:
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError:
            continue
        for obj in docs:
            if not isinstance(obj, dict) or "apiVersion" not in obj:
                continue
            key = (str(obj["apiVersion"]).rpartition("/")[0], str(obj.get("kind")))
            if key not in config.policy.kinds:
                continue
            metadata = obj.setdefault("metadata", {})
            metadata["labels"] = {"owner": "bench", "experiment": "kinds"}
            # a DaemonSet is priced per node: bounded, so that it is priced at all
            metadata.setdefault("annotations", {})["costgate.io/max-nodes"] = "4"
            body = _review(obj)
            decision = evaluate(parse_review(body), config=config)
            if decision.estimate is None:
                continue
            if key not in found or len(body) > len(found[key][1]):
                found[key] = (str(path.relative_to(FIXTURES)), body)
    return found


def run(log: Callable[[str], None] = print, quick: bool = False) -> list[Row]:
    """The kinds rows. `quick`: a few calls (a smoke, not a measurement)."""
    counts = {"calls": 10, "batches": 2, "warmup": 5} if quick else {}
    config = load_config()
    service = AdmissionService(config)
    samples = largest_samples()
    missing = set(config.policy.kinds) - set(samples)
    if {("kubeflow.org", "PyTorchJob"), ("apps", "Deployment")} & missing:
        raise RuntimeError(f"no GPU sample priced for {sorted(missing)}")
    gc.collect()
    gc.freeze()  # as the server does after start-up
    rows = []
    for (group, kind), (where, body) in sorted(samples.items()):
        answer = service.handle(body, "validate")
        if answer.status != 200 or answer.decision is None or answer.decision.estimate is None:
            raise RuntimeError(f"{where}: {kind} was not priced")
        log(f"kinds: {kind} ...")
        median, p99 = _time(lambda body=body: service.handle(body, "validate"), **counts)
        rows.append(
            Row(
                section="kinds",
                measurement=f"{group or 'core'}/{kind}, largest sample: handle(body)",
                result=f"median {median:,.0f} µs, p99 {p99:,.0f} µs ({len(body):,} bytes)",
                target=f"< {TARGET_US:,.0f} µs",
                met=median < TARGET_US,
                data={"median_us": round(median, 1), "p99_us": round(p99, 1), "file": where},
            )
        )
    return rows


if __name__ == "__main__":
    print(render(run(lambda line: print(line, file=sys.stderr), quick="--quick" in sys.argv)))
