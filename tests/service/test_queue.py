"""The persistent job queue (deepmia.jobs): atomic claims, exactly-once completion, recovery, cancel, limits."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from deepmia.data.catalog import open_catalog
from deepmia.data.catalog.models import Job, JobOutput
from deepmia.jobs import QueueFullError, cancel, claim, fail, finish, heartbeat, recover, submit


@pytest.fixture
def catalog(db_url):
    with open_catalog(db_url) as c:
        yield c


def _state(catalog, job_id):
    with catalog.session() as s:
        job = s.get(Job, job_id)
        return job.status, job.attempts, job.error


def test_racing_workers_never_claim_one_job_twice(catalog):
    ids = [submit(catalog, "quality", {"n": i}, "alice") for i in range(30)]
    claimed: list[int] = []
    lock = threading.Lock()

    def work(name):
        while (job := claim(catalog, name)) is not None:
            with lock:
                claimed.append(job.id)
            assert finish(catalog, job.id, job.attempt)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == ids
    assert all(_state(catalog, i)[0] == "done" for i in ids)


def test_a_job_is_done_once_and_a_lost_attempt_records_nothing(catalog):
    job_id = submit(catalog, "quality", {}, "bob")
    first = claim(catalog, "host:1")
    # its worker is presumed dead: requeued, claimed again as attempt 2
    assert recover(catalog, stale_after=timedelta(seconds=-1)) == [(job_id, "queued")]
    second = claim(catalog, "host:2")
    assert (first.attempt, second.attempt) == (1, 2)
    assert heartbeat(catalog, job_id, first.attempt) == "lost"
    assert not finish(catalog, job_id, first.attempt, outputs=[{"kind": "other", "name": "a", "media_type": "x",
                                                               "path": "/nonexistent"}])
    assert finish(catalog, job_id, second.attempt, outputs=[{"kind": "other", "name": "b", "media_type": "x",
                                                             "path": "/p"}])
    assert not finish(catalog, job_id, second.attempt)
    with catalog.session() as s:
        assert [o.name for o in s.query(JobOutput).filter_by(job_id=job_id)] == ["b"]


def test_a_job_orphaned_twice_fails_with_the_reason(catalog):
    job_id = submit(catalog, "quality", {}, None)
    for _ in range(2):
        assert claim(catalog, "gone:1") is not None
        recover(catalog, stale_after=timedelta(seconds=-1))
    status, attempts, error = _state(catalog, job_id)
    assert (status, attempts) == ("failed", 2) and "2 times" in error


def test_cancel_a_queued_job_at_once_and_a_running_one_through_its_worker(catalog):
    queued, running = submit(catalog, "quality", {}, "u"), submit(catalog, "quality", {}, "u")
    assert cancel(catalog, queued) == "cancelled"
    job = claim(catalog, "w")
    assert job.id == running
    assert cancel(catalog, running) == "running"
    assert heartbeat(catalog, running, job.attempt) == "cancel"
    assert cancel(catalog, 10**6) is None
    assert claim(catalog, "w") is None


def test_per_user_limits(catalog):
    a1, a2, b1 = (submit(catalog, "quality", {}, user) for user in ("a", "a", "b"))
    assert claim(catalog, "w", per_user_limit=1).id == a1
    assert claim(catalog, "w", per_user_limit=1).id == b1  # a's second waits while a1 runs
    assert claim(catalog, "w", per_user_limit=1) is None
    with pytest.raises(QueueFullError, match="limit 2"):
        submit(catalog, "quality", {}, "a", max_active=2)
    job = claim(catalog, "w")
    assert job.id == a2 and fail(catalog, a2, job.attempt, "boom")
    assert _state(catalog, a2)[0] == "failed"


def test_a_server_stopping_on_purpose_puts_its_jobs_back_uncounted(catalog):
    from deepmia.jobs import release

    job_id = submit(catalog, "quality", {}, "u")
    assert claim(catalog, "host:7:0").attempt == 1
    assert release(catalog, ["host:7:0"]) == 1
    assert _state(catalog, job_id)[:2] == ("queued", 0)
    assert claim(catalog, "host:8:0").attempt == 1
