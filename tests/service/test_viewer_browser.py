"""The web viewer in a real browser (issue 14): Debian's chromium driven by Playwright against ``deepmia serve``.

One server (a subprocess on a free port, SQLite, its own data folder) and one browser serve the whole module. The
browser renders WebGL2 on the CPU (SwiftShader), so these tests need no GPU. They log in through the login page,
run models from the run-model dialog and read the canvas pixels back from screenshots.
"""

from __future__ import annotations

import io
import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
DEEPMIA = Path(sys.executable).with_name("deepmia")
IMAGES = REPO / "docs" / "images"
RESULTS = REPO / "benchmarks" / "results"
CHROMIUM_ARGS = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
VIEWPORT = {"width": 1400, "height": 900}
JOB_TIMEOUT_MS = 240_000  # a model run on a loaded 2-core machine

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]

playwright_api = pytest.importorskip("playwright.sync_api")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """A running ``deepmia serve`` with one admin user: (base URL, user, token)."""
    if not CHROMIUM.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing in CI (.ci/run installs chromium)")
        pytest.skip(f"{CHROMIUM} not installed")
    work = tmp_path_factory.mktemp("viewer_service")
    db = str(work / "catalog.sqlite")
    added = subprocess.run([str(DEEPMIA), "user", "add", "clinician", "--role", "admin", "--db", db],
                           capture_output=True, text=True, check=True)
    token = added.stdout.strip().splitlines()[-1].strip()
    port = _free_port()
    log = open(work / "serve.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([str(DEEPMIA), "serve", "--port", str(port), "--db", db, "--data", str(work / "data"),
                             "--workers", "1"], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    import httpx

    try:
        for _ in range(120):
            try:
                if httpx.get(base + "/api/me", timeout=2).status_code == 401:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                pytest.fail(f"deepmia serve exited: {(work / 'serve.log').read_text()[-2000:]}")
            time.sleep(0.5)
        else:
            pytest.fail("deepmia serve did not answer in 60 s")
        yield base, "clinician", token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _upload(service, files: list[Path], **params) -> dict:
    import httpx

    base, _, token = service
    parts = [("files", (f.name, f.read_bytes(), "application/octet-stream")) for f in files]
    res = httpx.post(base + "/api/uploads", files=parts, params=params, timeout=300,
                     headers={"Authorization": f"Bearer {token}"})
    assert res.status_code == 200, res.text
    return res.json()


def _get(service, path: str):
    import httpx

    base, _, token = service
    res = httpx.get(base + path, timeout=60, headers={"Authorization": f"Bearer {token}"})
    assert res.status_code == 200, res.text
    return res.json()


@pytest.fixture(scope="module")
def studies(service, shared_data):
    """The mr_study (all five series) and one BCCD image, uploaded: {name: (study id, series id to open)}."""
    mr = sorted(p for p in (shared_data / "dicom" / "mr_study").rglob("*.dcm"))
    up = _upload(service, mr)
    hippo = next(s for s in up["series"] if s["n_instances"] == 40 and s["rows"] == 50)  # 11_HCropVolume
    blood = _upload(service, [shared_data / "bccd" / "BCCD" / "JPEGImages" / "BloodImage_00000.jpg"])
    return {"mr": (hippo["study_id"], hippo["id"]),
            "bccd": (blood["series"][0]["study_id"], blood["series"][0]["id"])}


@pytest.fixture(scope="module")
def browser():
    """Headless chromium with WebGL2 on SwiftShader."""
    with playwright_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, service):
    """A fresh page, logged in through the login form."""
    base, user, token = service
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(base + "/")
    pg.wait_for_url("**/login?next=*")
    pg.fill("#username", user)
    pg.fill("#token", token)
    pg.click("#login-button")
    pg.wait_for_url(base + "/")
    pg.page_errors = errors
    yield pg
    context.close()
    assert not errors, errors


def _open_study(page, service, study_id: int, series_id: int) -> None:
    page.goto(f"{service[0]}/study/{study_id}?series={series_id}")
    page.wait_for_selector("body[data-ready=true]", timeout=60_000)


