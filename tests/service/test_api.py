"""The service through HTTP with a real ``deepmia serve`` subprocess: a prediction equal to the CLI's, roles,
authentication, path-traversal ids, upload limits, zip bombs, SQL metacharacters, CSRF."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile

import nibabel as nib
import numpy as np
import pytest

from .conftest import Server, wait_job

pytestmark = pytest.mark.slow


def _series_id(upload: dict, description: str) -> int:
    return next(s["id"] for s in upload["series"] if s["description"] == description)


@pytest.fixture(scope="session")
def cli_label(tmp_path_factory, hcrop):
    """``deepmia predict hippocampus`` on the HippoCrop series folder (no TTA): the label map array."""
    out = tmp_path_factory.mktemp("cli")
    subprocess.run([sys.executable, "-c", "from deepmia.cli.main import entry; entry()", "predict", "hippocampus",
                    str(hcrop), str(out), "--no-tta"], check=True, capture_output=True)
    image = nib.load(out / f"{hcrop.name}.nii.gz")
    return np.asarray(image.dataobj), image.affine


def _predict_through_api(client, series_id: int) -> tuple[np.ndarray, np.ndarray]:
    r = client.post("/api/jobs", json={"kind": "predict", "model": "hippocampus", "series_id": series_id,
                                       "options": {"tta": False}})
    assert r.status_code == 201, r.text
    job = wait_job(client, r.json()["id"])
    assert job["state"] == "done", job
    label = next(o for o in job["outputs"] if o["kind"] == "label_map")
    measurements = next(o for o in job["outputs"] if o["kind"] == "measurements")
    rows = client.get(f"/api/outputs/{measurements['id']}").json()
    assert {"case", "target", "quantity", "value", "unit"} <= set(rows[0])
    data = client.get(f"/api/outputs/{label['id']}")
    assert data.status_code == 200
    image = nib.Nifti1Image.from_bytes(__import__("gzip").decompress(data.content))
    return np.asarray(image.dataobj), image.affine


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_prediction_through_the_api_equals_the_cli_voxel_for_voxel(db, server, cli_label, hcrop, tmp_path,
                                                                    make_database):
    if db == "sqlite":
        srv, token, series_id = server, server.tokens["annotator"], _series_id(server.upload, "HippoCrop")
        run = srv
    else:
        run = Server(tmp_path / "pg", make_database("postgres"), workers=1).start()
        token = run.add_user("ann", "annotator")
        files = [("files", (p.name, p.read_bytes(), "application/dicom")) for p in sorted(hcrop.iterdir())]
        with run.client(token) as c:
            r = c.post("/api/uploads", files=files)
        assert r.status_code == 200, r.text
        series_id = r.json()["series"][0]["id"]
    try:
        with run.client(token) as c:
            labels, affine = _predict_through_api(c, series_id)
            image = c.get(f"/api/series/{series_id}/image", params={"format": "nifti"})
        assert image.status_code == 200
        np.testing.assert_array_equal(labels, cli_label[0])
        np.testing.assert_allclose(affine, cli_label[1], atol=1e-5)
        assert labels.max() > 0
    finally:
        if run is not server:
            run.stop()


def test_roles_a_viewer_reads_but_cannot_run_upload_or_download_originals(server):
    series_id = _series_id(server.upload, "HippoCrop")
    with server.client(server.tokens["viewer"]) as c:
        assert c.get("/api/studies").json()["total"] >= 1
        assert c.get(f"/api/series/{series_id}/image").status_code == 200
        assert c.post("/api/jobs", json={"kind": "quality", "series_id": series_id}).status_code == 403
        assert c.get(f"/api/series/{series_id}/original").status_code == 403
        assert c.post("/api/uploads", files={"files": ("a.nii.gz", b"x")}).status_code == 403
        assert c.get("/api/audit").status_code == 403
    with server.client(server.tokens["annotator"]) as c:
        original = c.get(f"/api/series/{series_id}/original")
        assert original.status_code == 200 and len(zipfile.ZipFile(io.BytesIO(original.content)).namelist()) == 40
        assert c.get("/api/audit").status_code == 403
    with server.client(server.tokens["admin"]) as c:
        rows = c.get("/api/audit", params={"user": "annotator", "action": "download"}).json()
        assert rows and rows[0]["object"] == f"series {series_id}"


def test_every_endpoint_needs_a_token(server):
    schema = server.client().get("/openapi.json").json()
    with server.client() as anonymous, server.client("dm_1_forged") as forged:
        for path, methods in schema["paths"].items():
            url = path.replace("{study_id}", "1").replace("{series_id}", "1").replace("{job_id}", "1") \
                .replace("{output_id}", "1").replace("{name}", "hippocampus")
            for method in methods:
                if path == "/api/auth/login":
                    continue
                assert anonymous.request(method.upper(), url).status_code == 401, (method, path)
                assert forged.request(method.upper(), url).status_code == 401, (method, path)


TRAVERSAL = "../../etc/passwd"


def test_path_traversal_ids_get_404_or_422(server):
    with server.client(server.tokens["admin"]) as c:
        for template in ("/api/studies/{}", "/api/series/{}/image", "/api/series/{}/original", "/api/jobs/{}",
                         "/api/jobs/{}/events", "/api/outputs/{}", "/api/models/{}"):
            for value in (TRAVERSAL, TRAVERSAL.replace("/", "%2F"), "..%2F..%2Fetc%2Fpasswd", "%2e%2e"):
                r = c.get(template.format(value))
                assert r.status_code in (404, 422), (template, value, r.status_code)
                assert "root:" not in r.text
        for field in ("series_id", "moving_series_id", "model"):
            body = {"kind": "register", "series_id": 1, "moving_series_id": 2, "model": "hippocampus", field: TRAVERSAL}
            assert c.post("/api/jobs", json=body).status_code in (404, 422), field
        assert c.post(f"/api/jobs/{TRAVERSAL}/cancel").status_code in (404, 422)


def _data_files(server) -> set[str]:
    return {str(p.relative_to(server.data)) for p in server.data.rglob("*") if "cache" not in p.parts}


def test_oversized_upload_is_413_and_leaves_nothing(server):
    before = _data_files(server)
    big = b"\0" * (25 << 20)
    with server.client(server.tokens["annotator"]) as c:
        assert c.post("/api/uploads", files={"files": ("big.nii.gz", big)}).status_code == 413

        def chunks():  # no Content-Length: the limit is counted while streaming
            yield b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"x.dcm\"\r\n\r\n"
            for _ in range(26):
                yield b"\0" * (1 << 20)

        r = c.post("/api/uploads", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
        assert r.status_code == 413
        assert c.post("/api/jobs", content=b"{" + b" " * (2 << 20) + b"}",
                      headers={"content-type": "application/json"}).status_code == 413
    assert _data_files(server) == before


def test_zip_bombs_and_escaping_members_are_refused(server):
    before = _data_files(server)
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a.dcm", b"\0" * (40 << 20))
    escaping = io.BytesIO()
    with zipfile.ZipFile(escaping, "w") as z:
        z.writestr("../../evil.dcm", b"x" * 200)
    with server.client(server.tokens["annotator"]) as c:
        r = c.post("/api/uploads", files={"files": ("bomb.zip", bomb.getvalue(), "application/zip")})
        assert r.status_code == 413 and "zip bomb" in r.text
        r = c.post("/api/uploads", files={"files": ("evil.zip", escaping.getvalue(), "application/zip")})
        assert r.status_code == 422 and "outside" in r.text
    assert _data_files(server) == before
    assert not (server.data.parent / "evil.dcm").exists()


@pytest.mark.parametrize("value", ["'; DROP TABLE studies; --", "' OR '1'='1", "%", "_", "\\", "\"", "1; SELECT 1"])
def test_sql_metacharacters_in_filters_are_harmless(server, value):
    with server.client(server.tokens["viewer"]) as c:
        total = c.get("/api/studies").json()["total"]
        for key in ("q", "patient", "modality"):
            r = c.get("/api/studies", params={key: value})
            assert r.status_code == 200 and r.json()["total"] == 0, (key, value, r.text)
        assert c.get("/api/studies", params={"sort": value}).status_code == 422
        assert c.get("/api/studies").json()["total"] == total


def test_browser_login_sets_safe_cookies_and_needs_csrf_for_changes(server):
    series_id = _series_id(server.upload, "HippoCrop")
    with server.client() as c:
        assert c.post("/api/auth/login", data={"username": "annotator", "token": "dm_1_wrong"}).status_code == 401
        r = c.post("/api/auth/login", data={"username": "annotator", "token": server.tokens["annotator"]})
        assert r.status_code == 200 and r.json() == {"user": "annotator", "role": "annotator"}
        cookies = r.headers.get_list("set-cookie")
        session = next(h for h in cookies if h.startswith("deepmia_session="))
        assert "HttpOnly" in session and "SameSite=strict" in session.replace("Strict", "strict")
        assert c.get("/api/me").json()["user"] == "annotator"
        body = {"kind": "quality", "series_id": series_id}
        assert c.post("/api/jobs", json=body).status_code == 403  # no CSRF header
        assert c.post("/api/jobs", json=body, headers={"X-CSRF-Token": "forged"}).status_code == 403
        job = c.post("/api/jobs", json=body, headers={"X-CSRF-Token": c.cookies["deepmia_csrf"]})
        assert job.status_code == 201
        assert wait_job(c, job.json()["id"])["state"] == "done"
        assert c.post("/api/auth/logout", headers={"X-CSRF-Token": c.cookies["deepmia_csrf"]}).status_code == 200
        assert c.get("/api/me").status_code == 401


def test_cors_is_closed_by_default_and_the_docs_and_viewer_are_served(server):
    with server.client(server.tokens["viewer"]) as c:
        r = c.get("/api/studies", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["cache-control"] == "no-store"
        preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
        r = c.options("/api/studies", headers=preflight)
        assert "access-control-allow-origin" not in r.headers
    with server.client() as anonymous:
        assert anonymous.get("/docs").status_code == 200
        assert anonymous.get("/").status_code == 200


def test_job_events_stream_until_the_job_ends_and_cancel(server):
    import json

    series_id = _series_id(server.upload, "HippoCrop")
    with server.client(server.tokens["annotator"]) as c:
        job_id = c.post("/api/jobs", json={"kind": "quality", "series_id": series_id}).json()["id"]
        with c.stream("GET", f"/api/jobs/{job_id}/events") as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            states = [json.loads(line[5:])["state"] for line in r.iter_lines() if line.startswith("data:")]
        assert states[-1] == "done" and states.count("done") == 1
        # a queued job is cancelled at once; cancelling is refused to a viewer and to another annotator
        process = {"kind": "process", "series_id": series_id, "options": {"steps": ["gaussian:sigma=1"]}}
        assert c.post("/api/jobs", json={**process, "options": {"steps": ["no_such_step"]}}).status_code == 422
        ids = [c.post("/api/jobs", json=process).json()["id"] for _ in range(3)]
    with server.client(server.tokens["viewer"]) as v:
        assert v.post(f"/api/jobs/{ids[-1]}/cancel").status_code == 403
    with server.client(server.tokens["annotator"]) as c:
        assert c.post(f"/api/jobs/{ids[-1]}/cancel").json()["state"] in ("cancelled", "running", "done")
        assert wait_job(c, ids[-1])["state"] in ("cancelled", "done")
        assert wait_job(c, ids[0])["state"] == "done"


def test_cli_predict_with_server_submits_a_job_and_downloads_the_same_label_map(server, cli_label, hcrop, tmp_path):
    out = tmp_path / "remote"
    run = subprocess.run([sys.executable, "-c", "from deepmia.cli.main import entry; entry()", "predict", "hippocampus",
                          str(hcrop), str(out), "--no-tta", "--server", server.url,
                          "--token", server.tokens["annotator"]], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    hippo = _series_id(server.upload, "HippoCrop")  # the same files again: stored once, the same series
    labels = nib.load(out / f"series_{hippo}.nii.gz")
    np.testing.assert_array_equal(np.asarray(labels.dataobj), cli_label[0])
    assert (out / "measurements.json").is_file() and (out / "run.json").is_file()
    with server.client(server.tokens["viewer"]) as c:
        jobs = c.get("/api/jobs", params={"series_id": hippo, "kind": "predict"}).json()["items"]
        assert jobs[0]["user"] == "annotator" and jobs[0]["model"] == "hippocampus"


def test_upload_with_deid_stores_deidentified_files(server, hcrop):
    import pydicom

    original = pydicom.dcmread(next(hcrop.iterdir()), stop_before_pixels=True)
    files = [("files", (p.name, p.read_bytes(), "application/dicom")) for p in sorted(hcrop.iterdir())[:3]]
    with server.client(server.tokens["annotator"]) as c:
        r = c.post("/api/uploads", params={"deid": "true"}, files=files)
        assert r.status_code == 200, r.text
        study = r.json()["studies"][0]
        assert study["study_uid"] != original.StudyInstanceUID
        stored = c.get(f"/api/series/{r.json()['series'][0]['id']}/original")
    with zipfile.ZipFile(io.BytesIO(stored.content)) as z:
        ds = pydicom.dcmread(io.BytesIO(z.read(z.namelist()[0])), stop_before_pixels=True)
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.StudyInstanceUID == study["study_uid"] and ds.PatientID != original.PatientID


def test_register_job_writes_the_warped_series(server):
    from pathlib import Path

    samples = Path(__file__).resolve().parents[2] / "deepmia" / "samples" / "hippocampus"
    files = [("files", (n, (samples / n).read_bytes())) for n in ("hippocampus_001.nii.gz", "hippocampus_003.nii.gz")]
    with server.client(server.tokens["annotator"]) as c:
        stored = c.post("/api/uploads", files=files).json()["series"]
        fixed, moving = (next(s["id"] for s in stored if n in s["description"]) for n in ("_001", "_003"))
        r = c.post("/api/jobs", json={"kind": "register", "series_id": fixed, "moving_series_id": moving})
        assert r.status_code == 201 and r.json()["model"] == "hippocampus_registration"
        job = wait_job(c, r.json()["id"])
        assert job["state"] == "done", (job["error"], job["log"][-2000:])
        warped = next(o for o in job["outputs"] if o["kind"] == "warped")
        data = c.get(f"/api/outputs/{warped['id']}")
        fixed_image = c.get(f"/api/series/{fixed}/image")
    image = nib.Nifti1Image.from_bytes(__import__("gzip").decompress(data.content))
    reference = nib.Nifti1Image.from_bytes(__import__("gzip").decompress(fixed_image.content))
    assert image.shape[:3] == reference.shape[:3]
    assert fixed_image.content == (samples / "hippocampus_001.nii.gz").read_bytes()  # served as uploaded


def test_cancelling_a_running_job_stops_it_and_the_pool_goes_on(server):
    import time

    hippo = _series_id(server.upload, "HippoCrop")
    with server.client(server.tokens["annotator"]) as c:
        job_id = c.post("/api/jobs", json={"kind": "predict", "model": "hippocampus", "series_id": hippo}).json()["id"]
        deadline = time.monotonic() + 120
        while c.get(f"/api/jobs/{job_id}").json()["state"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert c.post(f"/api/jobs/{job_id}/cancel").status_code == 200
        job = wait_job(c, job_id, timeout=30)
        assert job["state"] == "cancelled" and job["outputs"] == []
        after = c.post("/api/jobs", json={"kind": "quality", "series_id": hippo}).json()["id"]
        assert wait_job(c, after)["state"] == "done"  # a new worker took the cancelled one's place


def test_a_big_volume_has_a_block_averaged_preview_covering_the_same_world_extent(server, tmp_path):
    """The viewer draws ``preview=true`` first: a volume over 4 M voxels comes shrunk (factors in a header) with
    the same world extent; a small one comes whole, marked ``none``."""
    z, y, x = np.mgrid[0:48, 0:320, 0:320]
    data = (x + 2 * y + 10 * z).astype(np.int16).transpose(2, 1, 0)  # 320 x 320 x 48 = 4.9 M voxels
    affine = np.array([[-0.7, 0, 0, 120.0], [0, 0.7, 0, -80.0], [0, 0, 3.0, 15.0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "big.nii.gz")
    with server.client(server.tokens["annotator"]) as c, open(tmp_path / "big.nii.gz", "rb") as f:
        up = c.post("/api/uploads", files={"files": ("big.nii.gz", f)})
        assert up.status_code == 200, up.text
        series_id = up.json()["series"][0]["id"]
        small = c.get(f"/api/series/{series_id}/image", params={"preview": "true"})
        whole = c.get(f"/api/series/{series_id}/image", params={"preview": "false"})
        hcrop = c.get(f"/api/series/{_series_id(server.upload, 'HippoCrop')}/image", params={"preview": "true"})
    assert small.status_code == whole.status_code == hcrop.status_code == 200
    assert small.headers["x-deepmia-preview"] == "2x1x1" and hcrop.headers["x-deepmia-preview"] == "none"
    (tmp_path / "small.nii.gz").write_bytes(small.content)
    (tmp_path / "whole.nii.gz").write_bytes(whole.content)
    a, b = nib.load(tmp_path / "whole.nii.gz"), nib.load(tmp_path / "small.nii.gz")
    assert a.shape == (320, 320, 48) and b.shape == (160, 320, 48)

    def corners(img):  # world position of the outer faces of the grid
        lo = img.affine @ np.array([-0.5, -0.5, -0.5, 1])
        hi = img.affine @ np.array([*(np.array(img.shape) - 0.5), 1])
        return np.stack([lo[:3], hi[:3]])

    np.testing.assert_allclose(corners(b), corners(a), atol=1e-3)
    # each preview voxel is the mean of its 2-voxel block (the data are linear in x, so exactly the mid value)
    np.testing.assert_allclose(np.asarray(b.dataobj)[10, 20, 5], np.asarray(a.dataobj)[20:22, 20, 5].mean(), atol=0.5)


def test_a_saliency_map_is_refused_for_a_model_that_does_not_classify(server):
    series_id = _series_id(server.upload, "HippoCrop")
    with server.client(server.tokens["annotator"]) as c:
        r = c.post("/api/jobs", json={"kind": "predict", "model": "hippocampus", "series_id": series_id,
                                      "options": {"saliency": True}})
        assert r.status_code == 422 and "classification" in r.json()["detail"]
        r = c.post("/api/jobs", json={"kind": "predict", "model": "hippocampus", "series_id": series_id,
                                      "options": {"report": "fr"}})
        assert r.status_code == 422
