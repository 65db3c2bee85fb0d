"""Who may do what: bearer tokens and session cookies, roles, CSRF, request size limits, security headers."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any

from fastapi import HTTPException, Request

from .accounts import Principal, check_token, role_at_least

__all__ = ["CSRF_COOKIE", "SESSION_COOKIE", "BodyLimit", "BodyTooLarge", "SecurityHeaders", "csrf_token_for",
           "principal", "require"]

SESSION_COOKIE = "deepmia_session"
CSRF_COOKIE = "deepmia_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def csrf_token_for(session_token: str) -> str:
    """The CSRF token bound to a session (the double-submit cookie's value)."""
    return hmac.new(session_token.encode(), b"deepmia-csrf", hashlib.sha256).hexdigest()


def _unauthorized(detail: str = "not authenticated") -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def principal(request: Request) -> Principal:
    """The authenticated principal of a request (bearer token first, else the session cookie), or 401.

    A cookie-authenticated unsafe request (POST, ...) also needs the ``X-CSRF-Token`` header equal to the
    ``deepmia_csrf`` cookie, which is bound to the session (403 otherwise).
    """
    catalog = request.app.state.catalog
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("the Authorization header must be 'Bearer <token>'")
        found = check_token(catalog, token.strip(), kinds=("api",))
        if found is None:
            raise _unauthorized("unknown, expired or revoked token")
        return found
    session = request.cookies.get(SESSION_COOKIE)
    if not session:
        raise _unauthorized()
    found = check_token(catalog, session, kinds=("session",))
    if found is None:
        raise _unauthorized("session expired or signed out")
    if request.method not in SAFE_METHODS:
        sent, cookie = request.headers.get(CSRF_HEADER, ""), request.cookies.get(CSRF_COOKIE, "")
        expected = csrf_token_for(session)
        if not (hmac.compare_digest(sent.encode(), expected.encode())
                and hmac.compare_digest(cookie.encode(), expected.encode())):
            raise HTTPException(status_code=403, detail="missing or wrong X-CSRF-Token header")
    return found


def require(role: str) -> Callable[[Request], Principal]:
    """A FastAPI dependency: the request's principal when its role is at least ``role`` (401, 403 otherwise)."""

    def dependency(request: Request) -> Principal:
        who = principal(request)
        if not role_at_least(who.role, role):
            raise HTTPException(status_code=403, detail=f"needs the {role} role (you are {who.role})")
        request.state.user = who.user
        return who

    dependency.__name__ = f"require_{role}"
    return dependency


class BodyTooLarge(HTTPException):
    """A request body over its limit (413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"request body over the limit of {limit} bytes")


class BodyLimit:
    """ASGI middleware: 413 for a body over the limit (uploads have their own, larger limit).

    A declared ``Content-Length`` over the limit is refused before any byte is read; a body that grows over it
    while streaming stops the request (the upload handler removes what it wrote).
    """

    def __init__(self, app: Any, *, limit: int, upload_limit: int, upload_paths: tuple[str, ...]) -> None:
        self.app, self.limit, self.upload_limit, self.upload_paths = app, limit, upload_limit, upload_paths

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        """Pass the request on with its body counted."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.upload_limit if scope["path"] in self.upload_paths else self.limit
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _send_413(send, limit)
            return
        seen = 0
        started = False

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:
            if not started:
                await _send_413(send, limit)


async def _send_413(send: Callable, limit: int) -> None:
    body = f'{{"detail":"request body over the limit of {limit} bytes"}}'.encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class SecurityHeaders:
    """ASGI middleware adding headers every response should carry (no sniffing, no framing, no caching of API data)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        """Pass the request on; add the headers to its response."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api = scope["path"].startswith("/api/")

        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                headers += [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                            (b"referrer-policy", b"no-referrer")]
                if api:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
