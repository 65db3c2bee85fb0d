"""The web viewer: its pages and static files, served by ``deepmia serve`` (issue 14).

The pages are plain HTML with small ES modules of our own (``static/js/``) over NiiVue, whose built bundle is
vendored in ``static/vendor/niivue/`` by ``scripts/build_viewer.sh`` (no CDN: hospital networks are offline).
Every page asks the REST API for its data; an unauthenticated visitor is sent to ``/login`` by the page itself,
so the pages and their scripts carry no data and need no login.

No path from a request reaches the filesystem: the static files are listed once when the module loads and a
request names one of them by key, so ``/static/../../etc/passwd`` is simply an unknown key (404).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

STATIC_DIR = Path(__file__).resolve().parent / "static"

_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".png": "image/png",
}
_PAGES = {"/": "index.html", "/login": "login.html"}

router = APIRouter(include_in_schema=False)


def static_files(root: Path = STATIC_DIR) -> dict[str, Path]:
    """List the files the viewer serves.

    Args:
        root: The static folder.

    Returns:
        Relative POSIX path (the URL key under ``/static/``) -> file, for files with a known media type
        (licence texts included, under their own name).
    """
    if not root.is_dir():
        return {}
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and (path.suffix in _MEDIA_TYPES or path.name == "LICENSE"):
            files[path.relative_to(root).as_posix()] = path
    return files


_FILES = static_files()


def _file_response(key: str) -> FileResponse:
    path = _FILES.get(key)
    if path is None:
        raise HTTPException(status_code=404, detail=f"no viewer file {key!r}")
    vendored = key.startswith("vendor/")
    headers = {
        # the vendored bundle changes only with a new build; our own pages and scripts are revalidated
        "Cache-Control": "public, max-age=86400" if vendored else "no-cache",
        "X-Content-Type-Options": "nosniff",
    }
    if path.suffix == ".html":
        # no framing by other sites; scripts and styles only from this server (no CDN, no inline script)
        headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
            "frame-src 'self'; frame-ancestors 'self'; worker-src 'self' blob:"
        )
    media_type = _MEDIA_TYPES.get(path.suffix, "text/plain; charset=utf-8")
    return FileResponse(path, media_type=media_type, headers=headers)


@router.get("/")
def worklist_page() -> FileResponse:
    """The worklist (studies), the viewer's start page."""
    return _file_response(_PAGES["/"])


@router.get("/login")
def login_page() -> FileResponse:
    """The login form."""
    return _file_response(_PAGES["/login"])


@router.get("/study/{study_id}")
def study_page(study_id: int) -> FileResponse:
    """One study in the viewer (the page reads the id from its URL)."""
    del study_id  # the page's script reads it from the URL
    return _file_response("study.html")


@router.get("/static/{key:path}")
def static_file(key: str) -> FileResponse:
    """A file of the viewer (scripts, styles, the vendored NiiVue bundle and its licence)."""
    return _file_response(key)
