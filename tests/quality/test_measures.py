"""Quality measures: each reacts to its artefact, flags follow thresholds, reference measures match scikit-image."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from deepmia.errors import InvalidArgumentError
from deepmia.image import Image
from deepmia.quality import THRESHOLDS, Threshold, assess, clipping, ghosting, psnr, sharpness, ssim


def phantom(noise: float = 2.0, shape=(48, 48, 24), seed: int = 0) -> Image:
    """A head-like ellipsoid with two tissue classes and texture, in air, plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    head = x**2 + y**2 + z**2 < 0.7
    inner = (x - 0.1) ** 2 + y**2 + z**2 < 0.2
    texture = 10 * np.sin(3 * x) * np.cos(2 * y)
    arr = 100.0 * head + 60.0 * inner + texture * head + rng.normal(0, noise, shape)
    return Image(arr[None].astype(np.float32), np.diag([1.0, 1.0, 2.0, 1.0]), meta={"modality": "MR"})


def test_clean_phantom_passes():
    report = assess(phantom())
    bad = [(m.name, m.value, m.status) for m in report.measures if m.status in ("warn", "fail")]
    assert bad == []
    assert report.status == "pass"


def test_noise_estimate_and_snr_follow_added_noise():
    low, high = assess(phantom(noise=2.0), bias=False), assess(phantom(noise=20.0), bias=False)
    assert low["noise_sigma"].value == pytest.approx(2.0, rel=0.5)  # edges of a small phantom bias it up
    assert high["noise_sigma"].value == pytest.approx(20.0, rel=0.15)
    assert high["snr"].value < low["snr"].value / 5
    assert high["cnr"].value < low["cnr"].value / 5
    assert high["snr"].status != "pass"


def test_blur_lowers_sharpness():
    from scipy import ndimage as ndi

    a = phantom().array[0]
    assert sharpness(ndi.gaussian_filter(a, 2.0)) < sharpness(a) - 0.2


def test_clipping_detects_saturation():
    img = phantom()
    a = img.array[0]
    fg = a > 50
    clean, _ = clipping(a, fg)
    clipped, details = clipping(np.minimum(a, np.percentile(a[fg], 90)), fg)
    assert clean < THRESHOLDS["clipping_fraction"].warn < clipped
    assert details["at_max"] == pytest.approx(0.1, abs=0.02)


def test_ghosting_detects_a_half_fov_ghost_in_plane():
    img = phantom()
    a = img.array[0].astype(float)
    clean, _ = ghosting(a, img.spacing)
    ghost, per_axis = ghosting(a + 0.25 * np.roll(a, 24, axis=1), img.spacing)
    assert clean < 0.1 < ghost
    assert max(per_axis, key=per_axis.get) == "axis1"
    assert "axis2" not in per_axis  # the coarse slice axis is skipped


def test_bias_field_measure_sees_a_smooth_field():
    img = phantom()
    x = np.linspace(-1, 1, 48)[:, None, None]
    biased = img.with_array(img.array * np.exp(0.4 * x)[None].astype(np.float32))
    flat, tilted = assess(img)["bias_field_cv"], assess(biased)["bias_field_cv"]
    assert flat.value < THRESHOLDS["bias_field_cv"].warn < tilted.value
    assert flat.details["field_ratio"] < tilted.details["field_ratio"]


def test_full_reference_measures_match_scikit_image():
    ref = phantom(noise=0.5)
    noisy = phantom(noise=8.0, seed=3)
    a, r = noisy.array[0].astype(float), ref.array[0].astype(float)
    rng = r.max() - r.min()
    assert psnr(a, r) == pytest.approx(peak_signal_noise_ratio(r, a, data_range=rng))
    ours = ssim(a, r)
    assert ours == pytest.approx(
        structural_similarity(r, a, data_range=rng, gaussian_weights=True, use_sample_covariance=False, win_size=7)
    )
    assert ssim(r, r) == pytest.approx(1.0)
    report = assess(noisy, reference=ref, bias=False)
    assert report["psnr_db"].value < 40 and report["ssim"].value < 1
    # 2D works too
    assert 0 < ssim(a[:, :, 5], r[:, :, 5]) < 1


def test_mask_and_reference_must_share_the_grid():
    img = phantom()
    other = Image(np.zeros((1, 10, 10, 10), np.float32))
    with pytest.raises(InvalidArgumentError, match="reference grid"):
        assess(img, reference=other)
    with pytest.raises(InvalidArgumentError, match="mask"):
        assess(img, mask=Image(np.ones((1, 10, 10, 10), np.uint8), kind="label"))
    with pytest.raises(InvalidArgumentError, match="label image"):
        assess(Image(np.ones((1, 8, 8, 8), np.uint8), kind="label"))


def test_geometry_and_metadata_measures():
    img = Image(np.random.default_rng(0).normal(size=(1, 32, 32, 8)).astype(np.float32))
    r = assess(img, bias=False)
    assert r["missing_metadata"].value == 2  # modality and geometry (identity affine)
    assert r["missing_metadata"].status == "warn"
    thick = Image(
        img.array,
        np.diag([0.5, 0.5, 5.0, 1.0]),
        meta={"modality": "MR", "slice_positions": [[0, 0, 0], [0, 0, 5], [0, 0, 10], [0, 0, 17], [0, 0, 20]]},
    )
    r = assess(thick, bias=False)
    assert r["anisotropy"].value == pytest.approx(10) and r["anisotropy"].status == "fail"
    assert r["slice_spacing_cv"].value > 0.05 and r["slice_spacing_cv"].status == "fail"
    assert r["missing_metadata"].value == 0


def test_threshold_flags_and_report_lookup():
    t = Threshold(warn=10, fail=5, higher_is_better=True)
    assert [t.status(v) for v in (12, 7, 2)] == ["pass", "warn", "fail"]
    t = Threshold(warn=0.1, fail=0.2, higher_is_better=False)
    assert [t.status(v) for v in (0.05, 0.15, 0.3)] == ["pass", "warn", "fail"]
    r = assess(phantom(), bias=False)
    with pytest.raises(InvalidArgumentError, match="did you mean 'snr'"):
        r["snrr"]
    d = r.to_dict()
    assert d["status"] == r.status and {m["name"] for m in d["measures"]} >= {"snr", "cnr", "ghosting"}


def test_2d_image(shared_data):
    from deepmia.io import read_image

    img = read_image(shared_data / "drive" / "training" / "images" / "21_training.tif")
    green = img.with_array(img.array[1:2].astype(np.float32))
    r = assess(green)
    assert r["snr"].status == "pass" and r["ghosting"].status == "pass"


def test_unknown_pixel_spacing_is_missing_metadata_and_scalar_slice_positions_work():
    arr = np.random.default_rng(0).normal(size=(1, 32, 32, 8)).astype(np.float32)
    unknown = Image(arr, meta={"modality": "DX", "spacing_unknown": True})
    missing = assess(unknown, bias=False)["missing_metadata"]
    assert missing.value == 1 and "pixel spacing" in missing.details["missing"][0]
    # Positions along the slice normal (mm), as the DICOM reader records them.
    cv = assess(Image(arr, meta={"modality": "MR", "slice_positions": [0.0, 2.0, 4.0, 6.5, 8.0]}), bias=False)
    steps = np.diff([0.0, 2.0, 4.0, 6.5, 8.0])
    assert cv["slice_spacing_cv"].value == pytest.approx(steps.std() / steps.mean())
