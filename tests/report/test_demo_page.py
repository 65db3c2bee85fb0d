"""The demo page: values as a person reads them, everything escaped, errors shown in their section."""

import numpy as np

from deepmia.image import Image
from deepmia.report.demo import DemoSection, format_value, image_facts, render_demo_page, write_demo_page


def test_values_read_as_text_not_json():
    assert format_value([35, 51, 35]) == "35 × 51 × 35"
    assert format_value({"anterior": "1.408 mL", "posterior": "1.648 mL"}) == "anterior: 1.408 mL; posterior: 1.648 mL"
    assert format_value(True) == "yes" and format_value(None) == "–" and format_value(np.float32(0.123456)) == "0.1235"


def test_page_escapes_and_shows_errors(tmp_path):
    ok = DemoSection("<b>MR</b>", "mr.nii.gz", figures=[("Model: x", "a.png")],
                     facts=[("size", [4, 5])], analysis=[("predicted volume (model)", {"lesion": "0.100 mL"})])
    bad = DemoSection("broken", "broken.nii.gz", error="not a NIfTI file")
    page = write_demo_page([ok, bad], tmp_path, title="demo").read_text()
    assert "&lt;b&gt;MR&lt;/b&gt;" in page and "<b>MR" not in page
    assert "<td>lesion: 0.100 mL</td>" in page and "<td>4 × 5</td>" in page and "&quot;" not in page
    assert "<p class='error'>not a NIfTI file</p>" in page
    assert render_demo_page([ok]).count("<section>") == 1


def test_image_facts_say_unknown_geometry():
    png = Image(np.zeros((1, 28, 28), np.uint8), np.eye(4), meta={"format": "png", "spacing_unknown": True})
    facts = dict(image_facts(png))
    assert facts["spacing (mm)"] == "unknown" and facts["orientation"].startswith("unknown")
    nifti = dict(image_facts(Image(np.zeros((1, 4, 5, 6), np.float32), np.diag([1.0, 1.0, 2.5, 1.0]))))
    assert nifti["size (voxels)"] == "4 × 5 × 6" and nifti["spacing (mm)"] == "1 × 1 × 2.5"
