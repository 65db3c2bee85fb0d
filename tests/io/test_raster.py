import cv2
import numpy as np
import pytest
import SimpleITK as sitk
import tifffile
from PIL import Image as PILImage

from deepmia.errors import CorruptFileError, UnsupportedFormatError, WriteError
from deepmia.image import Image
from deepmia.io import read_image, spacing_known, write_image
from deepmia.io.sitk import from_sitk
from deepmia.report.figures import geometry_known

RNG = np.random.default_rng(0)


def _picture(dtype, rows=7, cols=9, channels=None):
    shape = (rows, cols) if channels is None else (rows, cols, channels)
    if np.issubdtype(dtype, np.floating):
        return RNG.normal(size=shape).astype(dtype)
    return RNG.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)


def test_png_axes_x_is_column_y_is_row(tmp_path):
    pic = _picture(np.uint8, rows=3, cols=5)  # 5 wide, 3 high
    PILImage.fromarray(pic).save(tmp_path / "p.png")
    img = read_image(tmp_path / "p.png")
    assert img.shape == (1, 5, 3)
    assert img.array[0, 4, 0] == pic[0, 4]  # x=4 (column), y=0 (top row)


@pytest.mark.parametrize(
    "name, mean_tolerance",
    # JPEG decoders (ITK's libjpeg, Pillow's libjpeg-turbo) upsample chroma differently: close, not equal.
    [("drive/training/images/21_training.tif", 0.0), ("bccd/BCCD/JPEGImages/BloodImage_00379.jpg", 1.0)],
)
def test_same_pixels_and_geometry_as_simpleitk(shared_data, name, mean_tolerance):
    path = shared_data / name
    ours, itk = read_image(path), from_sitk(sitk.ReadImage(str(path)))
    assert ours.shape == itk.shape and ours.dtype == itk.dtype
    assert np.abs(ours.array.astype(float) - itk.array).mean() <= mean_tolerance
    np.testing.assert_allclose(ours.affine, itk.affine)


@pytest.mark.parametrize(
    "dtype, channels",
    [(np.uint8, None), (np.uint8, 2), (np.uint8, 3), (np.uint8, 4), (np.uint16, None), (np.uint16, 3), (np.uint16, 4)],
)
def test_png_round_trip_is_identical(tmp_path, dtype, channels):
    pic = _picture(dtype, channels=channels)
    arr = np.transpose(pic if channels else pic[..., None], (2, 1, 0))
    img = Image(arr, np.diag([-0.25, -0.5, 1.0, 1.0]))
    write_image(img, tmp_path / "r.png")
    back = read_image(tmp_path / "r.png")
    assert back.dtype == dtype
    np.testing.assert_array_equal(back.array, arr)
    np.testing.assert_allclose(back.affine, img.affine)
    # Any PNG reader sees the picture upright (rows = Y, columns = X), at full bit depth.
    seen = cv2.imread(str(tmp_path / "r.png"), cv2.IMREAD_UNCHANGED)
    if channels in (3, 4):
        seen = seen[..., [2, 1, 0, 3][:channels]]
    elif channels == 2:
        seen = np.asarray(PILImage.open(tmp_path / "r.png"))
    np.testing.assert_array_equal(seen, pic)


def test_16bit_rgb_png_from_another_writer_stays_16bit(tmp_path):
    pic = _picture(np.uint16, channels=3)
    cv2.imwrite(str(tmp_path / "c.png"), pic[..., ::-1])
    img = read_image(tmp_path / "c.png")
    assert img.dtype == np.uint16 and img.num_channels == 3
    np.testing.assert_array_equal(img.array, pic.transpose(2, 1, 0))


def test_palette_png_becomes_rgb(tmp_path):
    rgb = _picture(np.uint8, channels=3)
    pal = PILImage.fromarray(rgb).quantize(16)
    pal.save(tmp_path / "pal.png")
    img = read_image(tmp_path / "pal.png")
    assert img.num_channels == 3
    np.testing.assert_array_equal(img.array, np.asarray(pal.convert("RGB")).transpose(2, 1, 0))


