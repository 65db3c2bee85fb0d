"""The fast header values of the series reader agree with pydicom's own conversion."""

from __future__ import annotations

import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from deepmia.io.dicom._header import _ELEMENTS, _plain, header_values


def _reference(ds: Dataset) -> dict:
    return {k: (_plain(ds[t].value) if t in ds else None) for k, (t, _) in _ELEMENTS.items()}


def test_header_values_match_pydicom_on_real_files(shared_data: Path) -> None:
    files = sorted(p for p in (shared_data / "dicom").rglob("*") if p.is_file())
    checked = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for p in files:
            try:
                fast = header_values(pydicom.dcmread(p, stop_before_pixels=True))
                ref = _reference(pydicom.dcmread(p, stop_before_pixels=True))
            except Exception:  # not DICOM, or damaged on purpose: pydicom's behaviour is tested elsewhere
                continue
            assert fast == ref, p
            checked += 1
    if checked == 0:
        pytest.skip("no DICOM files in the shared data")


def _raw(tag: int, vr: str | None, value: bytes, *, little: bool = True) -> RawDataElement:
    return RawDataElement(Tag(tag), vr, len(value), value, 0, vr is None, little)


@pytest.mark.parametrize(
    ("tag", "vr", "value", "little"),
    [
        (0x00200013, "IS", b"1.0 ", True),  # a decimal in an IS: pydicom's conversion decides
        (0x00280010, "US", b"\x00\x02", False),  # big endian
        (0x00281053, "UN", b"2.5 ", True),  # VR not the dictionary's
        (0x00200032, None, b"-1.5\\2\\3e1", True),  # implicit VR
        (0x00080008, "CS", b"ORIGINAL\\PRIMARY\\\\M ", True),  # an empty component
        (0x00280030, "DS", b"", True),  # empty
    ],
)
def test_unusual_elements_fall_back_to_pydicom(tag: int, vr: str | None, value: bytes, little: bool) -> None:
    def build() -> Dataset:
        ds = Dataset()
        ds._dict[Tag(tag)] = _raw(tag, vr, value, little=little)
        return ds

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert header_values(build()) == _reference(build())
