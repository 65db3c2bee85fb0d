"""Service under load: 20 concurrent clients, 200 quality jobs + 20 predictions + browsing; every job done exactly once.

Starts `deepmia serve` (SQLite, --workers N) on a free port, uploads the mr_study, then 20 client threads each
submit their share of the jobs and browse (worklist pages, job status) until their jobs end. Reports p50/p95 of the
worklist and job-status requests under that load, and checks in the database that every job is done, ran once
(attempts = 1) and has exactly one set of outputs.

Usage: python benchmarks/service_load.py [--data ../shared/data] [--clients 20] [--quality 200] [--predictions 20]
       [--workers 2]
Writes benchmarks/results/service_load.json and service_load.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path, *, workers: int, db: str | None = None) -> tuple[subprocess.Popen, str, str]:
    """Start `deepmia serve` under ``root``; returns the process, its URL and an admin token."""
    from deepmia.data.catalog import open_catalog
    from deepmia.service.accounts import add_user

    db = db or str(root / "catalog.sqlite")
    with open_catalog(db) as catalog:
        token = add_user(catalog, "bench", "admin")
    port = free_port()
    log = open(root / "server.log", "w")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen([sys.executable, "-c", "from deepmia.cli.main import entry; entry()", "serve", "--db", db,
                             "--data", str(root / "data"), "--port", str(port), "--workers", str(workers)],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(url + "/api/me", timeout=2).status_code == 401:
                return proc, url, token
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError((root / "server.log").read_text())


def upload_study(url: str, token: str, folder: Path, tmp: Path) -> dict:
    archive = tmp / "study.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(folder).as_posix())
    with open(archive, "rb") as f:
        r = httpx.post(url + "/api/uploads", files={"files": ("study.zip", f)},
                       headers={"Authorization": f"Bearer {token}"}, timeout=600)
    r.raise_for_status()
    return r.json()


def client(url: str, token: str, jobs: list[dict], latencies: dict[str, list[float]], lock: threading.Lock,
           ids: list[int]) -> None:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=600) as c:
        mine = []
        for body in jobs:
            r = c.post("/api/jobs", json=body)
            r.raise_for_status()
            mine.append(r.json()["id"])
        with lock:
            ids += mine
        pending, page = set(mine), 0
        while pending:
            t = time.perf_counter()
            c.get("/api/studies", params={"page": 1 + page % 2, "size": 2, "sort": "-date"}).raise_for_status()
            worklist = time.perf_counter() - t
            page += 1
            statuses = []
            for job_id in list(pending):
                t = time.perf_counter()
                job = c.get(f"/api/jobs/{job_id}").json()
                statuses.append(time.perf_counter() - t)
                if job["state"] in ("done", "failed", "cancelled"):
                    pending.discard(job_id)
            with lock:
                latencies["worklist"].append(worklist)
                latencies["job_status"] += statuses
            time.sleep(0.5)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--quality", type=int, default=200)
    parser.add_argument("--predictions", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        proc, url, token = start_server(tmp, workers=args.workers)
        try:
            upload = upload_study(url, token, args.data / "dicom" / "mr_study", tmp)
            hippo = next(s["id"] for s in upload["series"] if s["description"] == "HippoCrop")
            bodies = ([{"kind": "quality", "series_id": hippo}] * args.quality
                      + [{"kind": "predict", "model": "hippocampus", "series_id": hippo}] * args.predictions)
            shares = [bodies[i::args.clients] for i in range(args.clients)]
            latencies: dict[str, list[float]] = {"worklist": [], "job_status": []}
            ids: list[int] = []
            lock = threading.Lock()
            start = time.perf_counter()
            threads = [threading.Thread(target=client, args=(url, token, share, latencies, lock, ids))
                       for share in shares]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - start
        finally:
            proc.terminate()
            proc.wait(30)
        check = exactly_once(str(tmp / "catalog.sqlite"), ids)
    result = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
        "clients": args.clients, "quality_jobs": args.quality, "predictions": args.predictions,
        "workers": args.workers, "wall_s": round(wall, 1), **check,
        "latency_ms": {k: {"n": len(v), "p50": round(1000 * statistics.median(v), 1),
                           "p95": round(1000 * percentile(v, 0.95), 1)} for k, v in latencies.items()},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "service_load.json").write_text(json.dumps(result, indent=1) + "\n")
    lat = result["latency_ms"]
    (RESULTS / "service_load.md").write_text(
        f"`deepmia serve` (SQLite, {args.workers} worker processes) on localhost, {result['machine']}: "
        f"{args.clients} concurrent clients submitted {args.quality} quality jobs and {args.predictions} hippocampus "
        f"predictions on the mr_study HippoCrop series and browsed while they ran ({result['wall_s']} s).\n\n"
        f"Jobs: {result['jobs']} submitted, {result['done']} done, {result['ran_once']} ran exactly once "
        f"(attempts = 1), {result['one_output_set']} with exactly one set of outputs; lost: {result['lost']}.\n\n"
        "| request under load | n | p50 (ms) | p95 (ms) |\n|---|---:|---:|---:|\n"
        f"| worklist `GET /api/studies` | {lat['worklist']['n']} | {lat['worklist']['p50']} | "
        f"{lat['worklist']['p95']} |\n"
        f"| job status `GET /api/jobs/{{id}}` | {lat['job_status']['n']} | {lat['job_status']['p50']} | "
        f"{lat['job_status']['p95']} |\n")
    print(json.dumps(result, indent=1))


def exactly_once(db: str, ids: list[int]) -> dict[str, int]:
    """Count the jobs done, run once, and with one output set (quality: 1 file; predict: one label map)."""
    from sqlalchemy import func, select

    from deepmia.data.catalog import open_catalog
    from deepmia.data.catalog.models import Job, JobOutput

    with open_catalog(db) as catalog, catalog.session() as s:
        rows = s.execute(select(Job.id, Job.kind, Job.status, Job.attempts).where(Job.id.in_(ids))).all()
        outputs = dict(s.execute(select(JobOutput.job_id, func.count(JobOutput.id))
                                 .where(JobOutput.kind.in_(["label_map", "other"]), JobOutput.name != "run.json",
                                        JobOutput.name != "measurements.csv")
                                 .group_by(JobOutput.job_id)).all())
    return {"jobs": len(ids), "done": sum(r.status == "done" for r in rows),
            "ran_once": sum(r.attempts == 1 for r in rows),
            "one_output_set": sum(outputs.get(r.id) == 1 for r in rows),
            "lost": len(set(ids) - {r.id for r in rows})}


if __name__ == "__main__":
    main()
