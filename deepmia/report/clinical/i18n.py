"""Languages of the clinical report: gettext catalogs (Babel ``.po`` files read at run time) and the CJK font check.

The catalogs live in ``deepmia/report/clinical/locale/<lang>/LC_MESSAGES/deepmia.po``; English is the source
language (its catalog maps every message to itself), Simplified Chinese is ``zh``. A PDF in Chinese needs a CJK
font that fontconfig finds (Debian ``fonts-noto-cjk``: "Noto Sans CJK SC"); without one WeasyPrint would draw
empty boxes, so :func:`check_fonts` refuses before rendering.

Example:
    >>> LANGUAGES
    ('en', 'zh')
    >>> translations("zh").gettext("Findings")
    '所见'
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from importlib import resources
from typing import Any

from deepmia.errors import InvalidArgumentError, MissingDependencyError

__all__ = ["LANGUAGES", "CJK_FONT", "DOMAIN", "check_language", "translations", "cjk_fonts", "check_fonts"]

#: Report languages: English and Simplified Chinese.
LANGUAGES = ("en", "zh")
#: The CJK font the report's CSS names first for Chinese.
CJK_FONT = "Noto Sans CJK SC"
#: The gettext domain (catalog file name without ``.po``).
DOMAIN = "deepmia"
_NEEDS_CJK = {"zh"}


def check_language(lang: str) -> str:
    """``lang`` if a report can be written in it.

    Raises:
        InvalidArgumentError: Not a report language (the message lists them).
    """
    if lang not in LANGUAGES:
        raise InvalidArgumentError(f"no report language {lang!r}; languages: {', '.join(LANGUAGES)}",
                                   fix="use --lang " + " or --lang ".join(LANGUAGES))
    return lang


@functools.cache
def translations(lang: str) -> Any:
    """The :class:`babel.support.Translations` of ``lang``, read from its ``.po`` catalog.

    Raises:
        InvalidArgumentError: Not a report language.
    """
    from io import BytesIO

    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po
    from babel.support import Translations

    check_language(lang)
    po = resources.files("deepmia.report.clinical").joinpath("locale", lang, "LC_MESSAGES", f"{DOMAIN}.po")
    with po.open("rb") as f:
        catalog = read_po(f, locale=lang, domain=DOMAIN)
    compiled = BytesIO()
    write_mo(compiled, catalog)  # compiled in memory: the .po is the one file we ship and review
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


def cjk_fonts() -> list[str]:
    """Font families fontconfig offers for Chinese (``fc-list :lang=zh family``); empty when there is none.

    Raises:
        MissingDependencyError: ``fc-list`` (fontconfig) is not installed, so fonts cannot be checked.
    """
    exe = shutil.which("fc-list")
    if exe is None:
        raise MissingDependencyError("fc-list (fontconfig) is not installed: the report's fonts cannot be checked",
                                     fix="apt-get install fontconfig fonts-noto-cjk")
    run = subprocess.run([exe, ":lang=zh", "family"], capture_output=True, text=True, timeout=60, check=False)
    return sorted({name.strip() for line in run.stdout.splitlines() for name in line.split(",") if name.strip()})


def check_fonts(lang: str) -> None:
    """Refuse a PDF in ``lang`` when no font can draw its script.

    Raises:
        MissingDependencyError: Chinese asked and fontconfig finds no CJK font.
    """
    if lang in _NEEDS_CJK and not cjk_fonts():
        raise MissingDependencyError(
            f"no CJK font found by fontconfig (fc-list :lang=zh): a PDF report in {lang!r} would show empty boxes",
            fix=f"install a CJK font, e.g. Debian fonts-noto-cjk ({CJK_FONT}), or write the report in English")
