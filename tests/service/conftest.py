"""Fixtures of the service tests: ``deepmia serve`` as a subprocess, with helpers to talk to it."""

from __future__ import annotations

import pytest


def free_port() -> int:
    """A TCP port free on localhost now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``deepmia serve`` as a subprocess on a free port, with helpers to make users and talk to it.

    Args:
        root: Folder for the data (and the SQLite catalog when ``db`` is None).
        db: Catalog URL; a SQLite file in ``root`` by default.
        workers: Job worker processes.
        options: More ``deepmia serve`` options.
    """

    def __init__(self, root, db: str | None = None, *, workers: int = 1, options: tuple[str, ...] = ()) -> None:
        from pathlib import Path

        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.db = db or str(self.root / "catalog.sqlite")
        self.data = self.root / "data"
        self.workers, self.options = workers, options
        self.proc = None
        self.port = 0

    @property
    def url(self) -> str:
        """Base URL of the running server."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> Server:
        """Start the server and wait until it answers."""
        import subprocess
        import sys
        import time

        import httpx

        self.port = free_port()
        self.log = open(self.root / f"server-{self.port}.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from deepmia.cli.main import entry; entry()", "serve", "--db", self.db,
             "--data", str(self.data), "--port", str(self.port), "--workers", str(self.workers), *self.options],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server ended: {(self.root / f'server-{self.port}.log').read_text()}")
            try:
                if httpx.get(self.url + "/api/me", timeout=2).status_code == 401:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError("server did not answer in time")

    def kill(self) -> None:
        """``kill -9`` the server process (its workers die with it)."""
        import signal

        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.log.close()

    def stop(self) -> None:
        """Stop the server."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except Exception:
                self.proc.kill()
                self.proc.wait(10)
            self.log.close()

    def add_user(self, name: str, role: str) -> str:
        """Add a user to the server's catalog; returns its token."""
        from deepmia.data.catalog import open_catalog
        from deepmia.service.accounts import add_user

        with open_catalog(self.db) as catalog:
            return add_user(catalog, name, role)

    def client(self, token: str | None = None):
        """An httpx client of the server, with a bearer token when given."""
        import httpx

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)


def wait_job(client, job_id: int, timeout: float = 300.0) -> dict:
    """Poll a job until it ends; returns it."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not end in {timeout} s: {job}")


def zip_folder(folder, dst):
    """A zip of a folder's files (relative names)."""
    import zipfile

    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(folder).as_posix())
    return dst


@pytest.fixture(scope="session")
def hcrop(shared_data):
    """The mr_study's hippocampus-crop series folder."""
    return shared_data / "dicom" / "mr_study" / "Study3" / "11_HCropVolume"


@pytest.fixture(scope="session")
def server(tmp_path_factory, shared_data):
    """A SQLite-backed ``deepmia serve`` with the mr_study uploaded; its admin, annotator and viewer tokens."""
    srv = Server(tmp_path_factory.mktemp("service"), workers=1, options=("--max-upload-mb", "24")).start()
    srv.tokens = {r: srv.add_user(r, r) for r in ("admin", "annotator", "viewer")}
    archive = zip_folder(shared_data / "dicom" / "mr_study", srv.root / "mr_study.zip")
    with srv.client(srv.tokens["annotator"]) as c, open(archive, "rb") as f:
        r = c.post("/api/uploads", files={"files": ("mr_study.zip", f, "application/zip")})
    assert r.status_code == 200, r.text
    srv.upload = r.json()
    yield srv
    srv.stop()
