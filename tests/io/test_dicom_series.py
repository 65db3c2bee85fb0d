"""DICOM series reading against dicom2nifti's ground truth, its failing cases, and SimpleITK's geometry."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from deepmia.cli.main import main as cli_main
from deepmia.errors import DeepmiaError, GeometryError, SeriesError
from deepmia.image import LPS_TO_RAS
from deepmia.io import read_image
from deepmia.io.dicom import list_series, read_series
from deepmia.io.nifti import read as read_nifti

D2N = "dicom/dicom2nifti"
GROUND_TRUTH = sorted(
    str(p.relative_to(Path(__file__).resolve().parents[3] / "shared/data" / D2N))
    for p in (Path(__file__).resolve().parents[3] / "shared/data" / D2N).rglob("*_ground_truth.nii.gz")
    if "failing" not in p.parts
) or ["(no data)"]
FAILING = ["gantrytilting/001", "notavolume/001", "slicecount/001", "sliceincrement/001", "sliceincrement/002",
           "sliceorientation/001"]


def on_reference_grid(arr: np.ndarray, affine: np.ndarray, ref_affine: np.ndarray, ref_shape) -> np.ndarray:
    """Re-index ``arr`` (C, X, Y, Z) onto a reference grid that differs by axis permutations and flips only."""
    t = np.linalg.inv(ref_affine) @ affine
    r = np.round(t[:3, :3])
    assert np.allclose(t[:3, :3], r, atol=1e-3), f"grids differ by more than axis order/flips: {t[:3, :3]}"
    idx = np.indices(arr.shape[1:]).reshape(3, -1)
    ref_idx = np.round(r @ idx + t[:3, 3:4]).astype(int)
    out = np.zeros((arr.shape[0],) + tuple(ref_shape), dtype=arr.dtype)
    out[:, ref_idx[0], ref_idx[1], ref_idx[2]] = arr.reshape(arr.shape[0], -1)
    return out


@pytest.mark.parametrize("gt", GROUND_TRUTH)
def test_matches_dicom2nifti_ground_truth(shared_data, gt):
    gt_path = shared_data / D2N / gt
    image = read_image(Path(str(gt_path).replace("_ground_truth.nii.gz", "")))
    ref = read_nifti(gt_path)
    if "siemens/fmri" in gt:
        ref = _fmri_reference(image, ref)
    ref_arr = ref.array[:3] if image.meta.get("channels") == "RGB" else ref.array  # RGBA NIfTI -> RGB
    assert image.num_channels == ref_arr.shape[0]
    assert np.prod(image.spatial_shape) == np.prod(ref.spatial_shape)
    mine = on_reference_grid(image.array, image.affine, ref.affine, ref.spatial_shape)
    # Same world grid: our voxel centres land on the reference voxel centres within 0.01 mm.
    idx = np.indices(image.spatial_shape).reshape(3, -1).T[:: max(1, int(np.prod(image.spatial_shape)) // 997)]
    world = image.voxel_to_world(idx)
    ref_idx = np.round(ref.world_to_voxel(world))
    assert np.abs(ref.voxel_to_world(ref_idx) - world).max() < 0.01
    if np.issubdtype(ref_arr.dtype, np.integer):
        np.testing.assert_array_equal(mine, ref_arr)
    else:  # rescaled values: we keep float32, the reference holds float64
        np.testing.assert_allclose(mine, ref_arr, rtol=1e-6)
    assert image.meta["modality"] and image.meta["series_uid"]
    if np.issubdtype(ref_arr.dtype, np.integer):
        assert np.issubdtype(image.dtype, np.integer), "identity rescale must keep an integer dtype"


def _fmri_reference(image, ref):
    """The Siemens mosaic ground truth, with its origin moved onto the slab the protocol prescribes.

    The mosaic has reversed slice numbering (``sSliceArray.ucImageNumbTra = 1``): ImagePositionPatient is the
    top slice and the tiles run down the normal (as dcm2niix and dicm2nii read it). dicom2nifti orders the voxels
    the same way but keeps the origin at the top, which puts its volume 49 slices above the prescribed slab
    (``sSliceArray.asSlice[0..49].sPosition``). We check our slices against the protocol positions, then compare
    with the ground truth's voxels and axes with its origin corrected.
    """
    import pydicom

    from deepmia.image import Image
    from deepmia.io.dicom.mosaic import _ascconv, _csa, _slice_pos

    ds = pydicom.dcmread(sorted(Path(image.meta["source"]).iterdir())[0], stop_before_pixels=True)
    proto = _ascconv(_csa(ds, 0x1020))
    lps = LPS_TO_RAS @ image.affine
    normal = lps[:3, 2] / np.linalg.norm(lps[:3, 2])
    centre = (np.array(image.spatial_shape) - 1) / 2
    ours = [(lps[:3, :3] @ np.array([centre[0], centre[1], k]) + lps[:3, 3]) @ normal for k in range(50)]
    prescribed = sorted((_slice_pos(proto, k) @ normal for k in range(50)), key=lambda d: -d * np.sign(normal[2]))
    np.testing.assert_allclose(sorted(ours), sorted(prescribed), atol=0.01)
    np.testing.assert_allclose(ref.affine[:3, :3], image.affine[:3, :3], atol=1e-4)
    return Image(ref.array, image.affine, meta=ref.meta)


@pytest.mark.parametrize("case", FAILING)
def test_failing_series_are_refused(shared_data, case):
    folder = shared_data / D2N / "failing" / case
    with pytest.raises(DeepmiaError) as err:
        read_image(folder)
    assert isinstance(err.value, (GeometryError, SeriesError))
    assert str(folder) in str(err.value)
    expected = {"gantrytilting": "gantry tilt", "notavolume": "not a volume", "slicecount": "too few",
                "sliceincrement": "slice spacing", "sliceorientation": "mixed slice orientations"}
    assert expected[case.split("/")[0]] in str(err.value)


@pytest.mark.parametrize("case", ["gantrytilting/001", "sliceincrement/001", "sliceincrement/002"])
def test_resample_gives_a_regular_volume(shared_data, case):
    folder = shared_data / D2N / "failing" / case
    image = read_series(folder, resample=True)
    assert "resampled" in image.meta
    d = image.direction
    assert np.allclose(d.T @ d, np.eye(3), atol=1e-6), "the resampled grid must be orthogonal"
    assert image.spatial_shape[2] >= 4 and image.dtype == np.float32
    # The first slice is not moved: it equals the first source slice.
    src = read_series(folder, resample=True).array
    assert np.allclose(image.array[..., 0], src[..., 0])


def test_resample_uneven_fills_gap_by_interpolation(shared_data):
    import pydicom

    folder = shared_data / D2N / "failing/sliceincrement/001"
    image = read_series(folder, resample=True)
    files = sorted(folder.iterdir(), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    slices = [pydicom.dcmread(p).pixel_array.T.astype(np.float32) for p in files]
    ds = pydicom.dcmread(files[0])
    slope, inter = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
    hu = [s * slope + inter for s in slices]
    assert image.spatial_shape[2] == 5 and image.spacing[2] == pytest.approx(5.0, abs=1e-3)
    np.testing.assert_allclose(image.array[0, :, :, 3], (hu[2] + hu[3]) / 2, atol=1e-3)


def test_cli_convert_refuses_gantry_tilt(shared_data, tmp_path, capsys):
    status = cli_main(["convert", str(shared_data / D2N / "failing/gantrytilting/001"), str(tmp_path / "x.nii.gz")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(err) == 1 and err[0].startswith("error: ") and "gantry tilt" in err[0]
    assert "Traceback" not in "".join(err) and not (tmp_path / "x.nii.gz").exists()


def test_cli_convert_resample(shared_data, tmp_path):
    out = tmp_path / "x.nii.gz"
    status = cli_main(["convert", str(shared_data / D2N / "failing/gantrytilting/001"), str(out), "--resample"])
    assert status == 0 and out.exists()


def test_mr_study_lists_every_series(shared_data):
    series = list_series(shared_data / "dicom/mr_study")
    folders = {p.parent for p in (shared_data / "dicom/mr_study").rglob("*.dcm")}
    assert len(series) == len(folders) == 5
    assert sum(s.num_files for s in series) == sum(1 for _ in (shared_data / "dicom/mr_study").rglob("*.dcm"))
    for s in series:
        summary = s.summary()
        assert {"series_uid", "modality", "description", "num_files", "rows", "columns"} <= set(summary)
        assert summary["num_files"] == len(s.files) and summary["modality"] == "MR"


def test_mr_study_folder_with_several_series_is_refused(shared_data):
    with pytest.raises(SeriesError) as err:
        read_image(shared_data / "dicom/mr_study")
    series = list_series(shared_data / "dicom/mr_study")
    for s in series:
        assert s.series_uid in str(err.value)
    assert "T1post" in str(err.value)


def test_mr_study_series_match_simpleitk_geometry(shared_data):
    import SimpleITK as sitk

    root = shared_data / "dicom/mr_study"
    for s in list_series(root):
        folder = s.files[0].parent
        image = read_series(root, series_uid=s.series_uid)
        assert image.meta["series_uid"] == s.series_uid
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), s.series_uid))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = reader.Execute()
        lps = np.eye(4)
        lps[:3, :3] = np.asarray(ref.GetDirection()).reshape(3, 3) * np.asarray(ref.GetSpacing())
        lps[:3, 3] = ref.GetOrigin()
        ras = LPS_TO_RAS @ lps
        assert image.spatial_shape == ref.GetSize()
        np.testing.assert_allclose(image.affine, ras, atol=0.01)
        ref_arr = sitk.GetArrayFromImage(ref).transpose(2, 1, 0)
        np.testing.assert_array_equal(image.array[0], ref_arr.astype(image.dtype))
        if "T1" in (s.description or ""):
            assert image.is_oblique
