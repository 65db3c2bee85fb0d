"""DICOM networking: send files (C-STORE or DICOMweb STOW-RS), pull a study (C-GET, C-MOVE or QIDO/WADO-RS).

Example:
    >>> from deepmia.pacs.network import list_files
    >>> list_files([])
    []
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepmia.errors import DeepmiaError, InvalidArgumentError

from .config import Address
from .store import UID_PATTERN

__all__ = ["DeliveryError", "SendReport", "list_files", "send_dicom", "send_dicomweb", "send", "pull_dicom",
           "pull_dicom_move", "pull_dicomweb", "echo"]

log = logging.getLogger("deepmia.pacs")
_SUCCESS_OR_WARNING = {0x0000, 0xB000, 0xB006, 0xB007, 0x0001, 0x0107, 0x0116}


class DeliveryError(DeepmiaError):
    """A peer could not be reached, refused the association, or refused objects."""


@dataclass
class SendReport:
    """What a send did: the files stored and those refused (file, reason)."""

    sent: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    def raise_for_failures(self, where: str) -> None:
        """Raise :class:`DeliveryError` when a file was refused."""
        if self.failed:
            path, reason = self.failed[0]
            more = f" (and {len(self.failed) - 1} more)" if len(self.failed) > 1 else ""
            raise DeliveryError(f"{where} refused {path.name}: {reason}{more}", path=path)


def list_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The files named, and the files below the folders named (hidden ones left out), in order."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file()
                          and not any(part.startswith(".") for part in f.relative_to(p).parts))
        elif p.is_file():
            out.append(p)
        else:
            raise InvalidArgumentError("no such file or folder", path=p)
    return out


def _file_meta(files: Sequence[Path]) -> tuple[list[tuple[Path, str, str]], list[tuple[Path, str]]]:
    """(file, SOP class, transfer syntax) of the DICOM files; the others with the reason."""
    from pydicom.errors import InvalidDicomError
    from pydicom.filereader import read_file_meta_info

    found, refused = [], []
    for path in files:
        try:
            meta = read_file_meta_info(path)
            found.append((path, str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)))
        except (InvalidDicomError, AttributeError, OSError, EOFError) as exc:
            refused.append((path, f"not a DICOM file with a file meta header ({type(exc).__name__})"))
    return found, refused


def _association(address: Address, contexts: list[Any], calling_ae: str, timeout: float, **kwargs: Any) -> Any:
    from pynetdicom import AE

    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout
    ae.requested_contexts = contexts
    assoc = ae.associate(address.host, address.port, ae_title=address.ae_title, **kwargs)
    if not assoc.is_established:
        if assoc.is_rejected:
            why = "rejected the association"
            fix = f"ask its administrator to accept AE title {calling_ae} from this host"
        else:  # pynetdicom reports a refused connection as an abort
            why, fix = "could not be reached (or closed the connection)", "check that it runs at this host and port"
        raise DeliveryError(f"{address.ae_title}@{address.host}:{address.port} {why}", fix=fix)
    return assoc


def send_dicom(files: Sequence[str | os.PathLike[str]], address: Address, *, calling_ae: str = "DEEPMIA",
               timeout: float = 30.0) -> SendReport:
    """C-STORE ``files`` to a DICOM node, each in its own transfer syntax (sent without decoding).

    Raises:
        DeliveryError: The node cannot be reached or refuses the association.
    """
    from pynetdicom import _config as pynetdicom_config
    from pynetdicom.presentation import build_context

    # Files go as they are, read in chunks: never decoded and re-encoded (pynetdicom's documented switch).
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
    found, refused = _file_meta([Path(f) for f in files])
    report = SendReport(failed=list(refused))
    if not found:
        return report
    # One presentation context per (SOP class, transfer syntax): an SCP accepts one syntax per context.
    pairs = sorted({(sop, syntax) for _, sop, syntax in found})
    if len(pairs) > 128:
        raise InvalidArgumentError(f"{len(pairs)} kinds of objects in one send; DICOM allows 128 per association",
                                   fix="send fewer kinds of objects at a time")
    contexts = [build_context(sop, syntax) for sop, syntax in pairs]
    assoc = _association(address, contexts, calling_ae, timeout)
    try:
        for path, _, _ in found:
            try:
                status = assoc.send_c_store(path)
            except (ValueError, AttributeError, OSError) as exc:
                report.failed.append((path, str(exc)))
                continue
            code = int(getattr(status, "Status", -1)) if status else -1
            if code in _SUCCESS_OR_WARNING:
                report.sent.append(path)
            else:
                report.failed.append((path, "no answer" if code == -1 else f"status 0x{code:04X}"))
            if not assoc.is_established:
                raise DeliveryError(f"{address.ae_title} dropped the association while sending", path=path)
    finally:
        if assoc.is_established:
            assoc.release()
    return report


def _web_client(url: str, timeout: float) -> Any:
    from dicomweb_client.api import DICOMwebClient

    return DICOMwebClient(url=url.rstrip("/"), timeout=timeout)


def send_dicomweb(files: Sequence[str | os.PathLike[str]], url: str, *, timeout: float = 30.0) -> SendReport:
    """STOW-RS ``files`` to a DICOMweb service (``url`` is its root, e.g. ``http://host:8042/dicom-web``).

    Raises:
        DeliveryError: The service cannot be reached or refuses the request.
    """
    import pydicom
    import requests

    found, refused = _file_meta([Path(f) for f in files])
    report = SendReport(failed=list(refused))
    if not found:
        return report
    client = _web_client(url, timeout)
    datasets = [pydicom.dcmread(p) for p, _, _ in found]
    try:
        client.store_instances(datasets=datasets)
    except requests.RequestException as exc:
        raise DeliveryError(f"STOW-RS to {url} failed: {exc}", fix="check that the DICOMweb service runs") from None
    report.sent += [p for p, _, _ in found]
    return report


def send(files: Sequence[str | os.PathLike[str]], to: str, *, calling_ae: str = "DEEPMIA",
         timeout: float = 30.0) -> SendReport:
    """Send ``files`` to ``to``: ``AE@host:port`` (C-STORE) or an http(s) DICOMweb root (STOW-RS)."""
    from .config import parse_address

    if to.startswith(("http://", "https://")):
        return send_dicomweb(files, to, timeout=timeout)
    return send_dicom(files, parse_address(to), calling_ae=calling_ae, timeout=timeout)


def _save(ds: Any, out: Path) -> Path:
    series = str(ds.get("SeriesInstanceUID", "unknown"))
    sop = str(ds.get("SOPInstanceUID", ""))
    if not UID_PATTERN.fullmatch(series) or not UID_PATTERN.fullmatch(sop):
        raise DeliveryError(f"received an instance with invalid UIDs (series {series!r}, instance {sop!r})")
    path = out / series / f"{sop}.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _storing(out: Path, written: list[Path]) -> Callable[[Any], int]:
    """A C-STORE handler that saves each received instance under ``out`` and lists it in ``written``."""

    def on_store(event: Any) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        written.append(_save(ds, out))
        return 0x0000

    return on_store


def pull_dicom(study_uid: str, address: Address, out: str | os.PathLike[str], *, calling_ae: str = "DEEPMIA",
               timeout: float = 60.0) -> list[Path]:
    """C-GET a study from a DICOM node into ``out/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``.

    Raises:
        DeliveryError: The node cannot be reached, refuses, or the retrieve fails.
    """
    from pydicom.dataset import Dataset
    from pynetdicom import StoragePresentationContexts, build_role, evt
    from pynetdicom.presentation import build_context
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet  # type: ignore[attr-defined]

    written: list[Path] = []
    on_store = _storing(Path(out), written)

    storage = [build_context(c.abstract_syntax) for c in StoragePresentationContexts[:127]]
    roles = [build_role(c.abstract_syntax, scp_role=True) for c in storage]
    contexts = [build_context(StudyRootQueryRetrieveInformationModelGet), *storage]
    assoc = _association(address, contexts, calling_ae, timeout, ext_neg=roles,
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    try:
        last = None
        for status, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet):
            last = int(status.Status) if status else None
    finally:
        if assoc.is_established:
            assoc.release()
    if last not in (0x0000, 0xB000):
        raise DeliveryError(f"C-GET of study {study_uid} from {address.ae_title} ended with "
                            f"{'no answer' if last is None else f'status 0x{last:04X}'} ({len(written)} received)",
                            fix=f"check the study UID, and that {address.ae_title} allows C-GET by {calling_ae}")
    if not written:
        raise DeliveryError(f"{address.ae_title} sent no instance of study {study_uid}",
                            fix="check the study UID (deepmia pacs pull takes the StudyInstanceUID)")
    return written


def pull_dicom_move(study_uid: str, address: Address, out: str | os.PathLike[str], *, port: int,
                    calling_ae: str = "DEEPMIA", host: str = "0.0.0.0", timeout: float = 60.0) -> list[Path]:
    """C-MOVE a study from a DICOM node to ourselves: a storage SCP on ``port`` receives it into ``out``.

    The node must know ``calling_ae`` (the move destination) with this host and ``port``.

    Raises:
        DeliveryError: The node cannot be reached, refuses, or the move fails.
    """
    from pydicom.dataset import Dataset
    from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
    from pynetdicom.presentation import build_context
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove  # type: ignore[attr-defined]

    written: list[Path] = []
    on_store = _storing(Path(out), written)

    scp = AE(ae_title=calling_ae)
    for context in AllStoragePresentationContexts:
        scp.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    server = scp.start_server((host, port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        assoc = _association(address, [build_context(StudyRootQueryRetrieveInformationModelMove)], calling_ae,
                             timeout)
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study_uid
        last = None
        try:
            for status, _ in assoc.send_c_move(query, calling_ae, StudyRootQueryRetrieveInformationModelMove):
                last = int(status.Status) if status else None
        finally:
            if assoc.is_established:
                assoc.release()
    finally:
        server.shutdown()
    if last not in (0x0000, 0xB000) or not written:
        raise DeliveryError(f"C-MOVE of study {study_uid} from {address.ae_title} to {calling_ae} ended with "
                            f"{'no answer' if last is None else f'status 0x{last:04X}'} ({len(written)} received)",
                            fix=f"check the study UID, and that {address.ae_title} knows {calling_ae} at this "
                                f"host and port {port}")
    return written


def pull_dicomweb(study_uid: str, url: str, out: str | os.PathLike[str], *, timeout: float = 60.0) -> list[Path]:
    """Retrieve a study over DICOMweb (QIDO-RS for its series, WADO-RS for the instances) into ``out``.

    Raises:
        DeliveryError: The service cannot be reached, or has no such study.
    """
    import requests

    client = _web_client(url, timeout)
    try:
        found = client.search_for_series(study_instance_uid=study_uid)
        if not found:
            raise DeliveryError(f"{url} holds no instance of study {study_uid}", fix="check the study UID")
        datasets = client.retrieve_study(study_uid)
    except requests.RequestException as exc:
        raise DeliveryError(f"DICOMweb retrieve from {url} failed: {exc}") from None
    return [_save(ds, Path(out)) for ds in datasets]


def echo(address: Address, *, calling_ae: str = "DEEPMIA", timeout: float = 10.0) -> bool:
    """C-ECHO a node; True when it answers with success."""
    from pynetdicom.presentation import build_context
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    try:
        assoc = _association(address, [build_context(Verification)], calling_ae, timeout)
    except DeliveryError:
        return False
    try:
        status = assoc.send_c_echo()
        return bool(status) and int(status.Status) == 0
    finally:
        if assoc.is_established:
            assoc.release()