def _print_resolution_files(root):
    """The same picture with a print resolution in each raster format (none of them is a calibrated spacing)."""
    pic = _picture(np.uint8)
    PILImage.fromarray(pic).save(root / "d.png", dpi=(254, 127))
    PILImage.fromarray(pic).save(root / "d.jpg", dpi=(25, 25))  # CHASE_DB1's fundus photographs
    tifffile.imwrite(root / "inch.tif", pic, resolution=(300, 300), resolutionunit="INCH")  # a flatbed scan
    tifffile.imwrite(root / "cm.tif", pic, resolution=(100, 100), resolutionunit="CENTIMETER")
    return [root / n for n in ("d.png", "d.jpg", "inch.tif", "cm.tif")]


def test_print_resolution_is_never_a_spacing(tmp_path):
    for path in _print_resolution_files(tmp_path):
        image = read_image(path)
        assert image.spacing == (1.0, 1.0), path.name  # placeholder
        assert image.meta["spacing_unknown"] is True and not spacing_known(image), path.name
        assert geometry_known(image) == (False, False), path.name  # figures follow the same rule


def test_calibrated_tiff_spacing_is_known(tmp_path):
    pic = _picture(np.uint16)
    tifffile.imwrite(tmp_path / "ij.tif", pic, imagej=True, resolution=(1 / 0.5, 1 / 0.25), metadata={"unit": "um"})
    tifffile.imwrite(tmp_path / "ome.ome.tif", pic, ome=True,
                     metadata={"axes": "YX", "PhysicalSizeX": 0.4, "PhysicalSizeY": 0.8})
    for name, spacing in [("ij.tif", (0.5e-3, 0.25e-3)), ("ome.ome.tif", (0.4e-3, 0.8e-3))]:
        image = read_image(tmp_path / name)
        np.testing.assert_allclose(image.spacing, spacing)
        assert spacing_known(image) and geometry_known(image)[1], name


def test_deepmia_files_keep_whether_the_spacing_is_known(tmp_path):
    known = Image(_picture(np.uint8)[None], np.diag([-0.25, -0.5, 1.0, 1.0]))
    unknown = Image(known.array, np.diag([-1.0, -1.0, 1.0, 1.0]), meta={"spacing_unknown": True})
    for suffix in (".png", ".tif"):
        write_image(known, tmp_path / f"k{suffix}")
        write_image(unknown, tmp_path / f"u{suffix}")
        back = read_image(tmp_path / f"k{suffix}")
        assert spacing_known(back) and back.spacing == pytest.approx((0.25, 0.5))
        assert not spacing_known(read_image(tmp_path / f"u{suffix}"))
    write_image(known, tmp_path / "k.jpg")  # JPEG keeps no deepmia metadata: read back as unknown
    assert not spacing_known(read_image(tmp_path / "k.jpg"))


def test_bool_label_png_round_trip(tmp_path):
    mask = RNG.integers(0, 2, (1, 6, 4)).astype(bool)
    write_image(Image(mask, kind="label"), tmp_path / "m.png")
    back = read_image(tmp_path / "m.png")
    assert back.kind == "label" and back.dtype == bool
    np.testing.assert_array_equal(back.array, mask)


def test_int64_label_with_small_values_is_written_losslessly(tmp_path):
    lab = RNG.integers(0, 4, (1, 6, 4)).astype(np.int64)
    write_image(Image(lab, kind="label"), tmp_path / "l.png")
    np.testing.assert_array_equal(read_image(tmp_path / "l.png").array, lab)


