import json
import re

import numpy as np
import pytest
from PIL import Image as PILImage

from deepmia.cli.demo import SAMPLES
from deepmia.cli.main import main


@pytest.mark.slow
def test_demo_reads_every_bundled_sample(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    page = (tmp_path / "index.html").read_text()
    names = [s["name"] for s in json.loads((SAMPLES / "manifest.json").read_text())["samples"]]
    for name in names:
        assert name in page
    assert "class='error'" not in page
    pictures = re.findall(r"src='([^']+\.png)'", page)
    assert len(pictures) >= len(names)
    for pic in pictures:
        arr = np.asarray(PILImage.open(tmp_path / pic))
        assert arr.std() > 0  # a real picture, not a blank square
    out = capsys.readouterr().out
    assert "Hippocampus MRI 001" in out
    # Analysis, not files: every shipped model runs on its samples, values read as text (no JSON quoting).
    assert "&quot;" not in page and "{" not in page.split("</style>")[1]
    assert re.search(r"predicted volume \(model\)</th><td>anterior: \d+\.\d{3} mL; posterior: \d+\.\d{3} mL", page)
    assert "reference volume (label file)" in page and "Dice, model vs reference" in page
    assert re.search(r"predicted class \(model\)</th><td>(normal|pneumonia)</td>", page)
    assert "reference class</th><td>pneumonia (the model" in page
    assert re.search(r"objects with score ≥ [\d.]+ \(model\)</th><td>Platelets: \d+; RBC: \d+; WBC: \d+", page)
    captions = re.findall(r"<figcaption>([^<]+)</figcaption>", page)
    assert any(c.startswith("Reference:") for c in captions) and any(c.startswith("Model:") for c in captions)
    # The 6-slice DICOM series shows its axial slice only (no useless coronal/sagittal strips).
    section = page.split("CT DICOM series, 6 slices</h2>")[1].split("</section>")[0]
    (series_picture,) = re.findall(r"src='([^']+\.png)'", section)
    width = PILImage.open(tmp_path / series_picture).size[0]
    hippo = PILImage.open(tmp_path / re.findall(r"src='([^']+\.png)'", page)[0]).size[0]
    assert width < 700 < hippo  # one 512-pixel panel vs three panels


def test_demo_reports_broken_sample(tmp_path, capsys):
    samples = tmp_path / "samples"
    samples.mkdir()
    (samples / "broken.nii.gz").write_bytes(b"not a nifti")
    (samples / "manifest.json").write_text(json.dumps({"samples": [{"name": "Broken", "image": "broken.nii.gz"}]}))
    assert main(["demo", "--out", str(tmp_path / "out"), "--samples", str(samples)]) == 2
    err = capsys.readouterr().err
    assert "1 of 1 samples could not be read" in err
    assert "broken.nii.gz" in (tmp_path / "out" / "index.html").read_text()
