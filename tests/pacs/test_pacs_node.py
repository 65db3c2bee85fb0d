"""The DICOM node without a model: who may send, corrupt instances, series completion, unrouted studies."""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path

import pydicom
import pytest
from orthanc_server import free_port
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pynetdicom.dsutils import split_dataset

from deepmia.data.catalog import open_catalog
from deepmia.pacs.config import Address, Destination, PacsConfig, Route
from deepmia.pacs.network import DeliveryError, echo, send_dicom
from deepmia.pacs.node import PacsNode
from deepmia.tasks import resolve_model

SENDER = "MODALITY1"


def _instance(folder: Path, study: str, series: str, number: int, *, description: str = "T1 axial",
              pixels: bytes | None = None, modality: str = "MR") -> Path:
    """A small, valid MR instance (8 x 8, 16 bit) written to ``folder``."""
    sop = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality, ds.SeriesDescription = "P1", "Test^Patient", modality, description
    ds.InstanceNumber, ds.SeriesNumber = number, 3
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, float(number)], [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing, ds.SliceThickness = [1, 1], 1
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel = 15, 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(8 * 8 * 2) if pixels is None else pixels
    path = folder / f"{sop}.dcm"
    folder.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _element(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    return group.to_bytes(2, "little") + element.to_bytes(2, "little") + vr + len(value).to_bytes(2, "little") + value


def _undecodable(folder: Path) -> Path:
    """A file whose SOP class and instance UIDs read, followed by an element with no valid VR (patient name)."""
    sop = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = io.BytesIO()
    buf.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(buf, meta)
    even = [v.encode() + b"\0" * (len(v) % 2) for v in (MRImageStorage, sop)]
    body = _element(8, 0x16, b"UI", even[0]) + _element(8, 0x18, b"UI", even[1]) + _element(0x10, 0x10, b"ZZ", b"abcd")
    path = folder / "garbage.dcm"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue() + body)
    return path


@pytest.fixture
def make_node(tmp_path):
    """Start a node (no model loaded) with the test configuration, ``settle_seconds`` as given."""
    started = []

    def make(settle_seconds: float = 0.4) -> PacsNode:
        config = PacsConfig(
            port=free_port(), host="127.0.0.1", accept_calling_ae=[SENDER], storage=tmp_path / "store",
            settle_seconds=settle_seconds, poll_seconds=0.05,
            routes=[Route(name="hippo", model=str(resolve_model("hippocampus")), series_description="(?i)hippo")],
            destinations=[Destination(name="pacs", dicom=f"PACS@127.0.0.1:{free_port()}")])
        catalog = open_catalog(tmp_path / "catalog.sqlite")
        started.append((PacsNode(config, catalog).start(warm_up=False), catalog))
        return started[-1][0]

    yield make
    for node, catalog in started:
        node.stop()
        catalog.close()


@pytest.fixture
def node(make_node):
    return make_node()


def _address(node: PacsNode) -> Address:
    return Address(node.config.ae_title, "127.0.0.1", node.port)


def _wait(condition, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def test_an_unknown_calling_ae_title_is_rejected_and_nothing_is_stored(node, tmp_path, caplog):
    study, series = generate_uid(), generate_uid()
    files = [_instance(tmp_path / "in", study, series, 1)]
    with caplog.at_level(logging.WARNING, logger="deepmia.pacs"), pytest.raises(DeliveryError, match="rejected"):
        send_dicom(files, _address(node), calling_ae="STRANGER", timeout=5)
    assert not any(node.storage.incoming.rglob("*.dcm"))
    assert "STRANGER" in caplog.text and "rejected" in caplog.text
    assert echo(_address(node), calling_ae=SENDER)  # a known AE title is accepted


def test_a_corrupt_instance_is_quarantined_with_its_reason_and_the_listener_keeps_running(node, tmp_path):
    study, series = generate_uid(), generate_uid()
    truncated = _instance(tmp_path / "bad", study, series, 1, pixels=bytes(10))
    garbage = _undecodable(tmp_path / "bad")
    report = send_dicom([truncated, garbage], _address(node), calling_ae=SENDER, timeout=5)
    assert report.sent == [] and len(report.failed) == 2  # the sender learns they were refused
    notes = node.storage.quarantined()
    reasons = sorted(n["reason"] for n in notes)
    assert len(notes) == 2 and all(n["calling_ae"] == SENDER for n in notes)
    assert any("pixel data truncated: 10 bytes" in r for r in reasons), reasons
    assert any("Value Representation 'ZZ'" in r for r in reasons), reasons
    _, offset = split_dataset(truncated)
    sent = truncated.read_bytes()[offset:]
    assert any(Path(n["file"]).read_bytes().endswith(sent) for n in notes)  # the bytes are kept as they came
    good = _instance(tmp_path / "good", study, series, 2)
    assert send_dicom([good], _address(node), calling_ae=SENDER, timeout=5).sent == [good]
    stored = node.storage.series_dir(study, series) / good.name
    assert pydicom.dcmread(stored).SOPInstanceUID == pydicom.dcmread(good).SOPInstanceUID


def test_an_unrouted_study_is_stored_and_logged_and_gets_no_job(node, tmp_path, caplog):
    study, series = generate_uid(), generate_uid()
    files = [_instance(tmp_path / "in", study, series, n, description="T1 axial post") for n in range(1, 4)]
    with caplog.at_level(logging.INFO, logger="deepmia.pacs"):
        assert len(send_dicom(files, _address(node), calling_ae=SENDER, timeout=5).sent) == 3
        marker = node.storage.routing / f"{series}.json"
        note = json.loads(_wait(lambda: marker.is_file() and marker.read_text()))
    assert note["status"] == "unrouted" and note["instances"] == 3
    assert sorted(p.name for p in node.storage.series_dir(study, series).glob("*.dcm")) == sorted(
        f.name for f in files)
    assert "no routing rule matches" in caplog.text and series in caplog.text
    assert [j for j in node.catalog.jobs() if j.kind != "scan"] == []


@pytest.mark.parametrize("modality", ["SEG", "SR"])
def test_results_sent_back_to_the_node_are_stored_but_never_routed(node, tmp_path, modality):
    study, series = generate_uid(), generate_uid()
    # a description the hippocampus rule matches: deepmia's own SEG/SR forwarded back must not loop
    files = [_instance(tmp_path / "in", study, series, 1, description="deepmia SEG hippocampus", modality=modality)]
    assert send_dicom(files, _address(node), calling_ae=SENDER, timeout=5).sent == files
    marker = node.storage.routing / f"{series}.json"
    note = json.loads(_wait(lambda: marker.is_file() and marker.read_text()))
    assert note["status"] == "unrouted" and "not an image series" in note["reason"]
    assert [j for j in node.catalog.jobs() if j.kind != "scan"] == []


def test_a_series_settles_only_after_no_new_instance_for_the_settle_time(make_node, tmp_path):
    node = make_node(settle_seconds=3.0)  # generous: on a loaded machine one association can take a second
    study, series = generate_uid(), generate_uid()
    marker = node.storage.routing / f"{series}.json"
    for n in range(1, 4):  # one association per instance, about 0.3 s apart: each gap shorter than the settle time
        instance = _instance(tmp_path / "in", study, series, n)
        last = time.monotonic()  # the node receives the instance after this moment: it settles >= 3 s after it
        send_dicom([instance], _address(node), calling_ae=SENDER, timeout=5)
        assert not marker.exists()
        time.sleep(0.3)
    _wait(marker.is_file, timeout=15)
    assert time.monotonic() - last >= 3.0
    assert json.loads(marker.read_text())["instances"] == 3


def test_stopping_aborts_an_idle_peer_association_instead_of_waiting_for_it(node):
    # before, the association stayed open and its (non-daemon) thread held the process's exit for pynetdicom's
    # network timeout, 60 s: `deepmia pacs listen` did not end on Ctrl-C while a modality kept an association open
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    peer = AE(ae_title=SENDER)
    peer.add_requested_context(Verification)
    assoc = peer.associate("127.0.0.1", node.port, ae_title=node.config.ae_title)
    assert assoc.is_established  # and left open, as a modality between studies
    start = time.monotonic()
    node.stop()
    assert time.monotonic() - start < 20  # the stop does not wait for the peer
    _wait(lambda: assoc.is_aborted, timeout=10)  # the peer learns of it (A-ABORT)


def test_listen_runs_as_a_command_until_interrupted(tmp_path):
    import signal
    import subprocess
    import sys

    import yaml

    port = free_port()
    config = tmp_path / "pacs.yaml"
    config.write_text(yaml.safe_dump({"ae_title": "DEEPMIA", "host": "127.0.0.1", "port": port,
                                      "accept_calling_ae": [SENDER], "storage": "store", "routes": []}))
    command = [sys.executable, "-c", "from deepmia.cli.main import entry; entry()", "pacs", "listen",
               "--config", str(config), "--db", str(tmp_path / "catalog.sqlite")]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        _wait(lambda: echo(Address("DEEPMIA", "127.0.0.1", port), calling_ae=SENDER, timeout=2), timeout=120)
        assert not echo(Address("DEEPMIA", "127.0.0.1", port), calling_ae="STRANGER", timeout=2)
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert f"listening as DEEPMIA on 127.0.0.1:{port}" in err and "STRANGER" in err
    assert (tmp_path / "store" / "incoming").is_dir()


def test_status_lists_routing_deliveries_and_quarantine(node, tmp_path, capsys):
    import yaml

    from deepmia.cli.main import main
    from deepmia.pacs.jobs import Delivery

    study, series = generate_uid(), generate_uid()
    send_dicom([_instance(tmp_path / "in", study, series, 1), _instance(tmp_path / "bad", study, series, 2,
                                                                        pixels=bytes(4))],
               _address(node), calling_ae=SENDER, timeout=5)
    _wait((node.storage.routing / f"{series}.json").is_file)
    node.outbox.put(Delivery(7, "pacs", ["x.dcm"], attempts=3, error="PACS could not be reached",
                             next_try=time.time() + 3600))  # not due: the running node leaves it
    config = tmp_path / "pacs.yaml"
    config.write_text(yaml.safe_dump({"storage": str(node.storage.root), "routes": []}))
    assert main(["pacs", "status", "--config", str(config), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["series"] == {"routed": 0, "unrouted": 1, "waiting": 0}
    assert report["deliveries"]["counts"] == {"queued": 1, "sent": 0, "failed": 0}
    assert report["deliveries"]["not_sent"][0]["error"] == "PACS could not be reached"
    assert len(report["quarantine"]) == 1 and "pixel data truncated" in report["quarantine"][0]["reason"]
    assert main(["pacs", "status", "--config", str(config)]) == 0
    text = capsys.readouterr().out
    assert "1 unrouted" in text and "job 7 -> pacs: queued after 3 attempt(s)" in text and "truncated" in text


def test_listen_on_a_port_in_use_is_a_clear_error(tmp_path, capsys):
    import socket

    import yaml

    from deepmia.cli.main import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        config = tmp_path / "pacs.yaml"
        config.write_text(yaml.safe_dump({"host": "127.0.0.1", "port": busy.getsockname()[1], "storage": "store"}))
        assert main(["pacs", "listen", "--config", str(config), "--db", str(tmp_path / "c.sqlite")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot listen on 127.0.0.1" in err[0] and "key 'port'" in err[0], err


def test_a_job_cancelled_while_it_predicts_is_recorded_cancelled_and_its_results_are_not_sent(node, monkeypatch):
    from deepmia.jobs import cancel, submit
    from deepmia.pacs.jobs import KIND, job_row

    started = []

    def slow_predict(job_id, params):  # stands in for the model: the test is about the job's states
        started.append(job_id)
        time.sleep(1.0)
        return [], {"files": ["seg.dcm"]}, {"task": "segment", "model": "m", "path": None, "scores": {}}

    monkeypatch.setattr(node, "_predict", slow_predict)
    job_id = submit(node.catalog, KIND, {"destinations": ["pacs"]}, "pacs")
    _wait(lambda: started)
    assert cancel(node.catalog, job_id) == "running"  # asked to stop; the node records it when it can
    _wait(lambda: job_row(node.catalog, job_id)["status"] == "cancelled")
    assert node.outbox.all() == []


def test_a_done_job_whose_deliveries_never_reached_the_outbox_is_queued_at_start(make_node, tmp_path):
    from deepmia.jobs import claim, finish, submit
    from deepmia.pacs.jobs import KIND

    with open_catalog(tmp_path / "catalog.sqlite") as catalog:  # a node stopped between the two writes
        job_id = submit(catalog, KIND, {"destinations": ["pacs"]}, "pacs")
        job = claim(catalog, "elsewhere:1", kinds=[KIND])
        finish(catalog, job_id, job.attempt, result={"files": ["a.seg.dcm"],
                                                     "deliveries": {"pacs": {"status": "queued", "attempts": 0}}})
    node = make_node()
    entries = node.outbox.all()
    assert [(d.job, d.destination, d.files) for d in entries] == [(job_id, "pacs", ["a.seg.dcm"])]