def _canvas(page) -> np.ndarray:
    from PIL import Image as PILImage

    page.wait_for_timeout(300)  # two animation frames and then some: the view is drawn
    png = page.locator("#gl").screenshot()
    return np.asarray(PILImage.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def _run_model(page, model: str) -> None:
    page.click("#run-open")
    page.select_option("#run-model", model)
    page.click("#run-submit")
    page.wait_for_selector("#run-state:has-text('done')", timeout=JOB_TIMEOUT_MS)
    page.click("#run-dialog button:has-text('Close')")


# canvas positions with the label value under each, for the current view: every 3rd pixel
LABELS_UNDER_CANVAS = """() => {
  const nv = window.deepmiaViewer.nv
  const label = nv.volumes.find((v) => v.colormapLabel && v !== nv.volumes[0])
  const out = []
  for (let y = 0; y < nv.canvas.height; y += 3) {
    for (let x = 0; x < nv.canvas.width; x += 3) {
      const frac = nv.canvasPos2frac([x, y])
      if (frac[0] < 0) continue
      const mm = nv.frac2mm(frac)
      const v = label.mm2vox([mm[0], mm[1], mm[2]])
      const d = label.dimsRAS
      if (v[0] < 0 || v[1] < 0 || v[2] < 0 || v[0] >= d[1] || v[1] >= d[2] || v[2] >= d[3]) continue
      out.push([x, y, Math.round(label.getValue(v[0], v[1], v[2]))])
    }
  }
  return out
}"""

# screen pixels per mm in the current 2D view (from two canvas points 100 px apart)
PIXELS_PER_MM = """() => {
  const nv = window.deepmiaViewer.nv
  const x = nv.canvas.width / 2, y = nv.canvas.height / 2
  const a = nv.frac2mm(nv.canvasPos2frac([x, y])), b = nv.frac2mm(nv.canvasPos2frac([x + 100, y]))
  return 100 / Math.hypot(a[0] - b[0], a[1] - b[1], a[2] - b[2])
}"""

# world position (mm) of the label map's centroid, to put the crosshair (and so the slices) through the labels
LABEL_CENTROID_MM = """() => {
  const nv = window.deepmiaViewer.nv
  const label = nv.volumes.find((v) => v.colormapLabel && v !== nv.volumes[0])
  const d = label.dimsRAS
  let n = 0, sx = 0, sy = 0, sz = 0
  for (let z = 0; z < d[3]; z++) for (let y = 0; y < d[2]; y++) for (let x = 0; x < d[1]; x++) {
    if (label.getValue(x, y, z) > 0) { n++; sx += x; sy += y; sz += z }
  }
  const mm = label.vox2mm([sx / n, sy / n, sz / n], label.matRAS)
  window.deepmiaViewer.view.goTo(mm)
  return Array.from(mm)
}"""


def test_the_worklist_lists_sorts_and_filters_the_uploaded_studies(page, service, studies):
    rows = page.locator("#studies tbody tr[data-study]")
    rows.first.wait_for()
    total = _get(service, "/api/studies")["total"]  # 2, or 3 when this worker's CT test ran first
    assert rows.count() == total >= 2
    page.fill("#f-modality", "MR")
    page.click("#filters button[type=submit]")
    playwright_api.expect(page.locator("#studies tbody tr[data-study]")).to_have_count(1)
    assert page.locator("#studies tbody tr[data-study]").get_attribute("data-study") == str(studies["mr"][0])
    page.fill("#f-modality", "")
    page.click("#filters button[type=submit]")
    playwright_api.expect(page.locator("#studies tbody tr[data-study]")).to_have_count(total)
    for sort, css in (("patient", "asc"), ("-patient", "desc")):
        page.click("th[data-sort=patient]")
        page.wait_for_selector(f"th[data-sort=patient].{css}")
        expected = [str(s["id"]) for s in _get(service, f"/api/studies?sort={sort}")["items"]]
        shown = page.locator("#studies tbody tr[data-study]")
        playwright_api.expect(shown.first).to_have_attribute("data-study", expected[0])
        assert [shown.nth(i).get_attribute("data-study") for i in range(total)] == expected
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(IMAGES / "service_worklist.png"))
    page.click(f"#studies tbody tr[data-study='{studies['mr'][0]}']")
    page.wait_for_url(f"**/study/{studies['mr'][0]}")
    page.wait_for_selector("body[data-ready=true]", timeout=60_000)
    assert page.locator("#series li").count() == 5


