"""Where the repository and the test fixtures are."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
FIXTURES = TESTS / "fixtures"
ADMISSION = FIXTURES / "admission"
ADMISSION_KINDS = FIXTURES / "admission-kinds"  # workload controllers, scale, ML operators
ML_OPERATORS = FIXTURES / "ml-operators"  # the operators' upstream example manifests
