"""A small client of a running deepmia service: what ``deepmia predict --server URL --token T`` uses.

It uploads the input (a file, or a folder sent as one zip), submits one predict job per stored series, follows
the jobs, and downloads their outputs into the output folder: the same jobs a browser sees.
"""

from __future__ import annotations

import os
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deepmia.errors import DeepmiaError, InvalidArgumentError, WriteError

__all__ = ["ServiceError", "predict_remote"]


class ServiceError(DeepmiaError):
    """The service refused a request or a job failed."""


def _check(response: Any, what: str) -> Any:
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text[:300]
        raise ServiceError(f"{what}: HTTP {response.status_code}: {detail}",
                           fix="check --server and --token (deepmia user add prints a token)"
                           if response.status_code in (401, 403) else None)
    return response.json()


def _upload(client: Any, src: Path) -> dict[str, Any]:
    if src.is_file():
        with open(src, "rb") as f:
            return _check(client.post("/api/uploads", files={"files": (src.name, f)}), f"upload {src}")
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "upload.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
            for p in sorted(src.rglob("*")):
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(src).parts):
                    z.write(p, p.relative_to(src).as_posix())
        with open(archive, "rb") as f:
            return _check(client.post("/api/uploads", files={"files": ("upload.zip", f, "application/zip")}),
                          f"upload {src}")


def predict_remote(model: str, src: Path, dst: Path, *, server: str, token: str, tta: bool = True,
                   poll_s: float = 1.0, timeout_s: float = 24 * 3600,
                   say: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Predict ``src`` with the service's model ``model``; outputs land in ``dst`` (a folder per series if many).

    Args:
        model: A model name the service lists (``GET /api/models``); a path counts by its folder name.
        src: An image file or a folder (DICOM series or images).
        dst: Output folder.
        server: The service's base URL.
        token: An API token (annotator or admin).
        tta: Test-time augmentation.
        poll_s: Seconds between status requests.
        timeout_s: Give up after this long.
        say: Where progress lines go.

    Returns:
        The finished jobs.

    Raises:
        ServiceError: The service refused the upload or a job, or a job failed.
    """
    import httpx

    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise InvalidArgumentError("no such file or folder", path=src)
    name = Path(model).name
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.rstrip("/"), headers=headers, timeout=600) as client:
        uploaded = _upload(client, src)
        series = uploaded["series"]
        if not series:
            raise ServiceError(f"the service stored no series from {src}: {'; '.join(uploaded.get('skipped', []))}")
        jobs = [_check(client.post("/api/jobs", json={"kind": "predict", "model": name, "series_id": s["id"],
                                                      "options": {"tta": tta}}), "submit") for s in series]
        say(f"submitted {len(jobs)} job(s) to {server}: {', '.join(str(j['id']) for j in jobs)}")
        deadline = time.monotonic() + timeout_s
        done = []
        for job in jobs:
            while job["state"] not in ("done", "failed", "cancelled"):
                if time.monotonic() > deadline:
                    raise ServiceError(f"job {job['id']} did not finish in {timeout_s:.0f} s")
                time.sleep(poll_s)
                job = _check(client.get(f"/api/jobs/{job['id']}"), "job status")
            if job["state"] != "done":
                raise ServiceError(f"job {job['id']} {job['state']}: {job.get('error')}")
            folder = dst if len(jobs) == 1 else dst / f"series_{job['series_id']}"
            _download(client, job, folder)
            done.append(job)
    return done


def _download(client: Any, job: dict[str, Any], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for out in job["outputs"]:
        base = Path(str(out["name"])).name  # a bare file name: never a path from the server
        target = folder / (base if base and not base.startswith(".") else f"output_{int(out['id'])}")
        with client.stream("GET", f"/api/outputs/{out['id']}") as r:
            if r.status_code >= 400:
                raise ServiceError(f"download of output {out['id']}: HTTP {r.status_code}")
            partial = target.with_name(target.name + ".part")
            try:
                with open(partial, "wb") as f:
                    for chunk in r.iter_bytes():
                        f.write(chunk)
                os.replace(partial, target)
            except OSError as exc:
                raise WriteError(f"cannot write {target}: {exc}", path=target) from exc