@pytest.mark.parametrize(
    "array, suffix, message",
    [
        (np.zeros((1, 4, 4, 4), np.uint8), ".png", "3D volume"),
        (np.zeros((1, 4, 4), np.float32), ".png", "float32"),
        (np.zeros((1, 4, 4), np.int16), ".png", "int16"),
        (np.zeros((5, 4, 4), np.uint8), ".png", "5 channels"),
        (np.zeros((4, 4, 4), np.uint8), ".jpg", "4 channels"),
        (np.zeros((1, 4, 4), np.uint16), ".jpg", "uint16"),
    ],
)
def test_writers_refuse_what_the_format_cannot_hold(tmp_path, array, suffix, message):
    with pytest.raises(WriteError, match=message) as info:
        write_image(Image(array), tmp_path / f"x{suffix}")
    assert info.value.fix  # says what to do instead
    assert not (tmp_path / f"x{suffix}").exists()


def test_text_renamed_png_is_corrupt(tmp_path):
    (tmp_path / "fake.png").write_text("not a picture")
    with pytest.raises(CorruptFileError, match=r"fake\.png: not a PNG"):
        read_image(tmp_path / "fake.png")


@pytest.mark.parametrize("fraction", [0.3, 0.9])
def test_truncated_png_is_corrupt(tmp_path, fraction):
    PILImage.fromarray(_picture(np.uint8, 64, 64)).save(tmp_path / "full.png")
    blob = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(blob[: int(len(blob) * fraction)])
    with pytest.raises(CorruptFileError, match=r"cut\.png"):
        read_image(tmp_path / "cut.png")


def test_jpeg_is_lossy_but_close_and_upright(tmp_path):
    smooth = np.add.outer(np.arange(40), np.arange(60)).astype(np.uint8)  # 40 rows, 60 columns
    write_image(Image(smooth.T[None]), tmp_path / "s.jpg")
    back = read_image(tmp_path / "s.jpg")
    assert back.shape == (1, 60, 40) and back.dtype == np.uint8
    assert np.abs(back.array[0].astype(int) - smooth.T).max() <= 3


