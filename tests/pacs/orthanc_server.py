"""A throwaway Orthanc for tests and benchmarks, started the way its users do: ``Orthanc config.json``.

The config (written next to its storage) puts Orthanc on two free private ports (DICOM and HTTP), with the
DICOMweb plugin, no authentication on localhost, and the given modalities (name -> (AE title, port) on
127.0.0.1) allowed to store, find, get and move.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Orthanc:
    """One Orthanc server: its config.json in ``root``, storage in ``root/storage``; start() and stop()."""

    def __init__(self, root: Path, *, modalities: dict[str, tuple[str, int]], aet: str = "ORTHANC") -> None:
        self.root, self.aet = root, aet
        self.dicom_port, self.http_port = free_port(), free_port()
        self.process: subprocess.Popen | None = None
        config = {
            "Name": "deepmia-test", "DicomAet": aet, "DicomPort": self.dicom_port, "HttpPort": self.http_port,
            "StorageDirectory": str(root / "storage"), "IndexDirectory": str(root / "storage"),
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "HttpsCACertificates": "",
            "DicomCheckCalledAet": True, "DicomAlwaysAllowStore": True,
            "DicomModalities": {name: {"AET": ae, "Host": "127.0.0.1", "Port": port, "AllowGet": True,
                                       "AllowMove": True, "AllowFind": True, "AllowStore": True}
                                for name, (ae, port) in modalities.items()},
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
            "SaveJobs": False, "StableAge": 1,
        }
        root.mkdir(parents=True, exist_ok=True)
        self.config = root / "config.json"
        self.config.write_text(json.dumps(config, indent=1))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def address(self) -> str:
        return f"{self.aet}@127.0.0.1:{self.dicom_port}"

    def start(self, timeout: float = 30.0) -> Orthanc:
        import requests

        log = open(self.root / "orthanc.log", "ab")  # noqa: SIM115 -- closed with the process
        self.process = subprocess.Popen([ORTHANC, str(self.config)], cwd=self.root, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited ({self.process.returncode}); see {self.root / 'orthanc.log'}")
            try:
                if requests.get(f"{self.url}/system", timeout=1).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer on {self.url}/system within {timeout} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def get(self, path: str):
        import requests

        r = requests.get(f"{self.url}{path}", timeout=30)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body):
        import requests

        r = requests.post(f"{self.url}{path}", data=json.dumps(body), timeout=120)
        r.raise_for_status()
        return r.json()
