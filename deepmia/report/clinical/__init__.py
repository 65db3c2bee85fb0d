"""Clinical reports: one page per case for a clinician, in HTML or PDF, in English or Simplified Chinese.

``deepmia report PRED_DIR --out report.pdf --lang zh`` reads a prediction folder (:mod:`.folder`), builds each
case's page (:mod:`.cases`: header from the DICOM source, key images, measurements, classification with its
uncertainty, image-quality flags, findings from templates in :mod:`.findings`), adds the model card in brief and
renders one Jinja2 template (:mod:`.render`) to HTML or, through WeasyPrint, to PDF. Text comes from gettext
catalogs (:mod:`.i18n`); :mod:`.encapsulated` wraps the PDF as a DICOM Encapsulated PDF in the source study.

Example:
    >>> from deepmia.report.clinical import LANGUAGES
    >>> LANGUAGES
    ('en', 'zh')
"""

from __future__ import annotations

from deepmia.report.clinical.i18n import LANGUAGES
from deepmia.report.clinical.render import render_report, results_report, write_report

__all__ = ["LANGUAGES", "render_report", "results_report", "write_report"]
