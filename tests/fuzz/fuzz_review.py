"""atheris (libFuzzer for Python) harness: bytes into `AdmissionService.handle`, both endpoints.

Each input is sent as the whole body, and, when it parses as JSON, also as the `object` of a
captured review (so that libFuzzer's byte mutations reach the extractors, not only the JSON
parser). Every answer must hold tests/support/invariants.py, and no input may become an
internal-error answer. A failure is an uncaught exception: atheris prints it, writes the
input to `crash-<sha1>` and exits non-zero.

The webhook package is instrumented for coverage, so libFuzzer keeps the inputs that reach
new code. CI runs it briefly (tests/test_hostile.py::test_the_atheris_harness_runs_clean).
To run it longer by hand, with a corpus that persists and grows between runs:

    mkdir -p .fuzz-corpus
    .venv/bin/python tests/fuzz/fuzz_review.py -max_total_time=3600 -jobs=4 \\
        -dict=tests/fuzz/review.dict .fuzz-corpus tests/fixtures/admission

(the first directory collects new inputs, the others only seed it), and replay a crash with
`.venv/bin/python tests/fuzz/fuzz_review.py crash-<sha1>`. Other libFuzzer flags: -runs=N,
-seed=N, -max_len=N (default 16384 bytes here: room for the largest captured review).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import atheris
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

with atheris.instrument_imports(include=["webhook"]):
    from webhook.core.engine import Config
    from webhook.service import AdmissionService
    from webhook.tables import load_config, parse_policy

from tests.support.invariants import check_answer  # noqa: E402 (after instrumenting webhook)


def _services() -> list[AdmissionService]:
    """The bundled defaults, and warn mode, where what enforce denies reaches the patch."""
    base = load_config()
    policy = yaml.safe_load((ROOT / "webhook/defaults/policy.yaml").read_text())
    policy.update(mode="warn", unresolved_templates="warn")
    warn = Config(table=base.table, policy=parse_policy(policy), parse_text=base.parse_text)
    return [AdmissionService(base), AdmissionService(warn)]


SERVICES = _services()
ENDPOINTS = ("mutate", "validate")
# the object of this review is replaced by each input that parses as JSON
_HOST = json.loads((ROOT / "tests/fixtures/admission/validate-pod-create-gpu.json").read_bytes())


def _as_object(data: bytes) -> bytes | None:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return None
    _HOST["request"]["object"] = value
    try:
        return json.dumps(_HOST).encode("utf-8", "surrogatepass")
    except (ValueError, RecursionError):  # nested too deep for json.dumps itself
        return None


def check(body: bytes) -> None:
    for service in SERVICES:
        for endpoint in ENDPOINTS:
            answer = service.handle(body, endpoint)
            assert answer.outcome != "error", "an input became an internal error"
            check_answer(answer.status, answer.body, body, endpoint)


def test_one_input(data: bytes) -> None:
    check(data)
    wrapped = _as_object(data)
    if wrapped is not None:
        check(wrapped)


def main() -> None:
    args = list(sys.argv)
    if not any(a.startswith("-max_len=") for a in args):
        args.insert(1, "-max_len=16384")
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
