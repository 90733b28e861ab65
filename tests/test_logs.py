"""Structured logs: one JSON object per line, extra fields kept, tracebacks in a field."""

from __future__ import annotations

import json
import logging

import pytest

from webhook.logs import configure


def test_log_lines_are_json_with_their_extra_fields(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure("info")
        log = logging.getLogger("costgate.test")
        log.info("decided", extra={"request_id": "abc123", "namespace": "demo"})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed", extra={"request_id": "def456"})
        log.debug("not shown")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["message"] for line in lines] == ["decided", "failed"]
    assert lines[0]["request_id"] == "abc123" and lines[0]["namespace"] == "demo"
    assert lines[0]["level"] == "info" and lines[0]["logger"] == "costgate.test"
    assert "ValueError: boom" in lines[1]["exception"]
