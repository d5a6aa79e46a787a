"""Fuzzing `lmforge serve` with schemathesis against its own OpenAPI document: no 5xx, and every
response has a documented status, content type and schema. Deterministic generation, a bounded
number of examples per operation (it found a NaN from top_p=5e-324 and a 500 from an empty
`messages` list before they were fixed)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from _serve_support import KEY, TEXT, Server, char_tokenizer, train_run
from lmforge_testing import require

EXAMPLES = 15  # per operation; the issue allows up to 100 within 3 minutes


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_schema_violation(tmp_path):
    require(importlib.util.find_spec("schemathesis") is not None, "schemathesis not installed")
    cli = Path(sys.executable).with_name("schemathesis")
    require(cli.is_file(), f"{cli} not found")
    run = train_run(tmp_path / "gpt", "gpt", char_tokenizer(), TEXT, steps=20)
    server = Server(run, f"api_key={KEY}", "model_name=m")
    try:
        checks = "not_a_server_error,response_schema_conformance,status_code_conformance"
        cmd = [
            str(cli),
            "run",
            server.url + "/openapi.json",
            "-c",
            checks + ",content_type_conformance",
        ]
        cmd += ["-n", str(EXAMPLES), "--generation-deterministic", "--request-timeout", "20"]
        cmd += ["-H", f"Authorization: Bearer {KEY}", "--no-color"]
        # In tmp_path: schemathesis keeps its example database in ./.schemathesis.
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    finally:
        assert server.stop() == 0
    assert out.returncode == 0, out.stdout[-4000:] + "".join(server.log)[-4000:]
    assert "Traceback" not in "".join(server.log)
