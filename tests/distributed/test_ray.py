"""deepmia batch predict on a real Ray cluster (``ray start --head`` + a worker node process), its worker node killed
mid-run; and a Ray address where nothing answers."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deepmia.distributed import MANIFEST
from deepmia.distributed.cluster import LocalCluster, free_port
from deepmia.distributed.manifest import STATE_DIR
from deepmia.errors import InvalidArgumentError

pytest.importorskip("ray.data")


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(worker_nodes=1, cpus=1, object_store_mb=100) as c:
        yield c


def test_the_local_cluster_keeps_task_workers_alive_beside_a_model_actor(cluster):
    """Ray keeps one worker process per CPU by default; beside a batch's model actor each read and write task then
    started a fresh process (measured: 6 processes for 6 tasks of a 12-volume run, 3 s of CPU each; 2 with the
    limit raised). Every node of LocalCluster runs with the higher limit."""
    import os

    from deepmia.distributed.cluster import WORKERS_PER_CPU

    limit = os.environ.get("RAY_num_workers_soft_limit", str(WORKERS_PER_CPU * cluster.cpus))  # the caller's wins
    assert len(cluster.raylets) == 2  # before the kill test below ends the worker node's raylet
    for pid in cluster.raylets:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert f"RAY_num_workers_soft_limit={limit}".encode() in env


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _in_flight_on(node_raylet: int, out: Path) -> list[str]:
    """Cases the worker node's model actor is predicting: an attempt mark of that actor, not yet a write mark."""
    marks = out / STATE_DIR / "attempts"
    taken = []
    for mark in marks.glob("*@p*") if marks.is_dir() else []:
        case = mark.name.split("@")[0]
        try:
            pid = int(mark.read_text().rsplit(":", 1)[1])
        except (OSError, ValueError, IndexError):
            continue
        if _ppid(pid) == node_raylet and not any(marks.glob(f"{case}@w*")):
            taken.append(case)
    return taken


@pytest.fixture(scope="module")
def volumes(shared_data, tmp_path_factory) -> Path:
    """Eight hippocampus MRI volumes (without TTA half a second or more each to segment on a loaded machine: the
    kill lands mid-prediction)."""
    import shutil

    dst = tmp_path_factory.mktemp("volumes")
    for src in sorted((shared_data / "hippocampus" / "images").glob("*.nii.gz"))[:8]:
        shutil.copy2(src, dst / src.name)
    return dst


@pytest.fixture(scope="module")
def segmented(volumes, tmp_path_factory) -> Path:
    """What the plain loop of ``deepmia predict`` writes for :func:`volumes`."""
    from deepmia.engine.batch import run_batch
    from deepmia.tasks import load_predictor

    out = tmp_path_factory.mktemp("segmented")
    run_batch(load_predictor("hippocampus", tta=False), volumes, out)
    return out


@pytest.mark.slow
@pytest.mark.shared_data
def test_a_worker_node_killed_mid_run_loses_no_case_and_duplicates_none(cluster, volumes, segmented, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-c", "from deepmia.cli.main import entry; entry()", "batch", "predict",
               "hippocampus", "--input", str(volumes), "--out", str(out), "--ray", cluster.address, "--workers", "2",
               "--chunk", "1", "--no-tta", "--json"]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed, deadline = [], time.time() + 240
    while run.poll() is None and time.time() < deadline and not killed:
        taken = _in_flight_on(cluster.raylets[1], out)
        if taken:
            cluster.kill_worker_node()
            killed = taken
        time.sleep(0.05)
    stdout, stderr = run.communicate(timeout=300)
    assert killed, "the run ended before the worker node had a case in flight"
    assert run.returncode == 0, stderr[-3000:]
    lines = [json.loads(x) for x in (out / MANIFEST).read_text().splitlines()]
    names = sorted(p.name for p in volumes.iterdir())
    assert sorted(r["case"] for r in lines) == names  # every case recorded exactly once
    for name in [*names, "measurements.csv"]:  # the same label maps and volumes as the plain loop
        assert (out / name).read_bytes() == (segmented / name).read_bytes(), name
    retried = {r["case"] for r in lines if r["retried"]}
    assert set(killed) <= retried, (killed, retried)  # what the dead node held was run again, and says so
    assert all(r["attempts"] >= 2 for r in lines if r["case"] in retried)
    summary, _ = json.JSONDecoder().raw_decode(stdout[stdout.index("{"):])  # Ray may log more lines after it
    assert summary["retried"] == sorted(retried, key=names.index)


def test_a_ray_address_where_nothing_answers_is_an_error_within_30_s(pngs, classifier, tmp_path):
    from deepmia.distributed import batch_predict

    started = time.perf_counter()
    with pytest.raises(InvalidArgumentError, match="no Ray cluster answers at 127.0.0.1"):
        batch_predict(classifier, pngs, tmp_path / "out", ray=f"127.0.0.1:{free_port()}")
    assert time.perf_counter() - started < 30
    assert not (tmp_path / "out" / MANIFEST).exists() or not (tmp_path / "out" / MANIFEST).read_text()


def test_a_ray_address_that_is_not_host_port_is_refused(classifier, pngs, tmp_path):
    with pytest.raises(InvalidArgumentError, match="HOST:PORT"):
        from deepmia.distributed.ray_backend import connect

        connect("nowhere")


@pytest.mark.shared_data
def test_a_catalog_scan_on_ray_indexes_what_a_local_scan_indexes(cluster, shared_data, tmp_path):
    import ray

    from deepmia.data.catalog import open_catalog, scan
    from deepmia.distributed.scan import ray_header_reader

    root = shared_data / "dicom" / "mr_study"
    with open_catalog(tmp_path / "local.sqlite") as catalog:
        local = scan(catalog, root, workers=1)
        expected = (catalog.counts(), catalog.series(), catalog.errors())
    try:
        reader = ray_header_reader(cluster.address, files_per_task=16, in_flight=2)
        with open_catalog(tmp_path / "ray.sqlite") as catalog:
            on_ray = scan(catalog, root, reader=reader)
            found = (catalog.counts(), catalog.series(), catalog.errors())
    finally:
        ray.shutdown()
    assert on_ray.read == local.read > 16 and on_ray.added == local.added
    assert found[0] == expected[0] and found[2] == expected[2]
    assert [s["series_uid"] for s in found[1]] == [s["series_uid"] for s in expected[1]]

