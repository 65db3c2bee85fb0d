"""What the job kinds read: a stored series of one DICOM file without patient geometry is read alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepmia.errors import DeepmiaError
from deepmia.jobs.kinds import media_type_of, read_files

SAMPLES = Path(__file__).resolve().parents[2] / "deepmia" / "samples"


def test_one_dicom_file_without_geometry_is_read_alone():
    us = SAMPLES / "dicom" / "files" / "US1_J2KR.dcm"
    from deepmia.io.dicom import read_series

    with pytest.raises(DeepmiaError, match="geometry"):
        read_series([us])  # what the series endpoint and quality jobs used to do
    image = read_files([us], dicom=True)
    assert image.array.size > 0


def test_media_types():
    assert media_type_of("a/b.nii.gz") == "application/gzip"
    assert media_type_of("x.json") == "application/json"
    assert media_type_of("x.bin") == "application/octet-stream"
