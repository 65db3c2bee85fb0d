"""Render the clinical report: one Jinja2 template for HTML and PDF (WeasyPrint), text from gettext catalogs.

:func:`render_report` is what the CLI (``deepmia report``) and the web service call; :func:`results_report`
renders results held in memory (``deepmia predict --dicom`` wraps it as an Encapsulated PDF).

Example:
    >>> from deepmia.report.clinical import render_report          # doctest: +SKIP
    >>> pdf = render_report("pred/", lang="zh", fmt="pdf")        # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deepmia.errors import InvalidArgumentError, WriteError
from deepmia.report.clinical.i18n import CJK_FONT, check_fonts, check_language, translations

__all__ = ["FORMATS", "card_brief", "html_to_pdf", "render_html", "render_report", "report_files", "results_report",
           "write_report"]

#: Output formats, by file suffix.
FORMATS = ("html", "pdf")
_CARD_FILES = ("card.md", "README.md")
_CARD_SECTIONS = ("Data", "Validation metrics", "Intended use and limits")
_DATA_KEYS = ("- Dataset", "- Licence", "- Cases", "- Split")
_LONG_PARAGRAPH = 280  # card paragraphs longer than this (recipes, comparisons) are left to the full card


def _sections(markdown: str) -> tuple[str, dict[str, list[str]]]:
    """The card's title and its ``##`` sections' lines (``###`` headings stay inside their section)."""
    title, sections, current = "", {}, None
    for line in markdown.splitlines():
        if line.startswith("# ") and not title:
            title = line[2:].strip()
        elif line.startswith("## "):
            current = line[3:].strip()
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    return title, sections


def _brief(name: str, lines: list[str]) -> str:
    """A section cut to what a clinician needs: the data's key lines, tables and short lines elsewhere."""
    if name == "Data":
        return "\n".join(line for line in lines if line.startswith(_DATA_KEYS))
    blocks, out = "\n".join(lines).split("\n\n"), []
    for block in blocks:
        text = block.strip()
        if text and (text.startswith(("|", "-", "#")) or len(text) <= _LONG_PARAGRAPH):
            out.append(text)
    return "\n\n".join(out)


def card_brief(model_dir: str | os.PathLike[str] | None, *, _: Any) -> dict[str, Any]:
    """The model card in brief: title, training data, validation metrics with intervals, intended use and limits.

    Read from ``MODEL_DIR/card.md`` or the card writer's ``README.md`` (:mod:`deepmia.report.model_card`); the
    card's text stays in English (it is the model's own documentation).

    Returns:
        ``{"title", "sections": [(heading, html)], "missing": bool}``.
    """
    from markdown_it import MarkdownIt

    path = next((Path(model_dir) / f for f in _CARD_FILES if (Path(model_dir) / f).is_file()), None) \
        if model_dir is not None else None
    if path is None:
        return {"title": Path(model_dir).name if model_dir is not None else _("classical method (no trained model)"),
                "sections": [], "missing": True, "classical": model_dir is None}
    title, sections = _sections(path.read_text(encoding="utf-8"))
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    headings = {"Data": _("Training data"), "Validation metrics": _("Validation metrics"),
                "Intended use and limits": _("Intended use and limits")}
    found = [(headings[k], md.render(_brief(k, sections[k]))) for k in _CARD_SECTIONS if k in sections]
    return {"title": title or Path(model_dir).name, "sections": found, "missing": False, "classical": False}


def _environment(lang: str) -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("deepmia.report.clinical", "templates"),
                             autoescape=jinja2.select_autoescape(["html"]), extensions=["jinja2.ext.i18n"],
                             trim_blocks=True, lstrip_blocks=True)
    env.install_gettext_translations(translations(lang), newstyle=True)  # type: ignore[attr-defined]
    return env


def render_html(data: dict[str, Any], lang: str) -> str:
    """The report's HTML (one self-contained file: CSS inline, images as data URIs)."""
    from markupsafe import Markup

    card = dict(data.get("card") or {})
    card["sections"] = [(h, Markup(html)) for h, html in card.get("sections", [])]  # markdown-it, raw HTML off
    return _environment(lang).get_template("report.html").render(**{**data, "card": card}, lang=lang,
                                                                  cjk_font=CJK_FONT)


def html_to_pdf(html: str) -> bytes:
    """The PDF of an HTML report (WeasyPrint; fonts through fontconfig)."""
    import logging

    from weasyprint import HTML

    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    return HTML(string=html).write_pdf()


def _data(cases: Sequence[tuple[str, Any]], model_dir: Any, lang: str, *, predictor: Any = None,
          source: str = "", quality: bool = True) -> dict[str, Any]:
    from deepmia import __version__
    from deepmia.report.clinical.cases import case_page

    _ = translations(lang).gettext
    card = card_brief(model_dir, _=_)
    pages = [case_page(name, result, _=_, predictor=predictor, quality=quality) for name, result in cases]
    return {"cases": pages, "card": card, "version": __version__, "source": source,
            "created": _dt.datetime.now().strftime("%Y-%m-%d %H:%M")}


