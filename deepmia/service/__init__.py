"""The deepmia service (``deepmia serve``): REST API, persistent job queue, accounts, audit log and web viewer.

Example:
    >>> from deepmia.service import Settings, create_app    # doctest: +SKIP
    >>> app = create_app(Settings(db="catalog.sqlite", data_dir="data"))  # doctest: +SKIP
"""

from .settings import Settings


def create_app(*args, **kwargs):
    """Build the service's FastAPI app (see :func:`deepmia.service.app.create_app`)."""
    from .app import create_app as build

    return build(*args, **kwargs)


__all__ = ["Settings", "create_app"]