def test_a_hippocampus_job_from_the_dialog_draws_its_label_map_where_the_labels_are(page, service, studies):
    _open_study(page, service, *studies["mr"])
    _run_model(page, "hippocampus")
    page.wait_for_selector("#overlays .overlay[data-kind=label_map]")
    page.wait_for_selector("#measurements td:has-text('anterior')")  # label names from the model's plan
    page.click("[data-layout=axial]")
    page.evaluate(LABEL_CENTROID_MM)
    on = _canvas(page)
    page.uncheck("#overlays .overlay[data-kind=label_map] .overlay-toggle")
    off = _canvas(page)
    samples = np.array(page.evaluate(LABELS_UNDER_CANVAS))
    diff = np.abs(on - off).sum(axis=2)
    labelled = samples[samples[:, 2] > 0]
    assert len(labelled) > 30, "the axial slice through the labels' centroid shows labels"
    # background pixels away from any label: over 3 mm from the nearest label sample (the view interpolates the
    # colours it draws between voxels, and this oblique series is resampled to the screen)
    bg = samples[samples[:, 2] == 0]
    from scipy.spatial import cKDTree

    px_per_mm = page.evaluate(PIXELS_PER_MM)
    far = bg[cKDTree(labelled[:, :2]).query(bg[:, :2])[0] > 3 * px_per_mm]
    assert len(far) > 100
    at_labels = diff[labelled[:, 1], labelled[:, 0]]
    at_background = diff[far[:, 1], far[:, 0]]
    assert np.median(at_labels) > 30, "the overlay colours the label voxels"
    assert np.mean(at_labels > 15) > 0.9
    assert np.mean(at_background > 15) < 0.01, "the overlay leaves the background alone"
    # each label value has its own colour: anterior and posterior differ on screen
    values = sorted(set(labelled[:, 2].tolist()))
    if len(values) > 1:
        mean_colour = [on[labelled[labelled[:, 2] == v][:, 1], labelled[labelled[:, 2] == v][:, 0]].mean(0)
                       for v in values[:2]]
        assert np.abs(mean_colour[0] - mean_colour[1]).sum() > 30
    page.check("#overlays .overlay[data-kind=label_map] .overlay-toggle")
    page.click("[data-layout=multiplanar]")
    page.wait_for_timeout(500)
    page.screenshot(path=str(IMAGES / "service_study.png"))


def test_a_window_preset_changes_the_image(page, service, studies):
    _open_study(page, service, *studies["mr"])
    page.click("[data-layout=axial]")
    auto = _canvas(page)
    page.select_option("#preset", "bone")
    bone = _canvas(page)
    assert float(page.input_value("#level")) == pytest.approx(400)
    assert float(page.input_value("#width")) == pytest.approx(1800)
    # MR intensities under a bone window (L 400, W 1800) are mostly dark: the image darkens overall
    assert bone.mean() < auto.mean() - 10
    assert np.mean(np.abs(bone - auto).sum(axis=2) > 30) > 0.1
    page.select_option("#preset", "auto")
    assert np.abs(_canvas(page) - auto).mean() < 1


def test_a_quality_check_from_the_dialog_shows_its_flags(page, service, studies):
    _open_study(page, service, *studies["mr"])
    page.click("#run-open")
    page.select_option("#run-model", "__quality")
    assert not page.is_visible("#run-moving")  # a moving series only for a registration model
    page.click("#run-submit")
    page.wait_for_selector("#run-state:has-text('done')", timeout=JOB_TIMEOUT_MS)
    page.click("#run-dialog button:has-text('Close')")
    page.wait_for_selector("#quality tbody tr")
    job = _get(service, "/api/jobs?kind=quality")["items"][0]
    out = next(o for o in job["outputs"] if o["name"].endswith(".json"))
    report = _get(service, f"/api/outputs/{out['id']}")
    shown = page.locator("#quality tbody tr")
    assert shown.count() == len(report["measures"])
    flagged = [m["name"] for m in report["measures"] if m["status"] not in ("pass", "info")]
    assert page.locator("#quality tbody tr.flag").count() == len(flagged)
    assert report["status"] in page.text_content("#quality")