def _output(data: dict[str, Any], lang: str, fmt: str) -> bytes:
    if fmt not in FORMATS:
        raise InvalidArgumentError(f"no report format {fmt!r}; formats: {', '.join(FORMATS)}")
    if fmt == "pdf":
        check_fonts(lang)
    html = render_html(data, lang)
    return html_to_pdf(html) if fmt == "pdf" else html.encode("utf-8")


def render_report(pred_dir: str | os.PathLike[str], *, lang: str = "en", fmt: str = "html",
                  model_dir: str | os.PathLike[str] | None = None, quality: bool = True) -> bytes:
    """The report of a prediction folder, as HTML (UTF-8) or PDF bytes.

    Args:
        pred_dir: The output folder of ``deepmia predict`` (or ``deepmia register``).
        lang: ``en`` or ``zh``.
        fmt: ``html`` or ``pdf``.
        model_dir: The model directory, when the one run.json names is not found here.
        quality: Include the image-quality flags (``deepmia quality``'s measures).

    Raises:
        InvalidArgumentError: An unknown language or format, or not a prediction folder.
        MissingDependencyError: A PDF in Chinese with no CJK font installed.
    """
    from deepmia.report.clinical.folder import read_prediction_folder

    check_language(lang)
    if fmt == "pdf":
        check_fonts(lang)  # before the slow part
    folder = read_prediction_folder(pred_dir, model_dir=model_dir)
    data = _data(folder.cases, folder.model_dir, lang, predictor=folder.predictor, source=str(folder.path),
                 quality=quality)
    return _output(data, lang, fmt)


def results_report(cases: Sequence[tuple[str, Any]], *, model_dir: str | os.PathLike[str] | None = None,
                   lang: str = "en", fmt: str = "pdf", predictor: Any = None, quality: bool = True) -> bytes:
    """The report of task results held in memory (``(name, result)`` pairs, each result with its ``image``).

    Raises:
        InvalidArgumentError: An unknown language or format.
        MissingDependencyError: A PDF in Chinese with no CJK font installed.
    """
    check_language(lang)
    if predictor is None and model_dir is not None and any(r.task == "classify" for _, r in cases):
        from deepmia.tasks import load_predictor

        predictor = load_predictor(model_dir, device="cpu")
    return _output(_data(cases, model_dir, lang, predictor=predictor, quality=quality), lang, fmt)


def report_files(cases: Sequence[tuple[str, Any]], out_dir: str | os.PathLike[str], *, name: str = "report",
                 model_dir: str | os.PathLike[str] | None = None, lang: str = "en", predictor: Any = None,
                 quality: bool = True) -> tuple[Path, Path]:
    """Write the report of task results held in memory as ``NAME.html`` and ``NAME.pdf`` (its pages built once).

    A registration's case is a :class:`~deepmia.tasks.register.result.RegisterResult` or a registration read back
    from its folder. Returns the two paths.

    Raises:
        InvalidArgumentError: An unknown language.
        MissingDependencyError: A PDF in Chinese with no CJK font installed.
        WriteError: A file cannot be written.
    """
    from deepmia.report.clinical.folder import Registration
    from deepmia.tasks.register.result import RegisterResult

    check_language(lang)
    check_fonts(lang)
    cases = [(c, Registration.of(r.fixed, r.moving, r.warped(), r.summary()))
             if isinstance(r, RegisterResult) else (c, r) for c, r in cases]
    html = render_html(_data(cases, model_dir, lang, predictor=predictor, quality=quality), lang)
    out = Path(out_dir)
    paths = (out / f"{name}.html", out / f"{name}.pdf")
    try:
        out.mkdir(parents=True, exist_ok=True)
        paths[0].write_text(html, encoding="utf-8")
        paths[1].write_bytes(html_to_pdf(html))
    except OSError as exc:
        raise WriteError(f"could not write the report: {exc}", path=out) from exc
    return paths


def write_report(pred_dir: str | os.PathLike[str], out: str | os.PathLike[str], *, lang: str = "en",
                 model_dir: str | os.PathLike[str] | None = None) -> Path:
    """Write the report of a prediction folder to ``out``; the format comes from its suffix (.html or .pdf).

    Raises:
        InvalidArgumentError: ``out`` has another suffix, an unknown language, or not a prediction folder.
        WriteError: ``out`` cannot be written.
    """
    out = Path(out)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise InvalidArgumentError(f"the report's format comes from its suffix; {out.suffix or 'none'} is not "
                                   f"one of .{', .'.join(FORMATS)}", path=out, fix="name it report.html or report.pdf")
    content = render_report(pred_dir, lang=lang, fmt=fmt, model_dir=model_dir)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(content)
    except OSError as exc:
        raise WriteError(f"could not write the report: {exc}", path=out) from exc
    return out
