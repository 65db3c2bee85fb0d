"""Clinical reports (deepmia.report.clinical; ``deepmia report PRED_DIR --out report.pdf --lang zh``).

One prediction per model (module fixtures); PDFs are turned into pictures with ``pdftoppm -r 60`` and checked:
Chinese glyphs drawn by a CJK font (not the boxes of a font without them), key images present, and the
Encapsulated PDF checked by ``dciodvfy``.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from test_dicom_outputs import _dciodvfy_errors  # the one dciodvfy helper (tests/report is on sys.path)

from deepmia.cli.main import main
from deepmia.errors import InvalidArgumentError, MissingDependencyError
from deepmia.io import read_image, write_image
from deepmia.report.clinical import i18n, render_report
from deepmia.report.clinical.encapsulated import ENCAPSULATED_PDF, report_dicom
from deepmia.report.clinical.folder import read_prediction_folder
from deepmia.tasks import resolve_model

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "deepmia" / "samples"
CLINICAL = REPO / "deepmia" / "report" / "clinical"
needs_poppler = pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="pdftoppm (poppler-utils) missing")


def _predict(model: str, src: Path | str, out: Path) -> Path:
    assert main(["predict", model, str(src), str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def hippo(tmp_path_factory) -> Path:
    """``deepmia predict models/hippocampus`` on the bundled hippocampus volume written as a DICOM series."""
    root = tmp_path_factory.mktemp("hippo")
    image = read_image(SAMPLES / "hippocampus" / "hippocampus_003.nii.gz")
    image.meta.update(modality="MR", patient_id="PSEUDO-7")
    write_image(image, root / "series", format="dicom", series_number=3, series_description="T1 crop")
    for path in (root / "series").iterdir():  # the writer leaves the study date empty: give it one
        ds = pydicom.dcmread(path)
        ds.StudyDate = "20240131"
        ds.save_as(path)
    return _predict(str(REPO / "models" / "hippocampus"), root / "series", root / "pred")


@pytest.fixture(scope="module")
def hippo_html(hippo) -> dict[str, str]:
    """The hippocampus report as HTML in English and in Chinese."""
    return {lang: render_report(hippo, lang=lang, fmt="html").decode() for lang in ("en", "zh")}


@pytest.fixture(scope="module")
def hippo_pdf(hippo_html) -> dict[str, bytes]:
    """The same reports as PDF (the template's HTML through WeasyPrint, as ``render_report(fmt="pdf")`` does)."""
    from deepmia.report.clinical.render import html_to_pdf

    return {lang: html_to_pdf(html) for lang, html in hippo_html.items()}


def _page(pdf: bytes, tmp: Path, name: str) -> np.ndarray:
    """Page 1 of a PDF as a grey picture (``pdftoppm -r 60``)."""
    (tmp / f"{name}.pdf").write_bytes(pdf)
    subprocess.run(["pdftoppm", "-r", "60", "-f", "1", "-l", "1", "-png", "-singlefile", str(tmp / f"{name}.pdf"),
                    str(tmp / name)], check=True, timeout=120)
    from PIL import Image as PILImage

    return np.asarray(PILImage.open(tmp / f"{name}.png").convert("L"), dtype=np.float32)


def _image_like_blocks(page: np.ndarray, size: int = 24) -> int:
    """Blocks of the page that look like a picture (mostly mid-tones, strong spread), not text or tables."""
    found = 0
    for r in range(0, page.shape[0] - size, size // 2):
        for c in range(0, page.shape[1] - size, size // 2):
            block = page[r:r + size, c:c + size]
            mid = np.mean((block > 30) & (block < 225))
            found += int(mid > 0.6 and block.std() > 20)
    return found


def _no_cjk_fontconfig(tmp: Path) -> Path:
    """A fontconfig file that offers DejaVu only (no CJK font)."""
    conf = tmp / "fonts.conf"
    conf.write_text('<?xml version="1.0"?><!DOCTYPE fontconfig SYSTEM "fonts.dtd"><fontconfig>'
                    f"<dir>/usr/share/fonts/truetype/dejavu</dir><cachedir>{tmp / 'cache'}</cachedir></fontconfig>")
    return conf


@needs_poppler
def test_chinese_glyphs_are_drawn_by_a_cjk_font_not_as_boxes(hippo_pdf, hippo_html, hippo, tmp_path):
    pdf = render_report(hippo, lang="zh", fmt="pdf")  # the public path once; the fixtures reuse the HTML
    fonts = subprocess.run(["pdffonts", "-"], input=pdf, capture_output=True, timeout=60).stdout.decode()
    assert "Noto-Sans-CJK-SC" in fonts
    (tmp_path / "zh.html").write_text(hippo_html["zh"], encoding="utf-8")
    script = ("import sys; from pathlib import Path; from deepmia.report.clinical import i18n, render\n"
              "try:\n    i18n.check_fonts('zh'); print('fonts found')\n"
              "except Exception as exc:\n    print(type(exc).__name__)\n"
              "Path(sys.argv[2]).write_bytes(render.html_to_pdf(Path(sys.argv[1]).read_text(encoding='utf-8')))\n")
    env = {"FONTCONFIG_FILE": str(_no_cjk_fontconfig(tmp_path)), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path / "zh.html"), str(tmp_path / "boxes.pdf")],
                         capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "MissingDependencyError"  # the check refuses where the glyphs would be boxes
    real, boxes = _page(hippo_pdf["zh"], tmp_path, "real"), _page((tmp_path / "boxes.pdf").read_bytes(), tmp_path,
                                                                  "boxes")
    title = (slice(10, 45), slice(20, 110))  # "临床报告" at the top left of the page
    assert real[title].min() < 100  # ink there
    assert np.abs(real[title] - boxes[title]).mean() > 15  # and not the shapes of a font without CJK glyphs
    en = _page(hippo_pdf["en"], tmp_path, "en")
    assert np.abs(real[title] - en[title]).mean() > 15  # nor the English title


@needs_poppler
def test_the_key_image_is_on_the_page(hippo_pdf, hippo_html, tmp_path):
    page = _page(hippo_pdf["en"], tmp_path, "en")
    assert _image_like_blocks(page) >= 4
    bare = re.sub(r'src="data:image/png;base64,[^"]+"', 'src=""', hippo_html["en"])
    from deepmia.report.clinical.render import html_to_pdf

    assert _image_like_blocks(_page(html_to_pdf(bare), tmp_path, "bare")) == 0  # the detector sees pictures only


def test_the_hippocampus_page_holds_header_measurements_findings_and_card(hippo, hippo_html):
    html = hippo_html["en"]
    assert "PSEUDO-7" in html and "2024-01-31" in html and ">MR<" in html and "3 T1 crop" in html
    labels = read_image(hippo / "series.nii.gz", kind="label")
    voxel_ml = float(np.prod(labels.spacing)) / 1000
    for k, name in ((1, "anterior"), (2, "posterior")):
        volume = (labels.array == k).sum() * voxel_ml
        assert f"<td>{name}</td><td>{volume:.3f}</td>" in html
        assert f"{name}: volume {volume:.2f} mL, largest diameter" in html
    assert html.count('<img class="structure"') == 2 and "Image quality" in html
    folds = json.loads((resolve_model("hippocampus") / "metrics.json").read_text())["folds"]
    dice = folds["0"]["per_class"]["anterior"]["dice"]  # the card's first row, with its interval
    assert "Dice" in html and f"[{dice['ci_low']:.3f}, {dice['ci_high']:.3f}]" in html and "Research use only" in html
    zh = hippo_html["zh"]
    assert "测量结果" in zh and "体积（mL）" in zh and "所见" in zh


def test_several_cases_get_one_page_each(hippo):
    from deepmia.report.clinical import results_report

    name, result = read_prediction_folder(hippo).cases[0]
    html = results_report([(name, result), ("again.nii.gz", result)], fmt="html", quality=False).decode()
    assert html.count('<section class="case') == 2 and "Clinical report: again<" in html
    assert "page-break-before: always" in html


def test_a_ct_segmentation_reports_mean_hounsfield_units():
    from deepmia.image import Image
    from deepmia.report.clinical import results_report
    from deepmia.tasks.segment.result import SegmentResult

    ct = read_image(SAMPLES / "ct" / "example_ct_sm.nii.gz")
    ct.meta["modality"] = "CT"
    bone = (ct.array > 300).astype(np.uint8)
    result = SegmentResult(Image(bone, ct.affine, kind="label", meta=ct.meta), {1: "bone"}, image=ct)
    html = results_report([("ct.nii.gz", result)], fmt="html", quality=False).decode()
    assert "<th>Mean intensity (HU)</th>" in html
    assert f"<td>{float(ct.array[bone > 0].mean()):.1f}</td>" in html


def test_a_classified_volume_shows_three_planes_through_the_saliency_peak():
    from PIL import Image as PILImage

    from deepmia.image import Image
    from deepmia.report.clinical.keyimages import classification_image

    rng = np.random.default_rng(0)
    image = Image(rng.uniform(0, 100, (1, 24, 24, 24)).astype(np.float32), np.diag([1.0, 1.0, 2.0, 1.0]))
    heat = np.zeros((1, 24, 24, 24), np.float32)
    heat[0, 5:9, 5:9, 15:19] = 1.0
    found = classification_image(image, image.with_array(heat), "yes (p = 0.9)", notes=lambda im: [])
    rgb = np.asarray(PILImage.open(io.BytesIO(base64.b64decode(found["uri"].split(",")[1]))).convert("RGB"), int)
    red = (rgb[..., 0] > rgb[..., 1] + 40) & (rgb[..., 0] > rgb[..., 2] + 40)  # the map's peak (letters: yellow)
    columns = np.flatnonzero(red.any(axis=0))
    assert found["kind"] == "saliency" and columns.size
    assert (np.diff(columns) > 20).sum() == 2  # the hot spot in each of three panels side by side


def test_pneumoniamnist_report_has_the_grad_cam_key_image(tmp_path):
    from PIL import Image as PILImage

    pred = _predict("pneumoniamnist", SAMPLES / "xray" / "pneumoniamnist_test_000_label1.png", tmp_path)
    html = render_report(pred, lang="en", fmt="html").decode()
    uri = re.search(r'<img class="saliency" src="data:image/png;base64,([^"]+)"', html)
    assert uri and "Grad-CAM saliency map" in html
    rgb = np.asarray(PILImage.open(io.BytesIO(base64.b64decode(uri.group(1)))).convert("RGB"), dtype=np.int16)
    colour = np.abs(rgb[..., 0] - rgb[..., 2]) > 60  # the heat map: the X-ray itself is grey
    assert colour.mean() > 0.02
    row = (pred / "predictions.csv").read_text().splitlines()[1].split(",")
    assert f"{row[1]} (calibrated probability {max(float(row[2]), float(row[3])):.3f})" in html
    assert "The uncertainty (" in html


def test_bccd_report_lists_every_reported_detection(tmp_path):
    pred = _predict("bccd", SAMPLES / "photo" / "BloodImage_00000.jpg", tmp_path)
    html = render_report(pred, lang="en", fmt="html").decode()
    record = json.loads((pred / "run.json").read_text())
    min_score = record["predictor"]["options"]["min_score"]
    kept = [e for e in json.loads((pred / "predictions.json").read_text()) if e["score"] >= min_score]
    table = html[html.index('<table class="measurements">'):]
    table = table[: table.index("</table>")]
    assert table.count("<tr>") == len(kept) + 1 and len(kept) > 0
    for n, e in enumerate(sorted(kept, key=lambda e: -e["score"]), start=1):
        assert f"<tr><td>{n}</td>" in table and f"<td>{e['score']:.3f}</td>" in table
    assert html.count('<img class="detection"') == min(8, len(kept))
    assert "The image states no pixel spacing" in html and "not stated" in table  # a photo: pixels, no side


def test_registration_report_shows_the_checkerboard(tmp_path):
    from PIL import Image as PILImage

    pair = ",".join(str(SAMPLES / "hippocampus" / f"hippocampus_00{k}.nii.gz") for k in (1, 3))
    pred = _predict("hippocampus_registration", pair, tmp_path)
    html = render_report(pred, lang="zh", fmt="html").decode()
    uri = re.search(r'<img class="checkerboard" src="data:image/png;base64,([^"]+)"', html)
    assert uri and "棋盘格" in html and "配准前" in html
    picture = np.asarray(PILImage.open(io.BytesIO(base64.b64decode(uri.group(1)))).convert("L"), dtype=np.float32)
    assert picture.std() > 20
    assert main(["report", str(pred), "--out", str(tmp_path / "r.pdf"), "--lang", "zh"]) == 0  # the command
    assert (tmp_path / "r.pdf").read_bytes().startswith(b"%PDF")


def test_the_encapsulated_pdf_joins_the_source_study_and_passes_dciodvfy(hippo, tmp_path):
    folder = read_prediction_folder(hippo)
    name, result = folder.cases[0]
    path = report_dicom(name, result, tmp_path, model_dir=folder.model_dir)
    assert path == tmp_path / "dicom" / "series.report.dcm"
    ds = pydicom.dcmread(path)
    source = pydicom.dcmread(next((hippo.parent / "series").iterdir()), stop_before_pixels=True)
    assert ds.SOPClassUID == ENCAPSULATED_PDF and ds.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert ds.StudyInstanceUID == source.StudyInstanceUID and ds.PatientID == source.PatientID
    assert ds.SeriesInstanceUID != source.SeriesInstanceUID and ds.Modality == "DOC"
    pdf = bytes(ds.EncapsulatedDocument)[: ds.EncapsulatedDocumentLength]
    assert pdf.startswith(b"%PDF") and pdf.rstrip().endswith(b"%%EOF")
    assert _dciodvfy_errors(path) == []


def test_a_folder_that_is_not_a_prediction_is_a_typed_error_naming_it(tmp_path, capsys):
    with pytest.raises(InvalidArgumentError, match="not a prediction folder") as info:
        render_report(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 2
    assert str(tmp_path) in capsys.readouterr().err


def test_an_input_that_is_gone_is_a_typed_error_naming_it(hippo, tmp_path):
    from deepmia.errors import ReadError

    record = json.loads((hippo / "run.json").read_text())
    record["inputs"][0]["path"] = str(tmp_path / "moved")
    (tmp_path / "run.json").write_text(json.dumps(record))
    shutil.copy(hippo / "series.nii.gz", tmp_path)
    with pytest.raises(ReadError, match="no longer there") as info:
        render_report(tmp_path)
    assert str(tmp_path / "moved") in str(info.value)


def test_an_unknown_language_lists_the_languages(hippo, tmp_path, capsys):
    assert main(["report", str(hippo), "--out", str(tmp_path / "r.pdf"), "--lang", "xx"]) == 2
    err = capsys.readouterr().err
    assert "'xx'" in err and "en, zh" in err
    assert not (tmp_path / "r.pdf").exists()


def test_a_pdf_in_chinese_without_a_cjk_font_is_refused(monkeypatch):
    monkeypatch.setattr(i18n, "cjk_fonts", lambda: [])
    with pytest.raises(MissingDependencyError, match="no CJK font"):
        i18n.check_fonts("zh")
    i18n.check_fonts("en")  # English needs none


def test_every_message_has_its_chinese_translation_with_the_same_placeholders():
    from babel.messages.extract import extract_from_dir
    from babel.messages.pofile import read_po

    used = {m[2] for m in extract_from_dir(str(CLINICAL), method_map=[("**.py", "python"),
                                                                       ("templates/**.html", "jinja2")])}
    assert len(used) > 50
    for lang in i18n.LANGUAGES:
        with open(CLINICAL / "locale" / lang / "LC_MESSAGES" / "deepmia.po", "rb") as f:
            catalog = {m.id: m.string for m in read_po(f) if m.id}
        assert used <= set(catalog), (lang, used - set(catalog))
        for msgid in used:
            assert catalog[msgid], (lang, msgid)
            placeholders = sorted(re.findall(r"%\([a-z]+\)[.0-9]*[a-z%]", msgid))
            assert sorted(re.findall(r"%\([a-z]+\)[.0-9]*[a-z%]", catalog[msgid])) == placeholders, (lang, msgid)
    assert i18n.translations("zh").gettext("Findings") == "所见"