def test_clicking_a_bccd_detection_moves_the_crosshair_to_it(page, service, studies):
    _open_study(page, service, *studies["bccd"])
    page.click("[data-layout=axial]")
    # the blood smear (an RGB JPEG) is drawn in colour, not one channel in grey
    smear = _canvas(page)
    assert np.mean(np.abs(smear[..., 0] - smear[..., 2]) > 25) > 0.1
    _run_model(page, "bccd")
    rows = page.locator("#detections tbody tr")
    rows.first.wait_for()
    job = _get(service, "/api/jobs")["items"][0]
    out = next(o for o in job["outputs"] if o["kind"] == "detections")
    detections = _get(service, f"/api/outputs/{out['id']}")
    assert rows.count() == len(detections) > 1
    before = page.evaluate("window.deepmiaViewer.view.crosshairMM()")
    for index in (1, 0):
        rows.nth(index).click()
        det = detections[int(rows.nth(index).get_attribute("data-det"))]
        centre = det["center_world_mm"]
        moved = page.evaluate("window.deepmiaViewer.view.crosshairMM()")
        assert moved[:2] == pytest.approx(centre[:2], abs=1.0), "the crosshair sits on the detection's centre"
        shown = [float(v) for v in page.text_content("#coords").split(",")]
        assert shown[:2] == pytest.approx(centre[:2], abs=0.06)
    assert moved[:2] != pytest.approx(before[:2], abs=1.0)
    # the boxes are drawn: the detection overlay changes the pixels on the box outline of the clicked detection
    on = _canvas(page)
    page.uncheck("#overlays .overlay[data-kind=detections] .overlay-toggle")
    off = _canvas(page)
    assert np.mean(np.abs(on - off).sum(axis=2) > 30) > 0.002


def _set_range(page, selector: str, value: int) -> None:
    """Move a slider as a user does: set its value and fire its input event."""
    page.eval_on_selector(selector, "(e, v) => { e.value = v; e.dispatchEvent(new Event('input')) }", value)


def _post(service, path: str, body: dict) -> dict:
    import httpx

    base, _, token = service
    res = httpx.post(base + path, json=body, timeout=60, headers={"Authorization": f"Bearer {token}"})
    assert res.status_code == 201, res.text
    return res.json()


def _wait_done(service, job_id: int) -> dict:
    deadline = time.time() + JOB_TIMEOUT_MS / 1000
    while time.time() < deadline:
        job = _get(service, f"/api/jobs/{job_id}")
        if job["state"] in ("done", "failed", "cancelled"):
            assert job["state"] == "done", job
            return job
        time.sleep(1)
    raise AssertionError(f"job {job_id} did not finish")


def test_a_classification_shows_its_saliency_map_and_its_report(page, service, shared_data, tmp_path):
    from PIL import Image as PILImage

    xray = tmp_path / "pneumonia_test_0.png"
    PILImage.fromarray(np.load(shared_data / "medmnist" / "pneumoniamnist.npz")["test_images"][0]).save(xray)
    up = _upload(service, [xray])
    _open_study(page, service, up["series"][0]["study_id"], up["series"][0]["id"])
    page.click("[data-layout=axial]")
    page.click("#run-open")
    page.select_option("#run-model", "pneumoniamnist")
    page.check("#run-saliency")
    page.select_option("#run-report", "zh")
    page.click("#run-submit")
    page.wait_for_selector("#run-state:has-text('done')", timeout=JOB_TIMEOUT_MS)
    page.click("#run-dialog button:has-text('Close')")
    page.wait_for_selector("#overlays .overlay[data-kind=saliency]")
    # the heat map is drawn over the image: switching it off changes many pixels
    on = _canvas(page)
    page.uncheck("#overlays .overlay[data-kind=saliency] .overlay-toggle")
    off = _canvas(page)
    assert np.mean(np.abs(on - off).sum(axis=2) > 30) > 0.02
    # the report: HTML inline (in Chinese, as asked), the PDF to download
    frame = page.frame_locator("#report iframe.report")
    playwright_api.expect(frame.locator("body")).to_contain_text("分类结果", timeout=30_000)
    href = page.get_attribute("#report-pdf", "href")
    pdf = page.evaluate("async (u) => { const r = await fetch(u); return [r.status, (await r.text()).slice(0, 5)] }",
                        href)
    assert pdf == [200, "%PDF-"]


