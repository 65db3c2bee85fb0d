"""The service's application factory: the REST API, the job workers and the web viewer in one process."""

from __future__ import annotations

import importlib
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy.exc import DataError

from deepmia.errors import DeepmiaError

from .settings import Settings

__all__ = ["create_app"]

INDEX = """<!doctype html><meta charset="utf-8"><title>deepmia</title>
<h1>deepmia service</h1><p>The REST API is described at <a href="/docs">/docs</a>.</p>"""


def _viewer_router() -> Any:
    """The web viewer's router, when ``deepmia.service.viewer`` is installed and defines one."""
    try:
        module = importlib.import_module("deepmia.service.viewer")
    except ImportError:
        return None
    return getattr(module, "router", None)


def create_app(settings: Settings | None = None, *, run_workers: bool = True) -> FastAPI:
    """Build the service: open (and migrate) the catalog, mount the API and the viewer.

    Args:
        settings: What to serve and the limits (defaults: :class:`Settings`).
        run_workers: Start ``settings.workers`` job worker processes while the app runs.

    Returns:
        The FastAPI application (serve it with uvicorn).
    """
    from deepmia import __version__
    from deepmia.data.catalog import catalog_url, open_catalog
    from deepmia.jobs.worker import WorkerPool

    from . import routes_auth, routes_data, routes_jobs
    from .security import BodyLimit, SecurityHeaders

    settings = settings or Settings()
    settings.data_dir = Path(settings.data_dir).expanduser().resolve()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    catalog = open_catalog(settings.db)
    pool = None
    if run_workers and settings.workers > 0:
        pool = WorkerPool(catalog, catalog_url(settings.db), settings.data_dir, settings.models_dir, settings.workers,
                          per_user_limit=settings.per_user_running)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        if pool is not None:
            pool.start()
        try:
            yield
        finally:
            if pool is not None:
                pool.stop()
            catalog.close()

    app = FastAPI(title="deepmia", version=__version__, lifespan=lifespan, docs_url="/docs", redoc_url=None,
                  description="Medical image analysis service: upload, browse, run models, download results.")
    app.state.catalog, app.state.settings, app.state.pool = catalog, settings, pool
    for module in (routes_auth, routes_data, routes_jobs):
        app.include_router(module.router)
    viewer = _viewer_router()
    if viewer is not None:
        app.include_router(viewer)
    else:
        @app.get("/", include_in_schema=False, response_class=HTMLResponse)
        def index() -> str:
            return INDEX

    @app.exception_handler(DeepmiaError)
    async def deepmia_error(_request: Request, exc: DeepmiaError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    @app.exception_handler(DataError)
    async def data_error(_request: Request, exc: DataError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": "a value the database cannot take"})

    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_credentials=False,
                           allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, upload_limit=settings.max_upload_bytes,
                       upload_paths=("/api/uploads",))
    app.add_middleware(SecurityHeaders)
    return app
