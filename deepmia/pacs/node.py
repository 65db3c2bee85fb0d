"""The PACS node: a C-STORE SCP that files what it receives, routes complete series to models, and sends results.

Three parts run side by side:

- the **listener** (pynetdicom, one thread per association) checks and files every instance, or quarantines it
  with the reason (:mod:`deepmia.pacs.store`); associations from AE titles not in ``accept_calling_ae`` are
  rejected;
- the **worker** waits until a series has had no new instance for ``settle_seconds``, routes it by the rules
  (no rule: stored and logged, no job), indexes it in the catalog and submits a ``pacs-predict`` job to the
  shared queue (:mod:`deepmia.jobs`), claims it, predicts with the route's model through the batch loop and
  writes SEG + SR (+ PDF) with :func:`deepmia.report.dicom.dicom_outputs`, recording a ``predictions`` row;
- the **courier** sends each job's DICOM outputs to its destinations (C-STORE or STOW-RS), retrying with
  exponential back-off while a destination is down; the outbox is on disk (:mod:`deepmia.pacs.jobs`), so
  queued deliveries survive a restart.

Example:
    >>> from deepmia.pacs.node import PacsNode              # doctest: +SKIP
    >>> node = PacsNode(load_config("pacs.yaml"), catalog)   # doctest: +SKIP
    >>> node.serve_forever()                                 # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepmia.data.catalog import Catalog
from deepmia.errors import CorruptFileError, DeepmiaError

from .config import PacsConfig, Route
from .jobs import KIND, USER, Delivery, Outbox, note_delivery, series_id
from .network import DeliveryError, send_dicom, send_dicomweb
from .store import Storage, series_attributes

__all__ = ["PacsNode"]

log = logging.getLogger("deepmia.pacs")
_REFUSED = 0xC000  # "Error: cannot understand": the instance is kept in quarantine
HEARTBEAT_S = 5.0  # a running job's heartbeat (the queue presumes a job orphaned after 30 s without one)
#: Series that are never routed: results and documents, not images (deepmia's own outputs coming back included).
NOT_IMAGES = frozenset({"SEG", "SR", "DOC", "KO", "PR", "RTSTRUCT", "REG", "PLAN"})


@dataclass
class _Arriving:
    folder: Path
    attributes: dict[str, str]
    calling_ae: str
    last: float  # monotonic time of the last new instance
    last_wall: float  # the same, as epoch seconds (recorded in the job)
    count: int
    settled_wall: float = 0.0  # when the series was found complete, epoch seconds


class PacsNode:
    """A running DICOM node (see the module docstring).

    Args:
        config: The checked configuration (:func:`deepmia.pacs.config.load_config`).
        catalog: The open catalog where jobs and predictions are recorded.
    """

    def __init__(self, config: PacsConfig, catalog: Catalog) -> None:
        self.config = config
        self.catalog = catalog
        self.storage = Storage(config.storage)
        self._arriving: dict[str, _Arriving] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: Any = None
        self._predictors: dict[tuple[str, bool | None], Any] = {}
        self.outbox = Outbox(self.storage.outbox)
        self.ready = threading.Event()  # set once the routes' models are loaded (at once without warm-up)
        self.worker = ""
        self.port: int | None = None

    # --- lifecycle -------------------------------------------------------------------------------------------

    def start(self, *, warm_up: bool = True) -> PacsNode:
        """Start listening, routing and sending (returns at once); resumes the work a stopped node left.

        Args:
            warm_up: Load the routes' models in the background now, not at the first job.
        """
        from deepmia.jobs import recover, worker_name

        self.worker = worker_name("pacs")
        for job_id, state in recover(self.catalog):
            log.info("job %d, left running by a stopped node: %s", job_id, state)
        self._recover_series()
        self._recover_outbox()
        self._server = self._application_entity().start_server(
            (self.config.host, self.config.port), block=False, evt_handlers=self._handlers())
        self.port = int(self._server.server_address[1])
        if not warm_up:
            self.ready.set()
        for name, target, first in (("pacs-worker", self._work, self.warm_up if warm_up else None),
                                    ("pacs-courier", self._deliver, None)):
            thread = threading.Thread(target=self._loop, args=(target, first), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("listening as %s on %s:%d, storing in %s", self.config.ae_title, self.config.host, self.port,
                 self.storage.root)
        return self

    def stop(self) -> None:
        """Stop listening, abort the associations still open, and let the worker and courier finish their step."""
        self._stop.set()
        if self._server is not None:
            server, self._server = self._server, None
            server.shutdown()  # accepts no new association
            for assoc in server.active_associations:  # an idle peer would hold the exit for the network timeout
                log.info("aborting the association from %s", assoc.requestor.ae_title)
                assoc.abort()
        for thread in self._threads:
            thread.join(timeout=600)
        self._threads = []
        if self.worker:
            from deepmia.jobs import release

            release(self.catalog, [self.worker])  # a job cut short by the stop is queued again, uncounted

    def serve_forever(self) -> None:
        """Start and run until interrupted (Ctrl-C)."""
        self.start()
        try:
            while not self._stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            log.info("stopping")
        finally:
            self.stop()

    def __enter__(self) -> PacsNode:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _loop(self, step: Any, first: Any = None) -> None:
        if first is not None:
            first()
        while not self._stop.is_set():
            try:
                busy = step()
            except Exception:  # noqa: BLE001 -- the node keeps running; the problem is logged with its traceback
                log.exception("unexpected error in %s", threading.current_thread().name)
                busy = False
            if not busy:
                self._stop.wait(self.config.poll_seconds)

    # --- listener --------------------------------------------------------------------------------------------

    def _application_entity(self) -> Any:
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        ae = AE(ae_title=self.config.ae_title)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        ae.require_calling_aet = list(self.config.accept_calling_ae)
        return ae

    def _handlers(self) -> list[Any]:
        from pynetdicom import evt

        return [(evt.EVT_C_STORE, self._on_store), (evt.EVT_C_ECHO, lambda _e: 0x0000),
                (evt.EVT_REJECTED, self._on_rejected)]

    def _on_rejected(self, event: Any) -> None:
        log.warning("association from %s (%s) rejected: calling AE title not accepted",
                    event.assoc.requestor.ae_title, event.assoc.requestor.address)

    def _on_store(self, event: Any) -> int:
        calling = str(event.assoc.requestor.ae_title)
        try:
            data = event.encoded_dataset()
        except Exception:  # noqa: BLE001 -- an undecodable request: keep its raw bytes
            data = bytes(event.request.DataSet.getvalue()) if event.request.DataSet is not None else b""
        try:
            ds, path, new = self.storage.file(data)
        except CorruptFileError as exc:
            self._quarantine(data, exc.problem, calling, event)
            return _REFUSED
        except Exception as exc:  # noqa: BLE001 -- whatever goes wrong, the instance is kept and the node runs on
            self._quarantine(data, f"{type(exc).__name__}: {exc}", calling, event)
            return _REFUSED
        if new:
            self._arrived(ds, path, calling)
        return 0x0000

    def _quarantine(self, data: bytes, reason: str, calling: str, event: Any) -> None:
        sop = str(getattr(event.request, "AffectedSOPInstanceUID", "") or "")
        where = self.storage.quarantine(data, reason, calling_ae=calling, sop_instance_uid=sop,
                                        peer=str(event.assoc.requestor.address))
        log.warning("instance %s from %s quarantined (%s): %s", sop or "?", calling, where.name, reason)

    def _arrived(self, ds: Any, path: Path, calling: str) -> None:
        uid = str(ds.SeriesInstanceUID)
        with self._lock:
            entry = self._arriving.get(uid)
            if entry is None:
                entry = self._arriving[uid] = _Arriving(path.parent, series_attributes(ds), calling, 0.0, 0.0, 0)
                self._marker(uid).unlink(missing_ok=True)  # new instances: the series is routed again
            entry.last, entry.last_wall, entry.count = time.monotonic(), time.time(), entry.count + 1

    def _recover_series(self) -> None:
        """Series received before a stop but never routed: they settle again from now."""
        import pydicom

        for folder in sorted(p for p in self.storage.incoming.glob("*/*") if p.is_dir()):
            files = sorted(folder.glob("*.dcm"))
            if self._marker(folder.name).exists() or not files:
                continue
            ds = pydicom.dcmread(files[0], stop_before_pixels=True)
            self._arriving[folder.name] = _Arriving(folder, series_attributes(ds), "", time.monotonic(),
                                                    time.time(), len(files))

    # --- worker: settle, route, predict ----------------------------------------------------------------------

    def _work(self) -> bool:
        from deepmia.jobs import claim

        settled = self._settled()
        for entry in settled:
            self._route(entry)
        claimed = claim(self.catalog, self.worker, kinds=[KIND])
        if claimed is not None:
            self._run_job(claimed)
        return bool(settled) or claimed is not None

    def _settled(self) -> list[_Arriving]:
        moment = time.monotonic()
        with self._lock:
            done = [uid for uid, e in self._arriving.items() if moment - e.last >= self.config.settle_seconds]
            settled = [self._arriving.pop(uid) for uid in done]
        for entry in settled:
            entry.settled_wall = time.time()
        return settled

    def _marker(self, series_uid: str) -> Path:
        return self.storage.routing / f"{series_uid}.json"

    def _route(self, entry: _Arriving) -> int | None:
        from deepmia.data.catalog import scan
        from deepmia.jobs import submit

        attrs = entry.attributes
        own = attrs.get("Modality", "").upper() in NOT_IMAGES or attrs.get("Manufacturer") == "deepmia"
        route = None if own else self.config.route_for(attrs)
        described = (f"series {attrs['SeriesInstanceUID']} ({attrs['Modality'] or '?'}, "
                     f"{attrs['SeriesDescription']!r}, {entry.count} instance(s)) of study {attrs['StudyInstanceUID']}")
        note: dict[str, Any] = {"attributes": attrs, "folder": str(entry.folder), "instances": entry.count}
        if route is None:
            why = "not an image series (results are never routed)" if own else "no routing rule matches"
            log.info("%s: %s: stored in %s, no job", why, described, entry.folder)
            self._marker(attrs["SeriesInstanceUID"]).write_text(
                json.dumps({"status": "unrouted", "reason": why, **note}, indent=1) + "\n", encoding="utf-8")
            return None
        scan(self.catalog, entry.folder, workers=1)  # the job and its prediction point at the indexed series
        job_id = submit(self.catalog, KIND, self._params(entry, route), USER,
                        series_id=series_id(self.catalog, attrs["SeriesInstanceUID"]))
        log.info("%s -> route %r (model %s): job %d", described, route.name, route.model, job_id)
        self._marker(attrs["SeriesInstanceUID"]).write_text(
            json.dumps({"status": "routed", "route": route.name, "job": job_id, **note}, indent=1) + "\n",
            encoding="utf-8")
        return job_id

    def _params(self, entry: _Arriving, route: Route) -> dict[str, Any]:
        return {
            "study_uid": entry.attributes["StudyInstanceUID"], "series_uid": entry.attributes["SeriesInstanceUID"],
            "series_dir": str(entry.folder), "route": route.name, "model": route.model, "tta": route.tta,
            "destinations": [d.name for d in self.config.destinations_of(route)], "calling_ae": entry.calling_ae,
            "instances": entry.count, "last_instance_at": entry.last_wall, "settled_at": entry.settled_wall,
        }

    def _predictor(self, model: str, tta: bool | None) -> Any:
        if (model, tta) not in self._predictors:
            from deepmia.tasks import load_predictor

            options = {"tta": tta} if tta is not None else {}
            self._predictors[model, tta] = load_predictor(model, device=self.config.device, **options)
        return self._predictors[model, tta]

    def warm_up(self) -> None:
        """Load every route's model now (a model that fails to load is logged; its jobs fail with the reason)."""
        for route in self.config.routes:
            try:
                self._predictor(route.model, route.tta)
            except DeepmiaError as exc:
                log.warning("route %r: model not loaded: %s", route.name, exc)
        self.ready.set()

    def _run_job(self, job: Any) -> None:
        from deepmia.jobs import fail, finish, heartbeat, mark_cancelled

        beating = threading.Event()

        def beat() -> None:
            while not beating.wait(HEARTBEAT_S):
                heartbeat(self.catalog, job.id, job.attempt)

        threading.Thread(target=beat, name=f"pacs-heartbeat-{job.id}", daemon=True).start()
        try:
            outputs, result, prediction = self._predict(job.id, job.params)
        except Exception as exc:  # noqa: BLE001 -- a job's failure is recorded; the node keeps running
            reason = str(exc) if isinstance(exc, DeepmiaError) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, DeepmiaError):
                log.exception("job %d failed", job.id)
            log.warning("job %d failed: %s", job.id, reason)
            fail(self.catalog, job.id, job.attempt, reason)
            return
        finally:
            beating.set()
        state = heartbeat(self.catalog, job.id, job.attempt)  # cancelled by a user, or requeued, meanwhile?
        if state == "cancel":
            mark_cancelled(self.catalog, job.id, job.attempt)
            log.info("job %d cancelled by a user: its results are not sent", job.id)
            return
        if state == "lost":
            log.warning("job %d is no longer this node's (requeued meanwhile): its results are not sent", job.id)
            return
        deliveries = [Delivery(job.id, name, result["files"]) for name in job.params["destinations"]]
        result["deliveries"] = {d.destination: {"status": d.status, "attempts": 0} for d in deliveries}

        def add_prediction(session: Any, job_id: int) -> None:
            from deepmia.data.catalog.models import Prediction

            if job.series_id is not None:
                session.add(Prediction(series_id=job.series_id, job_id=job_id, created_at=_utcnow(), **prediction))

        if finish(self.catalog, job.id, job.attempt, outputs=outputs, result=result, also=add_prediction):
            for delivery in deliveries:  # after the job is recorded: a crash in between is mended by start()
                self.outbox.put(delivery)

    def _recover_outbox(self) -> None:
        """Queue the deliveries a done job lists as queued but the outbox lacks (a stop between the two writes)."""
        from sqlalchemy import select

        from deepmia.data.catalog.models import Job

        have = {(d.job, d.destination) for d in self.outbox.all()}
        with self.catalog.session() as s:
            done = s.execute(select(Job.id, Job.result).where(Job.kind == KIND, Job.status == "done")).all()
        for job_id, result in done:
            for name, state in (result or {}).get("deliveries", {}).items():
                if state.get("status") == "queued" and (job_id, name) not in have:
                    self.outbox.put(Delivery(job_id, name, list(result.get("files", []))))
                    log.info("job %d -> %s: delivery queued again after a stop", job_id, name)

    def _predict(self, job_id: int, params: dict[str, Any]) -> tuple[list[dict], dict[str, Any], dict[str, Any]]:
        """Predict a job's series; its outputs (queue rows), result summary and predictions row values."""
        from deepmia.engine.batch import run_batch
        from deepmia.report.dicom import dicom_writer

        started = time.time()
        out = self.storage.results / f"job-{job_id}"
        predictor = self._predictor(params["model"], params.get("tta"))
        report = run_batch(predictor, params["series_dir"], out, writers=[dicom_writer(params["model"])],
                           options={"pacs_job": job_id})
        record = json.loads(report.record.read_text(encoding="utf-8"))
        model_seconds = sum(float(i.get("seconds") or 0) for i in record.get("inputs", []))
        files = sorted(str(p) for p in report.outputs if p.suffix == ".dcm" and p.parent.name == "dicom")
        outputs = [{"kind": "dicom" if str(p) in files else "other", "name": p.name,
                    "media_type": "application/dicom" if p.suffix == ".dcm" else "application/octet-stream",
                    "path": p} for p in [*report.outputs, report.record]]
        result = {"task": predictor.task, "outputs": str(out), "files": files, "predict_started_at": started,
                  "model_seconds": model_seconds, "outputs_at": time.time(), "skipped": report.skipped}
        prediction = {"task": predictor.task, "model": Path(params["model"]).name, "path": str(out),
                      "scores": _scores(out / "measurements.csv")}
        log.info("job %d predicted in %.1f s (model %.1f s): %d DICOM object(s) for %s", job_id,
                 time.time() - started, model_seconds, len(files), ", ".join(params["destinations"]) or "no one")
        return outputs, result, prediction

    # --- courier: deliveries with retries --------------------------------------------------------------------

    def _deliver(self) -> bool:
        pending = self.outbox.due()
        for delivery in pending:
            if self._stop.is_set():
                break
            self._attempt(delivery)
        return bool(pending)

    def _attempt(self, delivery: Delivery) -> None:
        destination = {d.name: d for d in self.config.destinations}.get(delivery.destination)
        retry = self.config.retry
        delivery.attempts += 1
        try:
            if destination is None:
                raise DeliveryError(f"destination {delivery.destination!r} is no longer in the configuration")
            missing = [f for f in delivery.files if not Path(f).is_file()]
            if missing:
                raise DeliveryError(f"{len(missing)} output file(s) are gone", path=missing[0])
            if destination.dicom:
                report = send_dicom(delivery.files, destination.address, calling_ae=self.config.ae_title,
                                    timeout=retry.timeout_seconds)
            else:
                report = send_dicomweb(delivery.files, str(destination.dicomweb), timeout=retry.timeout_seconds)
            report.raise_for_failures(destination.name)
        except (DeliveryError, OSError) as exc:
            permanent = destination is None or (retry.max_attempts and delivery.attempts >= retry.max_attempts)
            delivery.error = str(exc)
            if permanent:
                delivery.status = "failed"
            else:
                delivery.next_try = time.time() + retry.delay(delivery.attempts)
            log.warning("job %d -> %s: attempt %d failed (%s); %s", delivery.job, delivery.destination,
                        delivery.attempts, exc, "given up" if permanent else
                        f"next try in {retry.delay(delivery.attempts):.0f} s")
        else:
            delivery.status, delivery.error, delivery.sent_at = "sent", None, time.time()
            log.info("job %d -> %s: %d object(s) sent", delivery.job, delivery.destination, len(delivery.files))
        self.outbox.put(delivery)
        note_delivery(self.catalog, delivery)


def _utcnow() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC).replace(tzinfo=None)


def _scores(table: Path) -> dict[str, Any]:
    """The measurements of a prediction as ``{"<target> <quantity>": {"value", "unit"}}``."""
    import csv

    scores: dict[str, Any] = {}
    if table.is_file():
        with table.open(encoding="utf-8") as f:
            for row in csv.DictReader(f):
                try:
                    scores[f"{row['target']} {row['quantity']}".strip()] = {"value": float(row["value"]),
                                                                            "unit": row["unit"]}
                except (KeyError, ValueError):
                    continue
    return scores