def test_a_registration_blends_and_alternates_fixed_and_warped_in_a_checkerboard(page, service, shared_data):
    images = shared_data / "hippocampus" / "images"
    fixed = _upload(service, [images / "hippocampus_001.nii.gz"])["series"][0]
    moving = _upload(service, [images / "hippocampus_067.nii.gz"])["series"][0]
    job = _post(service, "/api/jobs", {"kind": "register", "model": "hippocampus_registration",
                                       "series_id": fixed["id"], "moving_series_id": moving["id"],
                                       "options": {"report": "en"}})
    _wait_done(service, job["id"])
    _open_study(page, service, fixed["study_id"], fixed["id"])
    page.click("[data-layout=axial]")
    page.click(f"#jobs li[data-job='{job['id']}']")
    page.wait_for_selector("#overlays .overlay[data-kind=warped]")
    slider = "#overlays .overlay[data-kind=warped] .overlay-opacity"
    _set_range(page, slider, 0)
    fixed_only = _canvas(page)
    _set_range(page, slider, 100)
    warped_only = _canvas(page)
    _set_range(page, slider, 50)
    blend = _canvas(page)
    changed = np.abs(fixed_only - warped_only).sum(axis=2) > 30
    assert changed.mean() > 0.01, "the warped image differs from the fixed one"
    # the blend lies between the two where they differ
    lo, hi = np.minimum(fixed_only, warped_only), np.maximum(fixed_only, warped_only)
    between = ((blend >= lo - 12) & (blend <= hi + 12)).all(axis=2)
    assert between[changed].mean() > 0.9
    assert np.abs(blend - fixed_only)[changed].mean() > 5 and np.abs(blend - warped_only)[changed].mean() > 5
    # checkerboard at full opacity: each block shows either the warped image or the fixed one
    _set_range(page, slider, 100)
    page.check("#overlays .overlay[data-kind=warped] .checkerboard")
    board = _canvas(page)
    like_fixed = np.abs(board - fixed_only).sum(axis=2) <= 30
    like_warped = np.abs(board - warped_only).sum(axis=2) <= 30
    assert like_fixed[changed].mean() > 0.2 and like_warped[changed].mean() > 0.2, "both images show in blocks"
    assert (like_fixed | like_warped)[changed].mean() > 0.6  # the rest: block edges, interpolated on screen
    page.uncheck("#overlays .overlay[data-kind=warped] .checkerboard")
    assert np.abs(_canvas(page) - warped_only).mean() < 1
    # the registration's report, with its checkerboard page
    playwright_api.expect(page.frame_locator("#report iframe.report").locator("body")).to_contain_text(
        "Checkerboard", timeout=30_000)


def _ct_volume(shared_data: Path, target: Path) -> Path:
    """A 512x512x300 CT made from the shared example CT (trilinear resampling), int16 NIfTI."""
    import nibabel as nib
    from scipy.ndimage import zoom

    src = nib.load(shared_data / "ct_mr_examples" / "example_ct.nii.gz")
    data = np.asarray(src.dataobj, dtype=np.float32)
    shape = (512, 512, 300)
    factors = [t / s for t, s in zip(shape, data.shape, strict=True)]
    big = zoom(data, factors, order=1).astype(np.int16)
    affine = src.affine.copy()
    affine[:3, :3] = affine[:3, :3] / np.array(factors)
    nib.save(nib.Nifti1Image(big, affine), target)
    return target


