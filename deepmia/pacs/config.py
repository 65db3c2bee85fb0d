"""The PACS node's configuration file (YAML): listener, routing rules, destinations, retries.

Every key is checked when the file is read; a bad file is refused with an
:class:`~deepmia.errors.InvalidArgumentError` naming the file and the key (``routes[0].series_description: not a
valid regular expression ...``). Relative paths (``storage``, a route's model directory) are taken from the
config file's folder. See ``deepmia/pacs/example.yaml`` for a commented example.

Example:
    >>> from deepmia.pacs.config import parse_address
    >>> parse_address("ORTHANC@pacs.example.org:4242")
    Address(ae_title='ORTHANC', host='pacs.example.org', port=4242)
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from deepmia.errors import InvalidArgumentError

__all__ = ["Address", "parse_address", "Destination", "Route", "Retry", "PacsConfig", "load_config"]

_AE = re.compile(r"^[ -~]{1,16}$")  # the AE title: 1-16 printable ASCII characters, no backslash
ADDRESS_FORM = "AE_TITLE@host:port (e.g. ORTHANC@localhost:4242)"


class Address(NamedTuple):
    """A DICOM network peer: its AE title, host and port."""

    ae_title: str
    host: str
    port: int


def _check_ae(title: str) -> str:
    if not _AE.fullmatch(title) or "\\" in title or not title.strip():
        raise ValueError(f"{title!r} is not an AE title (1-16 printable ASCII characters, no backslash)")
    return title.strip()


def parse_address(text: str) -> Address:
    """``AE@host:port`` as an :class:`Address`.

    Raises:
        InvalidArgumentError: Not of that form, or a bad AE title or port.
    """
    m = re.fullmatch(r"(?P<ae>[^@]+)@(?P<host>\[[^\]]+\]|[^:@]+):(?P<port>\d{1,5})", text.strip())
    if not m:
        raise InvalidArgumentError(f"{text!r} is not a DICOM address", fix=f"write {ADDRESS_FORM}")
    port = int(m["port"])
    if not 0 < port < 65536:
        raise InvalidArgumentError(f"port {port} of {text!r} is outside 1-65535")
    try:
        ae = _check_ae(m["ae"])
    except ValueError as exc:
        raise InvalidArgumentError(str(exc), fix=f"write {ADDRESS_FORM}") from None
    return Address(ae, m["host"].strip("[]"), port)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Destination(_Strict):
    """Where results go: a DICOM node (``dicom: AE@host:port``, C-STORE) or a DICOMweb root (``dicomweb: URL``)."""

    name: str = Field(min_length=1)
    dicom: str | None = None
    dicomweb: str | None = None

    @field_validator("dicom")
    @classmethod
    def _dicom(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_address(value)
            except InvalidArgumentError as exc:
                raise ValueError(exc.problem + f"; write {ADDRESS_FORM}") from None
        return value

    @field_validator("dicomweb")
    @classmethod
    def _dicomweb(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL (e.g. http://localhost:8042/dicom-web)")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Destination:
        if (self.dicom is None) == (self.dicomweb is None):
            raise ValueError(f"destination {self.name!r} needs exactly one of 'dicom' (AE@host:port) or 'dicomweb'")
        return self

    @property
    def address(self) -> Address | None:
        """The DICOM address of a C-STORE destination (None for DICOMweb)."""
        return parse_address(self.dicom) if self.dicom else None


class Route(_Strict):
    """A routing rule: a series whose attributes match every given criterion goes to ``model``.

    ``modality`` and ``body_part`` compare case-insensitively with the series' Modality and BodyPartExamined
    (a list: any of them); ``series_description`` is a regular expression searched in SeriesDescription. A
    rule without criteria matches every series. ``tta`` turns the model's test-time augmentation on or off
    (default: the model's own setting).
    """

    name: str = Field(min_length=1)
    model: str = Field(min_length=1)
    modality: list[str] | None = None
    body_part: list[str] | None = None
    series_description: str | None = None
    destinations: list[str] | None = None
    tta: bool | None = None

    @field_validator("modality", "body_part", mode="before")
    @classmethod
    def _listed(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("series_description")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"{value!r} is not a valid regular expression: {exc}") from None
        return value

    def matches(self, attributes: dict[str, str]) -> bool:
        """Whether a series with these ``Modality``, ``BodyPartExamined``, ``SeriesDescription`` matches."""
        def one_of(allowed: list[str] | None, value: str) -> bool:
            return allowed is None or value.strip().upper() in {a.strip().upper() for a in allowed}

        return (one_of(self.modality, attributes.get("Modality", ""))
                and one_of(self.body_part, attributes.get("BodyPartExamined", ""))
                and (self.series_description is None
                     or re.search(self.series_description, attributes.get("SeriesDescription", "")) is not None))


class Retry(_Strict):
    """Delivery retries: exponential back-off from ``initial_seconds``, doubled up to ``max_seconds``.

    ``max_attempts`` 0 keeps trying until the destination answers (the outputs stay queued, also across a
    restart of the listener).
    """

    initial_seconds: float = Field(5.0, gt=0)
    max_seconds: float = Field(600.0, gt=0)
    max_attempts: int = Field(0, ge=0)
    timeout_seconds: float = Field(30.0, gt=0)

    def delay(self, attempts: int) -> float:
        """Seconds to wait after ``attempts`` failed attempts."""
        return min(self.max_seconds, self.initial_seconds * 2 ** max(0, attempts - 1))


class PacsConfig(_Strict):
    """The node: who it is (AE title, port), who may send, where it stores, how it routes and delivers."""

    ae_title: str = "DEEPMIA"
    host: str = "0.0.0.0"
    port: int = Field(11112, gt=0, lt=65536)
    accept_calling_ae: list[str] = Field(default_factory=list)
    storage: Path = Path("pacs-storage")
    settle_seconds: float = Field(10.0, ge=0)
    device: str = "cpu"
    routes: list[Route] = Field(default_factory=list)
    destinations: list[Destination] = Field(default_factory=list)
    retry: Retry = Field(default_factory=Retry)
    poll_seconds: float = Field(0.5, gt=0)

    @field_validator("ae_title")
    @classmethod
    def _ae(cls, value: str) -> str:
        return _check_ae(value)

    @field_validator("accept_calling_ae")
    @classmethod
    def _aes(cls, value: list[str]) -> list[str]:
        return [_check_ae(v) for v in value]

    @model_validator(mode="after")
    def _names(self) -> PacsConfig:
        known = [d.name for d in self.destinations]
        if len(set(known)) != len(known):
            raise ValueError(f"destinations: the names must be unique: {known}")
        for n, route in enumerate(self.routes):
            for name in route.destinations or []:
                if name not in known:
                    raise ValueError(f"routes[{n}].destinations: no destination named {name!r} (known: {known})")
        return self

    def destinations_of(self, route: Route) -> list[Destination]:
        """The destinations of a route (all configured ones when the route names none)."""
        if route.destinations is None:
            return list(self.destinations)
        return [d for d in self.destinations if d.name in route.destinations]

    def route_for(self, attributes: dict[str, str]) -> Route | None:
        """The first route matching a series' attributes, or None."""
        return next((r for r in self.routes if r.matches(attributes)), None)


def _key(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _resolve_models(config: PacsConfig, base: Path, path: Path) -> PacsConfig:
    from deepmia.tasks import resolve_model

    routes = []
    for n, route in enumerate(config.routes):
        local = base / route.model
        try:
            model = local.resolve() if local.is_dir() else resolve_model(route.model).resolve()
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(f"routes[{n}].model: {exc.problem} ({route.model!r})", path=path,
                                       fix=exc.fix) from None
        routes.append(route.model_copy(update={"model": str(model)}))
    storage = config.storage if config.storage.is_absolute() else (base / config.storage)
    return config.model_copy(update={"routes": routes, "storage": storage.resolve()})


def load_config(path: str | os.PathLike[str]) -> PacsConfig:
    """Read and check a PACS node configuration file.

    Raises:
        InvalidArgumentError: The file is missing, not YAML, or a key is unknown or has a bad value (the message
            names the key).
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InvalidArgumentError("no such configuration file", path=path,
                                   fix="copy deepmia/pacs/example.yaml and edit it")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"not valid YAML: {' '.join(str(exc).split())}", path=path) from None
    if not isinstance(data, dict):
        raise InvalidArgumentError("the configuration must be a mapping of keys (ae_title, port, routes, ...)",
                                   path=path)
    try:
        config = PacsConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = f"unknown key (known: {', '.join(_known(first['loc']))})"
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        key = _key(first["loc"])
        raise InvalidArgumentError(f"{key}: {message}{more}" if key else f"{message}{more}", path=path,
                                   fix="see deepmia/pacs/example.yaml") from None
    return _resolve_models(config, path.resolve().parent, path)


def _known(loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed where the unknown key ``loc`` was found."""
    model: Any = PacsConfig
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[part].annotation
        args = getattr(annotation, "__args__", ())
        model = next((a for a in (annotation, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            return []
    return list(model.model_fields)