def test_truncated_jpeg_is_corrupt(tmp_path, shared_data):
    blob = (shared_data / "bccd" / "BCCD" / "JPEGImages" / "BloodImage_00379.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CorruptFileError, match=r"cut\.jpg"):
        read_image(tmp_path / "cut.jpg")


@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.int16])
@pytest.mark.parametrize("channels", [1, 3])
def test_tiff_round_trip_2d_and_3d_keeps_type_and_affine(tmp_path, dtype, channels):
    oblique = np.array([[0.0, 0.6, 0.0, 1.0], [-0.5, 0.0, 0.0, 2.0], [0.0, 0.0, 2.5, -3.0], [0, 0, 0, 1]])
    for shape in [(channels, 9, 7), (channels, 9, 7, 4)]:
        arr = _picture(dtype, rows=int(np.prod(shape)) // 9, cols=9).reshape(shape)
        img = Image(arr, oblique)
        write_image(img, tmp_path / "t.tif")
        back = read_image(tmp_path / "t.tif")
        assert back.dtype == dtype and back.shape == shape
        np.testing.assert_array_equal(back.array, arr)
        np.testing.assert_allclose(back.affine, oblique)


def test_multipage_tiff_from_imagej_is_a_volume_with_spacing(tmp_path):
    stack = _picture(np.uint16, rows=5 * 6, cols=7).reshape(5, 6, 7)  # (Z, Y, X)
    tifffile.imwrite(tmp_path / "ij.tif", stack, imagej=True, resolution=(1 / 0.25, 1 / 0.25),
                     metadata={"spacing": 2.5, "unit": "um", "axes": "ZYX"})
    img = read_image(tmp_path / "ij.tif")
    assert img.shape == (1, 7, 6, 5)
    np.testing.assert_array_equal(img.array[0], stack.transpose(2, 1, 0))
    np.testing.assert_allclose(img.spacing, (0.25e-3, 0.25e-3, 2.5e-3))
    assert spacing_known(img)


def test_real_tiff_with_zero_resolution_gets_1mm(shared_data):
    img = read_image(shared_data / "drive" / "training" / "images" / "21_training.tif")
    assert img.shape == (3, 565, 584) and img.spacing == (1.0, 1.0) and not spacing_known(img)


def test_truncated_tiff_is_corrupt(tmp_path, shared_data):
    blob = (shared_data / "drive" / "training" / "images" / "21_training.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CorruptFileError, match=r"cut\.tif"):
        read_image(tmp_path / "cut.tif")


def test_jpeg_exif_orientation_is_recorded_not_applied(tmp_path):
    pic = _picture(np.uint8, rows=16, cols=24)
    exif = PILImage.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    PILImage.fromarray(pic).save(tmp_path / "e.jpg", exif=exif, quality=100)
    img = read_image(tmp_path / "e.jpg")
    assert img.shape == (1, 24, 16) and img.meta["exif_orientation"] == 6


def test_missing_tiff_codec_is_named(tmp_path, monkeypatch):
    import tifffile

    from deepmia.errors import MissingCodecError
    from deepmia.io import read_image

    path = tmp_path / "lzw.tif"
    tifffile.imwrite(path, np.arange(64, dtype=np.uint8).reshape(8, 8), compression="lzw")

    def no_codec(*args, **kwargs):
        raise ValueError("<COMPRESSION.LZW: 5> requires the 'imagecodecs' package")

    monkeypatch.setattr(tifffile.TiffPage, "asarray", no_codec)
    with pytest.raises(MissingCodecError, match="imagecodecs"):
        read_image(path)


# ----------------------------------------------------------------------------------------------- GIF
def _gif(path, pic, palette=None, **options):
    im = PILImage.fromarray(pic, mode="P")
    im.putpalette(palette)
    im.save(path, **options)


def test_grey_palette_gif_is_one_channel_with_its_grey_values(tmp_path):
    pic = RNG.integers(0, 4, (6, 9)).astype(np.uint8)
    grey = [v for g in (0, 85, 170, 255) for v in (g, g, g)]
    _gif(tmp_path / "g.gif", pic, grey)
    img = read_image(tmp_path / "g.gif", kind="label")
    assert img.shape == (1, 9, 6) and img.kind == "label"
    np.testing.assert_array_equal(img.array[0].T, np.array([0, 85, 170, 255], np.uint8)[pic])


def test_colour_palette_gif_is_rgb(tmp_path):
    pic = RNG.integers(0, 3, (5, 7)).astype(np.uint8)
    colours = [255, 0, 0, 0, 255, 0, 0, 0, 255]
    _gif(tmp_path / "c.gif", pic, colours)
    img = read_image(tmp_path / "c.gif")
    assert img.shape == (3, 7, 5)
    np.testing.assert_array_equal(img.array[:, 2, 3], colours[3 * pic[3, 2] : 3 * pic[3, 2] + 3])


def test_animated_gif_is_refused_not_cut_to_one_frame(tmp_path):
    frames = [PILImage.fromarray(RNG.integers(0, 255, (4, 4)).astype(np.uint8)) for _ in range(2)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    with pytest.raises(UnsupportedFormatError, match="2 frames"):
        read_image(tmp_path / "a.gif")


def test_text_renamed_gif_is_corrupt(tmp_path):
    (tmp_path / "x.gif").write_text("not a picture")
    with pytest.raises(CorruptFileError, match="GIF"):
        read_image(tmp_path / "x.gif")


def test_real_gif_label_matches_pillow(shared_data):
    path = shared_data / "drive/training/1st_manual/21_manual1.gif"
    img = read_image(path, kind="label")
    pic = np.asarray(PILImage.open(path))
    assert img.shape == (1, pic.shape[1], pic.shape[0])
    np.testing.assert_array_equal(img.array[0].T, pic)
