"""schemathesis over the whole OpenAPI of a running ``deepmia serve``, with and without a token: no 5xx, no
response that violates the schema.

The job event stream is left out: it stays open while its job is queued (this server runs no jobs, so fuzzed jobs
do not load the machine); test_api.py follows it to the end of a job.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory, hcrop):
    """A server that queues jobs but runs none (fuzzed jobs must not load the machine), with one series."""
    srv = Server(tmp_path_factory.mktemp("fuzz"), workers=0).start()
    srv.tokens = {"admin": srv.add_user("admin", "admin")}
    files = [("files", (p.name, p.read_bytes(), "application/dicom")) for p in sorted(hcrop.iterdir())]
    with srv.client(srv.tokens["admin"]) as c:
        assert c.post("/api/uploads", files=files).status_code == 200
    yield srv
    srv.stop()


@pytest.mark.parametrize("auth", ["admin token", "no token"])
def test_no_server_error_and_no_schema_violation(fuzz_server, auth):
    server = fuzz_server
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or "schemathesis"
    headers = ["-H", f"Authorization: Bearer {server.tokens['admin']}"] if auth == "admin token" else []
    run = subprocess.run(
        [exe, "run", f"{server.url}/openapi.json", "--checks", "not_a_server_error,response_schema_conformance",
         "--max-examples", "5", "--seed", "1", "--phases", "examples,coverage,fuzzing", "--workers", "1",
         "--request-timeout", "60", "--exclude-path", "/api/jobs/{job_id}/events", *headers],
        capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
