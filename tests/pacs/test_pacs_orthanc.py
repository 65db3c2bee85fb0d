"""Against a real Orthanc: send and pull a study; a study forwarded by Orthanc comes back as SEG + SR in its study.

The round trip predicts once (models/hippocampus on the mr_study HippoCrop series) and checks, from that one run:
the results reach Orthanc by C-STORE and by STOW-RS under the source StudyInstanceUID, referencing the source
series (read back over DICOMweb); Orthanc stopped while the results are due keeps them queued with retries, also
across a restart of the listener, and they are sent when Orthanc returns; the job and its prediction are in the
catalog.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient

from deepmia.cli.main import main
from deepmia.data.catalog import open_catalog
from deepmia.data.catalog.models import Prediction
from deepmia.pacs.config import Destination, PacsConfig, Retry, Route
from deepmia.pacs.jobs import KIND, job_row
from deepmia.pacs.node import PacsNode
from deepmia.tasks import resolve_model

pytestmark = [pytest.mark.orthanc, pytest.mark.shared_data]


def _uids(folder: Path) -> set[str]:
    return {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in folder.rglob("*.dcm")}


def _wait(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_send_then_pull_by_c_get_c_move_and_dicomweb(orthanc, deepmia_port, hippo_series, tmp_path, capsys):
    assert main(["pacs", "send", str(hippo_series), "--to", orthanc.address]) == 0
    assert "40 of 40 file(s) sent" in capsys.readouterr().out
    study = pydicom.dcmread(next(hippo_series.glob("*.dcm")), stop_before_pixels=True).StudyInstanceUID
    move = ["--move-port", str(deepmia_port)]  # Orthanc knows DEEPMIA at this port (the fixture's modality)
    for source, out, more in ((orthanc.address, tmp_path / "cget", []), (orthanc.address, tmp_path / "cmove", move),
                              (orthanc.dicomweb, tmp_path / "wado", [])):
        assert main(["pacs", "pull", "--from", source, "--study", study, "--out", str(out), *more]) == 0
        assert _uids(out) == _uids(hippo_series), (source, more)
    capsys.readouterr()
    for source in (orthanc.address, orthanc.dicomweb):  # a study the PACS does not hold: one clear line, exit 2
        assert main(["pacs", "pull", "--from", source, "--study", "1.2.3.4", "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "study 1.2.3.4" in err[0] and "check the study UID" in err[0], err


def test_send_to_a_node_that_is_down_is_a_clear_error(tmp_path, hippo_series, capsys):
    from orthanc_server import free_port

    assert main(["pacs", "send", str(hippo_series), "--to", f"NOBODY@127.0.0.1:{free_port()}"]) == 2
    assert "could not be reached" in capsys.readouterr().err


@dataclass
class RoundTrip:
    study_uid: str
    source_series: str
    job_id: int
    before_restart: dict
    after_restart: dict
    catalog_db: Path


@pytest.fixture(scope="module")
def round_trip(orthanc, deepmia_port, hippo_series, tmp_path_factory) -> RoundTrip:
    root = tmp_path_factory.mktemp("node")
    config = PacsConfig(
        host="127.0.0.1", port=deepmia_port, accept_calling_ae=["ORTHANC"], storage=root / "store",
        settle_seconds=1.0, poll_seconds=0.1,
        routes=[Route(name="hippocampus", model=str(resolve_model("hippocampus")), modality=["MR"],
                      series_description="(?i)hippo", tta=False)],  # no TTA: the test checks the path
        destinations=[Destination(name="orthanc", dicom=orthanc.address),
                      Destination(name="orthanc-web", dicomweb=orthanc.dicomweb)],
        retry=Retry(initial_seconds=0.3, max_seconds=1.0, timeout_seconds=5))
    source = pydicom.dcmread(next(hippo_series.glob("*.dcm")), stop_before_pixels=True)
    assert main(["pacs", "send", str(hippo_series), "--to", orthanc.address]) == 0
    study = orthanc.post("/tools/find", {"Level": "Study", "Query": {"StudyInstanceUID": source.StudyInstanceUID}})[0]
    with open_catalog(root / "catalog.sqlite") as catalog:
        node = PacsNode(config, catalog).start()
        try:
            orthanc.post("/modalities/deepmia/store", {"Resources": [study], "Synchronous": True})
            orthanc.stop()  # down before the results are ready (settle time + prediction)
            failed = lambda: [j.error for j in catalog.jobs(kind=KIND) if j.status == "failed"]  # noqa: E731
            retried = _wait(lambda: [d for d in node.outbox.all() if d.attempts >= 2] or failed(), 300,
                            "2 failed attempts")
            assert not failed(), failed()
            job_id = retried[0].job
        finally:
            node.stop()
        before = job_row(catalog, job_id)
        orthanc.start()
        node = PacsNode(config, catalog).start(warm_up=False)  # a restarted listener finds the queued outputs
        try:
            _wait(lambda: all(d.status == "sent" for d in node.outbox.all()), 60, "the deliveries")
        finally:
            node.stop()
        after = job_row(catalog, job_id)
    return RoundTrip(source.StudyInstanceUID, source.SeriesInstanceUID, job_id, before, after,
                     root / "catalog.sqlite")


@pytest.mark.slow
def test_the_results_arrive_in_orthanc_in_the_source_study_referencing_the_source_series(round_trip, orthanc):
    client = DICOMwebClient(orthanc.dicomweb)
    series = client.search_for_series(study_instance_uid=round_trip.study_uid)
    by_modality = {s["00080060"]["Value"][0]: s["0020000E"]["Value"][0] for s in series}
    assert {"SEG", "SR", "DOC", "MR"} <= set(by_modality)  # DOC: the report as an Encapsulated PDF
    seg = client.retrieve_series(round_trip.study_uid, by_modality["SEG"])[0]
    assert seg.StudyInstanceUID == round_trip.study_uid
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == round_trip.source_series
    assert len(seg.SegmentSequence) >= 2  # one segment per label of the model
    sr = client.retrieve_series(round_trip.study_uid, by_modality["SR"])[0]
    evidence = {s.SeriesInstanceUID for study in sr.CurrentRequestedProcedureEvidenceSequence
                for s in study.ReferencedSeriesSequence}
    assert {round_trip.source_series, by_modality["SEG"]} <= evidence
    report = client.retrieve_series(round_trip.study_uid, by_modality["DOC"])[0]
    assert report.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert bytes(report.EncapsulatedDocument).startswith(b"%PDF-")
    source_sops = {i.ReferencedSOPInstanceUID for i in report.SourceInstanceSequence}
    stored = client.search_for_instances(round_trip.study_uid, round_trip.source_series)
    assert source_sops and source_sops <= {i["00080018"]["Value"][0] for i in stored}


@pytest.mark.slow
def test_results_wait_for_a_stopped_orthanc_with_retries_and_are_sent_after_a_listener_restart(round_trip):
    before, after = round_trip.before_restart, round_trip.after_restart
    assert before["status"] == "done"  # the prediction is done; the deliveries wait
    for name in ("orthanc", "orthanc-web"):
        queued, sent = before["result"]["deliveries"][name], after["result"]["deliveries"][name]
        assert queued["status"] == "queued" and queued["attempts"] >= 1 and queued["error"]
        assert sent["status"] == "sent" and sent["attempts"] > queued["attempts"] and sent["error"] is None
    assert max(before["result"]["deliveries"][n]["attempts"] for n in ("orthanc", "orthanc-web")) >= 2


@pytest.mark.slow
def test_the_job_and_its_prediction_are_recorded_in_the_catalog(round_trip):
    with open_catalog(round_trip.catalog_db) as catalog:
        job = job_row(catalog, round_trip.job_id)
        assert job["kind"] == KIND and job["series_id"] is not None
        assert job["params"]["series_uid"] == round_trip.source_series and job["params"]["route"] == "hippocampus"
        with catalog.session() as s:
            rows = s.query(Prediction).filter(Prediction.job_id == round_trip.job_id).all()
        assert len(rows) == 1 and rows[0].series_id == job["series_id"] and rows[0].model == "hippocampus"
        assert any("volume" in k for k in rows[0].scores)
