"""PACS round trip: a series forwarded by Orthanc to deepmia, seconds until its SEG + SR are stored in Orthanc.

Usage: python benchmarks/pacs_roundtrip.py [--data ../shared/data] [--settle 2] [--repeats 3]
Writes benchmarks/results/pacs_roundtrip.json and pacs_roundtrip.md.

A real Orthanc (``Orthanc config.json`` on private ports, as the tests start it) holds the study; deepmia's node
(``deepmia pacs listen`` in this process, model loaded beforehand) is Orthanc's modality ``deepmia``. Each repeat:
Orthanc sends the series to deepmia (C-STORE); the clock starts at the last instance stored by deepmia and stops
when Orthanc answers the C-STORE of the results (SEG + SR; checked afterwards over DICOMweb). The settle time N
(no new instance for N seconds = series complete) is recorded separately; "outside the model" is everything but
the network's forward pass (settle, routing, queue, reading the series, writing SEG/SR, sending). Measured with
the model's test-time augmentation off and on (the model's default), each with its own node.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pydicom

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "pacs"))

from orthanc_server import Orthanc, free_port  # noqa: E402 -- the tests' Orthanc runner

from deepmia.data.catalog import open_catalog  # noqa: E402
from deepmia.pacs.config import Destination, PacsConfig, Route  # noqa: E402
from deepmia.pacs.jobs import job_row  # noqa: E402
from deepmia.pacs.node import PacsNode  # noqa: E402
from deepmia.tasks import resolve_model  # noqa: E402

SERIES = ("dicom", "mr_study", "Study3", "11_HCropVolume")


def _wait(condition, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise TimeoutError("round trip did not finish")


def one_round(node: PacsNode, orthanc: Orthanc, series_id: str, series_uid: str) -> dict:
    """Forward the series once and time it (the node's copy of the series is removed first)."""
    for old in node.storage.incoming.glob(f"*/{series_uid}"):
        shutil.rmtree(old)
    (node.storage.routing / f"{series_uid}.json").unlink(missing_ok=True)
    known = {d.job for d in node.outbox.all()}
    orthanc.post("/modalities/deepmia/store", {"Resources": [series_id], "Synchronous": True})
    delivery = _wait(lambda: [d for d in node.outbox.all() if d.job not in known and d.status == "sent"], 600)[0]
    job = job_row(node.catalog, delivery.job)
    p, r = job["params"], job["result"]
    total = delivery.sent_at - p["last_instance_at"]
    return {
        "job": delivery.job,
        "total_s": total,
        "settle_s": p["settled_at"] - p["last_instance_at"],
        "route_and_queue_s": r["predict_started_at"] - p["settled_at"],
        "predict_pipeline_s": r["outputs_at"] - r["predict_started_at"],
        "model_s": r["model_seconds"],
        "send_s": delivery.sent_at - r["outputs_at"],
        "outside_model_share": (total - r["model_seconds"]) / total,
        "outside_model_share_without_settle": (total - (p["settled_at"] - p["last_instance_at"]) - r["model_seconds"])
        / (total - (p["settled_at"] - p["last_instance_at"])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--settle", type=float, default=2.0, help="settle_seconds of the node")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    series = args.data.resolve().joinpath(*SERIES)
    source = pydicom.dcmread(next(series.glob("*.dcm")), stop_before_pixels=True)
    rounds: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        port = free_port()
        orthanc = Orthanc(root / "orthanc", modalities={"deepmia": ("DEEPMIA", port)}).start()
        try:
            from deepmia.pacs.network import send

            send(sorted(series.glob("*.dcm")), orthanc.address)
            series_id = orthanc.post("/tools/find", {"Level": "Series",
                                                     "Query": {"SeriesInstanceUID": source.SeriesInstanceUID}})[0]
            for tta in (False, True):
                config = PacsConfig(host="127.0.0.1", port=port, accept_calling_ae=[orthanc.aet],
                                    storage=root / f"node-{tta}", settle_seconds=args.settle, poll_seconds=0.05,
                                    routes=[Route(name="hippocampus", model=str(resolve_model("hippocampus")),
                                                  series_description="(?i)hippo", tta=tta)],
                                    destinations=[Destination(name="orthanc", dicom=orthanc.address)])
                with open_catalog(root / "catalog.sqlite") as catalog:
                    node = PacsNode(config, catalog).start()
                    node.ready.wait(600)
                    try:
                        rounds[f"tta_{'on' if tta else 'off'}"] = [
                            one_round(node, orthanc, series_id, source.SeriesInstanceUID)
                            for _ in range(args.repeats)]
                    finally:
                        node.stop()
            from dicomweb_client.api import DICOMwebClient

            found = DICOMwebClient(orthanc.dicomweb).search_for_series(study_instance_uid=source.StudyInstanceUID)
            modalities = sorted({s["00080060"]["Value"][0] for s in found})
        finally:
            orthanc.stop()
    assert {"SEG", "SR"} <= set(modalities), modalities
    keys = [k for k in rounds["tta_off"][0] if k != "job"]
    median = {name: {k: statistics.median(r[k] for r in runs) for k in keys} for name, runs in rounds.items()}
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "series": "/".join(SERIES), "instances": len(list(series.glob("*.dcm"))),
        "settle_seconds": args.settle, "repeats": args.repeats, "rounds": rounds,
        "median": median, "modalities_in_orthanc_study": modalities,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared), "
                   f"load average {os.getloadavg()[0]:.1f} at the end",
    }
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "pacs_roundtrip.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = [(f"settle (no new instance for N = {args.settle:g} s)", "settle_s"),
            ("routing, indexing in the catalog, queue", "route_and_queue_s"),
            ("read series + model + write SEG/SR", "predict_pipeline_s"), ("&nbsp;&nbsp;of which the model", "model_s"),
            ("C-STORE of SEG + SR to Orthanc", "send_s"),
            ("**total: last instance stored -> results stored**", "total_s")]
    off, on = median["tta_off"], median["tta_on"]
    md = [f"Orthanc forwards `{'/'.join(SERIES[1:])}` ({result['instances']} MR instances) to `deepmia pacs listen` "
          f"(models/hippocampus, model loaded beforehand); SEG + SR go back by C-STORE. Median of {args.repeats} "
          f"round trips per column; {result['machine']}.",
          "",
          "| step | seconds, TTA off | seconds, TTA on (default) |",
          "|---|---:|---:|"]
    md += [f"| {label} | {off[key]:.2f} | {on[key]:.2f} |" for label, key in rows]
    md += ["| share outside the model | "
           f"{100 * off['outside_model_share']:.0f}% | {100 * on['outside_model_share']:.0f}% |",
           "| share outside the model, settle time left out | "
           f"{100 * off['outside_model_share_without_settle']:.0f}% | "
           f"{100 * on['outside_model_share_without_settle']:.0f}% |"]
    (out / "pacs_roundtrip.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
