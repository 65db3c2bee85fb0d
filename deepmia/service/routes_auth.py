"""Sign-in (browser session + CSRF cookie), sign-out, the current user, and the audit log (admin)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request, Response

from . import schemas
from .accounts import Principal, audit, audit_rows, check_token, new_token, revoke
from .routes_data import Text
from .security import CSRF_COOKIE, SESSION_COOKIE, csrf_token_for, principal, require

__all__ = ["router"]

router = APIRouter(prefix="/api", responses=schemas.ERRORS)


@router.post("/auth/login", response_model=schemas.Me, tags=["auth"])
def login(request: Request, response: Response, username: Annotated[str, Form(max_length=128)],
          token: Annotated[str, Form(max_length=200)]) -> schemas.Me:
    """Sign in with a user's name and API token: sets the session cookie (HttpOnly) and the CSRF cookie."""
    catalog, settings = request.app.state.catalog, request.app.state.settings
    who = check_token(catalog, token, kinds=("api",))
    if who is None or who.user != username:
        audit(catalog, username if len(username) < 128 else None, "login-failed")
        raise HTTPException(status_code=401, detail="wrong user name or token")
    from deepmia.data.catalog.models import Token

    with catalog.session() as s:
        user_id = s.get(Token, who.token_id).user_id
    session = new_token(catalog, user_id, kind="session", expires=timedelta(hours=settings.session_hours))
    age = int(settings.session_hours * 3600)
    common = {"max_age": age, "samesite": "strict", "secure": settings.secure_cookies, "path": "/"}
    response.set_cookie(SESSION_COOKIE, session, httponly=True, **common)
    response.set_cookie(CSRF_COOKIE, csrf_token_for(session), httponly=False, **common)
    audit(catalog, who.user, "login")
    return schemas.Me(user=who.user, role=who.role)


@router.post("/auth/logout", tags=["auth"])
def logout(request: Request, response: Response) -> dict[str, bool]:
    """Sign out: the session stops working and its cookies are cleared."""
    who = principal(request)
    if who.kind == "session":
        revoke(request.app.state.catalog, who.token_id)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return {"ok": True}


@router.get("/me", response_model=schemas.Me, tags=["auth"])
def me(who: Annotated[Principal, Depends(require("viewer"))]) -> schemas.Me:
    """The signed-in user and role."""
    return schemas.Me(user=who.user, role=who.role)


@router.get("/audit", response_model=list[schemas.AuditRow], tags=["auth"])
def audit_log(request: Request, who: Annotated[Principal, Depends(require("admin"))], user: Text = None,
              action: Text = None, since: datetime | None = None) -> list[schemas.AuditRow]:
    """The audit log (admin): who viewed, downloaded, uploaded or ran what; newest first."""
    if since is not None and since.tzinfo is not None:
        since = since.replace(tzinfo=None) - (since.utcoffset() or timedelta(0))  # stored as naive UTC
    rows = audit_rows(request.app.state.catalog, user=user, action=action, since=since)
    return [schemas.AuditRow(**r) for r in rows]
