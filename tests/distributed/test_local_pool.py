"""deepmia batch predict without Ray: a local process pool, the manifest, resume, and outputs that cannot be written."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deepmia.distributed import MANIFEST, Manifest, batch_predict
from deepmia.distributed.manifest import STATE_DIR
from deepmia.distributed.work import BatchJob, write_case
from deepmia.errors import InvalidArgumentError, WriteError

pytestmark = pytest.mark.shared_data


def manifest_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / MANIFEST).read_text().splitlines()]


def test_a_two_process_pool_writes_what_deepmia_predict_writes(pngs, classifier, sequential, tmp_path):
    out = tmp_path / "pool"
    outcome = batch_predict(classifier, pngs, out, workers=2, chunk=3)  # chunks unlike the loop's batch of 64
    for table in ("predictions.csv", "measurements.csv"):
        assert (out / table).read_bytes() == (sequential / table).read_bytes(), table
    lines = manifest_lines(out)
    names = sorted(p.name for p in pngs.iterdir())
    assert sorted(r["case"] for r in lines) == names == sorted(outcome.predicted)  # each case recorded once
    assert 1 <= len({r["worker"] for r in lines}) <= 2  # (under load one worker may take every chunk)
    assert all(r["status"] == "done" and not r["retried"] and r["attempts"] == 1 for r in lines)
    assert lines[0]["sha256"] and lines[0]["seconds"] > 0
    run = json.loads((out / "run.json").read_text())
    assert run["predicted"] == names and run["options"]["workers"] == 2
    assert not (out / STATE_DIR / "tmp").exists() or not any((out / STATE_DIR / "tmp").iterdir())


def test_a_rerun_skips_the_cases_done_and_predicts_only_new_or_changed_ones(
    pngs, classifier, sequential, copy_subset, tmp_path,
):
    names = sorted(p.name for p in pngs.iterdir())
    src = copy_subset(pngs, tmp_path / "src", names[:12])
    out = tmp_path / "out"
    first = batch_predict(classifier, src, out, workers=1)
    assert first.resumed == 0 and len(first.predicted) == 12
    copy_subset(pngs, src, names[12:])
    os.utime(src / names[0], ns=(1, 1))  # a changed input (new stat) is predicted again
    again = batch_predict(classifier, src, out, workers=1)
    assert again.resumed == 11 and again.timings["cases"] == 9
    lines = manifest_lines(out)
    assert len(lines) == 21 and len({r["case"] for r in lines}) == 20  # the changed input's line replaces its first
    assert (out / "predictions.csv").read_bytes() == (sequential / "predictions.csv").read_bytes()
    assert len(Manifest(out).records) == 20


def test_a_manifest_line_cut_by_a_kill_is_not_a_done_case(tmp_path):
    with Manifest(tmp_path) as m:
        m.add_many([{"case": "a", "size": 1, "mtime_ns": 1}, {"case": "b", "size": 1, "mtime_ns": 1}])
        assert m.add({"case": "a", "size": 1, "mtime_ns": 1}) is False  # a second delivery is not recorded
    text = (tmp_path / MANIFEST).read_text()
    (tmp_path / MANIFEST).write_text(text + '{"case": "c", "si')  # killed in the middle of a line
    with Manifest(tmp_path) as m:
        assert sorted(m.records) == ["a", "b"] and m.done("a", (1, 1)) and not m.done("a", (2, 1))
        m.add({"case": "c", "size": 1, "mtime_ns": 1})
    assert [json.loads(x)["case"] for x in (tmp_path / MANIFEST).read_text().splitlines()] == ["a", "b", "c"]


class _Result:
    """A result whose second file fails with a full disk after the first was written."""

    has_table = False
    warnings: list = []

    def write(self, dst, name, *, formats=()):
        (Path(dst) / f"{name}.nii.gz").write_bytes(b"label map")
        (Path(dst) / f"{name}.half").write_bytes(b"hal")
        raise OSError(errno.ENOSPC, "No space left on device")

    def measurements(self):
        return []


def test_a_full_disk_leaves_no_half_written_file_and_no_record(tmp_path):
    from deepmia.engine.batch import InputItem

    src = tmp_path / "case.png"
    src.write_bytes(b"x")
    out = tmp_path / "out"
    (out / STATE_DIR / "tmp").mkdir(parents=True)
    with pytest.raises(WriteError, match="case.png.*No space left"):
        write_case(BatchJob("model", str(out)), InputItem(src, "case.png"), _Result(), writers=[], seconds=0.1)
    assert [p.name for p in out.iterdir()] == [STATE_DIR]  # nothing under a final name
    assert not any((out / STATE_DIR / "tmp").iterdir())  # the temporary files are gone


def test_a_manifest_that_cannot_be_appended_records_nothing(tmp_path, monkeypatch):
    with Manifest(tmp_path) as m:
        def full(_fd):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "fsync", full)
        with pytest.raises(WriteError, match="No space left"):
            m.add({"case": "a", "size": 1, "mtime_ns": 1})
        assert not m.done("a")


def _mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from deepmia.cli.main import entry; entry()", *args],
                          capture_output=True, text=True, timeout=300)


def test_a_read_only_output_folder_is_an_error_before_any_prediction(pngs, classifier, tmp_path):
    out = tmp_path / "ro"
    if _mount_tmpfs(out, "size=1m,ro"):
        unmount = True
    elif os.geteuid() != 0:
        out.chmod(0o555)
        unmount = False
    else:
        pytest.skip("root ignores file modes and mounting a read-only tmpfs is not permitted here")
    try:
        done = _cli("batch", "predict", str(classifier), "--input", str(pngs), "--out", str(out))
        assert done.returncode == 2, done.stderr
        assert "cannot write in the output folder" in done.stderr and str(out) in done.stderr
    finally:
        if unmount:
            subprocess.run(["umount", str(out)], check=False)


def test_a_full_disk_mid_run_is_an_error_and_only_complete_cases_are_done(png_writer, classifier, tmp_path):
    out = tmp_path / "full"
    if not _mount_tmpfs(out, "size=48k"):
        pytest.skip("mounting a small tmpfs is not permitted here")
    try:
        # one case's outputs + its kept result is about 1 kB; 200 cases cannot fit in 48 kB with the manifest
        src = png_writer(tmp_path / "src", 200)
        done = _cli("batch", "predict", str(classifier), "--input", str(src), "--out", str(out), "--workers", "1")
        assert done.returncode == 2, done.stdout + done.stderr
        assert "No space left" in done.stderr
        records = Manifest(out).records if (out / MANIFEST).exists() else {}
        for name, r in records.items():  # every case said done has its kept result in full
            assert (out / r["part"]).stat().st_size > 100, name
        assert len(records) < 200
    finally:
        subprocess.run(["umount", str(out)], check=False)


def test_an_input_that_is_neither_a_path_nor_a_query_is_refused(classifier, tmp_path):
    with pytest.raises(InvalidArgumentError, match="catalog query"):
        batch_predict(classifier, str(tmp_path / "nothing"), tmp_path / "out")
    with pytest.raises(InvalidArgumentError, match="KEY=VALUE"):
        batch_predict(classifier, "colour=red", tmp_path / "out", db=str(tmp_path / "c.sqlite"))


def test_a_second_run_into_a_folder_in_use_is_refused(pngs, classifier, tmp_path):
    import fcntl

    out = tmp_path / "out"
    (out / STATE_DIR).mkdir(parents=True)
    with (out / STATE_DIR / "lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running batch holds it
        with pytest.raises(InvalidArgumentError, match="another batch run"):
            batch_predict(classifier, pngs, out)
    assert not (out / MANIFEST).exists()


def test_a_worker_keeps_its_thread_count_after_loading_a_model_that_sets_every_core(tmp_path):
    """The segmentation predictor sets torch to every core when it loads: a worker of a 2-worker pool on 2 cores
    then ran 2 threads each and the pool was slower than one process (0.14 vs 0.19 hippocampus cases/s)."""
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        BatchJob("hippocampus", str(tmp_path), threads=1).load()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
