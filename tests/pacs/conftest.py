"""A real Orthanc for the PACS tests, started the way its users do (``Orthanc config.json``) on private ports.

Skipped when Orthanc is not installed, except in CI (``CI`` set), where .ci/run installs it and its absence fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from orthanc_server import DICOMWEB_PLUGIN, ORTHANC, Orthanc, free_port

HIPPO_SERIES = ("dicom", "mr_study", "Study3", "11_HCropVolume")


def pytest_configure(config):
    config.addinivalue_line("markers", "orthanc: needs Orthanc (/usr/sbin/Orthanc); skipped when absent outside CI")


def _require_orthanc() -> None:
    missing = [str(p) for p in (Path(ORTHANC), DICOMWEB_PLUGIN) if not p.exists()]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{', '.join(missing)} missing in CI (.ci/run installs orthanc and orthanc-dicomweb)")
        pytest.skip(f"Orthanc not installed ({', '.join(missing)} missing)")


@pytest.fixture(scope="module")
def deepmia_port() -> int:
    """The port the module's deepmia node listens on (Orthanc knows it as modality ``deepmia``)."""
    return free_port()


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory, deepmia_port):
    """A running Orthanc that knows deepmia (AE DEEPMIA on ``deepmia_port``) as modality ``deepmia``."""
    _require_orthanc()
    server = Orthanc(tmp_path_factory.mktemp("orthanc"), modalities={"deepmia": ("DEEPMIA", deepmia_port)})
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def hippo_series(shared_data) -> Path:
    """The small hippocampus-crop series of mr_study (40 MR instances)."""
    return shared_data.joinpath(*HIPPO_SERIES)
