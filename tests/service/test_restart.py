"""kill -9 of the server while jobs run: after a restart every job finishes exactly once, none is lost."""

from __future__ import annotations

import os
import time

import pytest
from sqlalchemy import func, select

from deepmia.data.catalog import open_catalog
from deepmia.data.catalog.models import Job, JobOutput

from .conftest import Server, wait_job

pytestmark = pytest.mark.slow


def _worker_pids(server_pid: int) -> list[int]:
    """The live processes whose parent is the server (its job workers)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == server_pid:
                        pids.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return pids


def test_jobs_survive_a_killed_server_and_finish_exactly_once(hcrop, tmp_path, make_database):
    # SQLite only, to keep the suite short: the queue's guarded updates are tested on PostgreSQL in test_queue.py
    server = Server(tmp_path / "srv", make_database("sqlite"), workers=2).start()
    try:
        token = server.add_user("ann", "annotator")
        files = [("files", (p.name, p.read_bytes(), "application/dicom")) for p in sorted(hcrop.iterdir())]
        with server.client(token) as c:
            series_id = c.post("/api/uploads", files=files).json()["series"][0]["id"]
            # the first two are slower (N4 bias measure): the kill comes while they run
            ids = [c.post("/api/jobs", json={"kind": "quality", "series_id": series_id, "options": {"bias": i < 2}})
                   .json()["id"] for i in range(10)]
            deadline = time.monotonic() + 120
            while not any(c.get(f"/api/jobs/{i}").json()["state"] == "running" for i in ids):
                assert time.monotonic() < deadline, "no job started"
                time.sleep(0.2)
        workers = _worker_pids(server.proc.pid)
        server.kill()
        time.sleep(1.0)
        assert not [p for p in workers if os.path.exists(f"/proc/{p}") and
                    open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"], "workers outlived the server"
        server.start()
        with server.client(token) as c:
            jobs = [wait_job(c, i, timeout=300) for i in ids]
            assert [j["state"] for j in jobs] == ["done"] * 10
            for job in jobs:
                assert [o["name"] for o in job["outputs"]] == ["quality.json"]
                assert c.get(f"/api/outputs/{job['outputs'][0]['id']}").json()["status"] in ("pass", "warn", "fail")
        with open_catalog(server.db) as catalog, catalog.session() as s:
            attempts = dict(s.execute(select(Job.id, Job.attempts).where(Job.id.in_(ids))).all())
            query = select(JobOutput.job_id, func.count(JobOutput.id)).group_by(JobOutput.job_id)
            outputs = dict(s.execute(query).all())
        assert all(1 <= attempts[i] <= 2 for i in ids) and any(attempts[i] == 2 for i in ids)
        assert all(outputs[i] == 1 for i in ids)
    finally:
        server.stop()
