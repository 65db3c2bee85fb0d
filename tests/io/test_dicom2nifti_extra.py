"""The two dicom2nifti series of ../shared/data/dicom/dicom2nifti_extra, against their reference volumes.

* ``philips/fmri/001``: 2 slice positions x 4 time points; must match dicom2nifti's 80x80x2x4 exactly.
* ``philips_enhanced/dti/001``: enhanced multi-frame DTI (32 frames = 8 slices x 4 volumes). The reference
  NIfTI is degenerate, so our volume is checked against the DICOM frames themselves (per-frame Pixel Value
  Transformation, frames ordered by DimensionIndexValues) and against the reference's bval/bvec order; see
  :func:`test_dti_reference_volume_is_degenerate` for the evidence.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from deepmia.errors import GeometryError
from deepmia.io import read_image
from deepmia.io.nifti import read as read_nifti

EXTRA = "dicom/dicom2nifti_extra"
FMRI = f"{EXTRA}/philips/fmri/001"
DTI = f"{EXTRA}/philips_enhanced/dti/001"


def _on_grid(image, ref):
    """``image``'s voxels re-indexed onto ``ref``'s grid (the two differ by axis flips/permutations only)."""
    t = np.linalg.inv(ref.affine) @ image.affine
    r = np.round(t[:3, :3])
    assert np.allclose(t[:3, :3], r, atol=1e-3), f"grids differ by more than axis order/flips: {t[:3, :3]}"
    idx = np.indices(image.spatial_shape).reshape(3, -1)
    ref_idx = np.round(r @ idx + t[:3, 3:4]).astype(int)
    out = np.zeros((image.num_channels, *ref.spatial_shape), dtype=image.dtype)
    out[:, ref_idx[0], ref_idx[1], ref_idx[2]] = image.array.reshape(image.num_channels, -1)
    return out


def test_two_positions_times_four_time_points_match_the_reference(shared_data):
    image = read_image(shared_data / FMRI)
    ref = read_nifti(shared_data / f"{FMRI}_ground_truth.nii.gz")
    assert (image.num_channels, *image.spatial_shape) == (4, 80, 80, 2)
    assert ref.num_channels == 4 and ref.spatial_shape == (80, 80, 2)
    np.testing.assert_allclose(image.affine, ref.affine, atol=1e-4)
    np.testing.assert_array_equal(_on_grid(image, ref), ref.array)
    assert np.issubdtype(image.dtype, np.integer)
    assert np.diff(image.meta["slice_positions"]) == pytest.approx([3.3], abs=0.01)


def test_two_positions_without_repeats_are_still_refused(shared_data, tmp_path):
    # One time point of the fMRI series: 2 images at 2 positions, as dicom2nifti's failing/slicecount case.
    folder = tmp_path / "two"
    folder.mkdir()
    for p in sorted((shared_data / FMRI).iterdir()):
        if p.name.endswith("-0050-0001.dcm") or p.name.endswith("-0250-0001.dcm"):
            (folder / p.name).write_bytes(p.read_bytes())
    with pytest.raises(GeometryError, match="too few"):
        read_image(folder)


def _dti_frames(path: Path) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """The DTI frames as modality values (own per-frame rescale) and their DimensionIndexValues."""
    ds = pydicom.dcmread(path)
    values, dims = [], []
    for f, group in enumerate(ds.PerFrameFunctionalGroupsSequence):
        pvt = group.PixelValueTransformationSequence[0]
        values.append(ds.pixel_array[f] * float(pvt.RescaleSlope) + float(pvt.RescaleIntercept))
        dims.append(tuple(int(v) for v in group.FrameContentSequence[0].DimensionIndexValues))
    return np.stack(values), dims


def test_dti_frames_follow_the_dimension_index_and_the_reference_bval_bvec(shared_data):
    image = read_image(shared_data / DTI)
    ref = read_nifti(shared_data / f"{DTI}_ground_truth.nii.gz")
    assert (image.num_channels, *image.spatial_shape) == (4, 128, 128, 8)
    np.testing.assert_allclose(image.affine, ref.affine, atol=1e-4)
    frames, dims = _dti_frames(next((shared_data / DTI).iterdir()))
    # DimensionIndexValues are (stack, in-stack position, b-value index, gradient index); at each position the
    # volumes are ordered by the full index, so the b=0 frame (index [1, k, 1, 65]) comes first.
    for c in range(4):
        for k in range(8):
            f = sorted((d, i) for i, d in enumerate(dims) if d[1] == k + 1)[c][1]
            np.testing.assert_allclose(image.array[c, :, :, k], frames[f].T, rtol=1e-6)
    bval = np.loadtxt(shared_data / f"{DTI}_ground_truth.bval")
    bvec = np.loadtxt(shared_data / f"{DTI}_ground_truth.bvec")
    np.testing.assert_allclose(image.meta["diffusion_bvalues"], bval)
    np.testing.assert_allclose(np.array(image.meta["diffusion_directions_lps"]).T, bvec, atol=1e-6)


def test_dti_reference_volume_is_degenerate(shared_data):
    """Evidence that dicom2nifti's expected DTI NIfTI is wrong, so we do not match its voxels.

    Its bval says volume 0 is b=0 and volumes 1-3 are b=1300, but its volume 0 holds the frames of the third
    gradient direction (DimensionIndexValues [1, k, 2, 3], b=1300, direction (-0.026, -0.649, 0.760)) and its
    volumes 1-3 are all zero, while every DICOM frame holds data (max 254 stored). dcm2niix 1.0.20220720
    (``dcm2niix -p n``) reads all four volumes with data, each equal to one of ours (in the order
    dir1, dir2, dir3, b0 with bval 1300 1300 1300 0); ours follow the dimension index and equal the reference's
    bval/bvec order (b0 first).
    """
    image = read_image(shared_data / DTI)
    ref = read_nifti(shared_data / f"{DTI}_ground_truth.nii.gz")
    on_ref = _on_grid(image, ref)
    assert all(np.all(ref.array[c] == 0) for c in (1, 2, 3))
    np.testing.assert_allclose(ref.array[0], on_ref[3], rtol=1e-6)  # the third direction, labelled b=0
    assert image.meta["diffusion_bvalues"][3] == 1300.0 and image.meta["diffusion_bvalues"][0] == 0.0
    frames, _ = _dti_frames(next((shared_data / DTI).iterdir()))
    assert all(frames[f].max() > 0 for f in range(len(frames)))
    assert all(image.array[c].max() > 0 for c in range(4))