def test_a_512x512x300_ct_opens_and_the_time_to_its_first_image_is_recorded(page, service, shared_data, tmp_path):
    ct = _ct_volume(shared_data, tmp_path / "ct_512x512x300.nii.gz")
    up = _upload(service, [ct])
    study_id, series_id = up["series"][0]["study_id"], up["series"][0]["id"]
    runs = []
    pg = page
    recording = os.environ.get("DEEPMIA_RECORD_BENCHMARK") == "viewer_open"  # set by benchmarks/viewer_open.py
    for attempt in ("first", "second", "third") if recording else ("first", "second"):
        # a new page each time: navigation start -> first image, as a clinician opening the study
        pg = page.context.new_page()
        load = os.getloadavg()[0]
        pg.goto(f"{service[0]}/study/{study_id}?series={series_id}")
        pg.wait_for_selector("body[data-ready=true]", timeout=300_000)
        timings = pg.evaluate("window.deepmiaViewer.view.timings")
        runs.append({"open": attempt, "load_avg_1min": round(load, 1),
                     **{k: round(v, 1) if isinstance(v, float) else v for k, v in timings.items()}})
        if attempt != ("third" if recording else "second"):
            pg.close()
    dims = pg.evaluate("Array.from(window.deepmiaViewer.nv.volumes[0].hdr.dims.slice(1, 4))")
    assert dims == [512, 512, 300]  # the full volume replaced the preview drawn first
    assert {r["preview"] for r in runs} == {"4x4x2"} and all(r["fullDraw"] >= r["firstDraw"] for r in runs)
    assert pg.evaluate("window.deepmiaViewer.nv.volumes.length") == 1
    pg.select_option("#preset", "soft tissue")
    assert _canvas(pg).std() > 10, "the CT is drawn"
    # the first open includes the server's one-time NIfTI conversion of the upload (cached afterwards)
    cached = min(r["firstDraw"] for r in runs[1:])
    cached_full = min(r["fullDraw"] for r in runs[1:])
    record = {
        "benchmark": "viewer_open",
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "what": "navigation to the study page -> first image of a 512x512x300 int16 CT drawn by NiiVue "
                "(performance.now() once the GPU has finished the first frame: a 1-pixel readPixels). The first "
                "image is the server's block-averaged preview (4x4x2 -> 128x128x150, same world extent); the full "
                "volume replaces it when loaded (fullDraw)",
        "volume": {"shape": dims, "source": "ct_mr_examples/example_ct.nii.gz resampled (trilinear)",
                   "nifti_gz_bytes": runs[-1]["bytes"], "full_nifti_gz_bytes": runs[-1]["fullBytes"]},
        "runs_ms": runs,
        "first_open_ms": runs[0]["firstDraw"],
        "cached_open_ms": cached,
        "cached_full_resolution_ms": cached_full,
        "goal_ms": 3000,
        "goal_met": cached < 3000,
        "browser": "chromium " + _chromium_version() + ", headless, WebGL2 on SwiftShader (CPU)",
        "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs, 1-min load average "
                   f"{min(r['load_avg_1min'] for r in runs)}-{max(r['load_avg_1min'] for r in runs)} during the runs",
        "command": "python -m pytest -q -n 0 tests/service/test_viewer_browser.py -k 512x512x300",
    }
    if recording:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "viewer_open.json").write_text(json.dumps(record, indent=2) + "\n")
        (RESULTS / "viewer_open.md").write_text(_viewer_open_md(record))
    print(_viewer_open_md(record))
    # the 3 s goal is recorded, not asserted: on a shared CPU the time scales with the load. Asserted: no return of
    # the minutes-long open (NiiVue's 3D gradient on a CPU renderer, deferred by deepmia's patch)
    assert cached < 60_000, runs


def _viewer_open_md(record: dict) -> str:
    rows = "\n".join(f"| {r['open']} | {r['load_avg_1min']} | {r['fetched'] - r['fetchStart']:.0f} | "
                     f"{r['parsed'] - r['fetched']:.0f} | {r['firstDraw'] - r['parsed']:.0f} | {r['firstDraw']:.0f} |"
                     f" {r['fullDraw']:.0f} |" for r in record["runs_ms"])
    met = "met" if record["goal_met"] else "NOT met on this run"
    return (
        "| open | load avg (1 min) | preview download (ms) | decompress + parse (ms) | textures + first frame (ms) "
        "| navigation -> first image (ms) | navigation -> full resolution drawn (ms) |\n"
        "|---|---|---|---|---|---|---|\n" + rows + "\n\n"
        f"512x512x300 int16 CT ({record['volume']['full_nifti_gz_bytes'] / 1e6:.0f} MB .nii.gz; the first image is "
        f"the server's block-averaged 4x4x2 preview, {record['volume']['nifti_gz_bytes'] / 1e6:.1f} MB, replaced by "
        f"the full volume once that is loaded), {record['browser']}; {record['machine']}. The first open includes "
        f"the server's one-time conversion of the upload to the cached NIfTI and its preview. Goal: first image "
        f"under {record['goal_ms']} ms for a cached open: {met} (best cached open {record['cached_open_ms']:.0f} ms; "
        f"full resolution {record['cached_full_resolution_ms']:.0f} ms). Command: `{record['command']}` "
        "(or `python benchmarks/viewer_open.py`).\n"
    )


def _chromium_version() -> str:
    try:
        out = subprocess.run([str(CHROMIUM), "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    found = re.search(r"\d+(\.\d+)+", out)
    return found.group(0) if found else "unknown"


def test_the_vendored_niivue_is_served_with_its_licence(service):
    import httpx

    base = service[0]
    js = httpx.get(base + "/static/vendor/niivue/niivue.js", timeout=30)
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "class Niivue" in js.text or "Niivue" in js.text
    licence = httpx.get(base + "/static/vendor/niivue/LICENSE", timeout=30)
    assert licence.status_code == 200 and "BSD 2-Clause" in licence.text
    for bad in ("/static/../viewer.py", "/static/..%2Fviewer.py", "/static/%2e%2e/%2e%2e/pyproject.toml"):
        assert httpx.get(base + bad, timeout=30).status_code == 404
