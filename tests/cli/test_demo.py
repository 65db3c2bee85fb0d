import json
import re

import numpy as np
from PIL import Image as PILImage

from deepmia.cli.demo import SAMPLES
from deepmia.cli.main import main


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


def test_demo_reports_broken_sample(tmp_path, capsys):
    samples = tmp_path / "samples"
    samples.mkdir()
    (samples / "broken.nii.gz").write_bytes(b"not a nifti")
    (samples / "manifest.json").write_text(json.dumps({"samples": [{"name": "Broken", "image": "broken.nii.gz"}]}))
    assert main(["demo", "--out", str(tmp_path / "out"), "--samples", str(samples)]) == 2
    err = capsys.readouterr().err
    assert "1 of 1 samples could not be read" in err
    assert "broken.nii.gz" in (tmp_path / "out" / "index.html").read_text()
