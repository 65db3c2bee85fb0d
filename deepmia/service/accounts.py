"""Accounts of the service: users with roles, hashed API tokens and browser sessions, and the audit log.

A token reads ``dm_<row id>_<secret>``: the row id finds the stored hash, the secret is checked against it with
:func:`hmac.compare_digest`. Only the hash and its salt are stored; the token is shown once, when made.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from deepmia.data.catalog import Catalog
from deepmia.data.catalog.models import ROLES, AuditEntry, Token, User
from deepmia.errors import InvalidArgumentError

__all__ = ["ROLES", "Principal", "add_user", "audit", "audit_rows", "check_token", "new_token", "revoke",
           "role_at_least"]

CACHE_S = 30.0  # a checked token is trusted this long without hashing again (scrypt is slow on purpose)
_cache: dict[str, tuple[float, Principal]] = {}
_cache_lock = threading.Lock()


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class Principal:
    """Who a request is from: the user's name and role, and the token row it came with."""

    user: str
    role: str
    token_id: int
    kind: str = "api"


def role_at_least(role: str, needed: str) -> bool:
    """Whether ``role`` has the rights of ``needed`` (viewer < annotator < admin)."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


def _hash(secret: str, salt: str) -> str:
    return hashlib.scrypt(secret.encode(), salt=bytes.fromhex(salt), n=2**14, r=8, p=1, dklen=32).hex()


def new_token(catalog: Catalog, user_id: int, *, kind: str = "api", expires: timedelta | None = None) -> str:
    """Make a token (or session) of a user; returns it (the only time it exists in clear)."""
    secret, salt = secrets.token_urlsafe(32), secrets.token_hex(16)
    with catalog.session() as s:
        row = Token(user_id=user_id, kind=kind, salt=salt, hash=_hash(secret, salt), created_at=_now(),
                    expires_at=_now() + expires if expires else None)
        s.add(row)
        s.flush()
        return f"dm_{row.id}_{secret}"


def add_user(catalog: Catalog, name: str, role: str) -> str:
    """Add a user with a role and an API token; returns the token (shown once, stored hashed).

    Raises:
        InvalidArgumentError: A bad name or role, or a user of that name exists.
    """
    if role not in ROLES:
        raise InvalidArgumentError(f"unknown role {role!r}", fix=f"one of {', '.join(ROLES)}")
    if not name or len(name) > 128 or not all(c.isalnum() or c in "._-@" for c in name):
        raise InvalidArgumentError(f"bad user name {name!r}", fix="letters, digits and . _ - @, at most 128")
    with catalog.session() as s:
        if s.scalar(select(User.id).where(User.name == name)) is not None:
            raise InvalidArgumentError(f"user {name!r} exists", fix="choose another name")
        user = User(name=name, role=role, disabled=False, created_at=_now())
        s.add(user)
        s.flush()
        user_id = user.id
    return new_token(catalog, user_id)


def check_token(catalog: Catalog, token: str | None, *, kinds: tuple[str, ...] = ("api",)) -> Principal | None:
    """The principal a token belongs to, or ``None`` (unknown, malformed, expired, revoked, disabled user)."""
    if not token or len(token) > 200:
        return None
    key = hashlib.sha256(token.encode()).hexdigest()
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None and hit[0] > time.monotonic() and hit[1].kind in kinds:
        return hit[1]
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != "dm" or not parts[1].isdigit() or len(parts[1]) > 18:
        return None
    with catalog.session() as s:
        row = s.execute(select(Token, User).join(User, User.id == Token.user_id)
                        .where(Token.id == int(parts[1]))).first()
        if row is None:
            return None
        tok, user = row
        if tok.kind not in kinds or user.disabled or (tok.expires_at is not None and tok.expires_at < _now()):
            return None
        if not hmac.compare_digest(_hash(parts[2], tok.salt), tok.hash):
            return None
        principal = Principal(user.name, user.role, tok.id, tok.kind)
    with _cache_lock:
        if len(_cache) > 10000:
            _cache.clear()
        _cache[key] = (time.monotonic() + CACHE_S, principal)
    return principal


def revoke(catalog: Catalog, token_id: int) -> None:
    """Delete a token or session (logout); it stops working at once in this process."""
    with catalog.session() as s:
        row = s.get(Token, token_id)
        if row is not None:
            s.delete(row)
    with _cache_lock:
        for key in [k for k, (_, p) in _cache.items() if p.token_id == token_id]:
            del _cache[key]


def audit(catalog: Catalog, user: str | None, action: str, obj: str | None = None, detail: str | None = None) -> None:
    """Add a row to the audit log: who did what (``view``, ``download``, ``upload``, ``run``, ...) to what."""
    with catalog.session() as s:
        s.add(AuditEntry(time=_now(), user=user, action=action[:32], object=(obj or "")[:256] or None,
                         detail=detail))


def audit_rows(catalog: Catalog, *, user: str | None = None, action: str | None = None,
               since: datetime | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    """Audit rows, newest first, filtered by user, action and time."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if user:
        query = query.where(AuditEntry.user == user)
    if action:
        query = query.where(AuditEntry.action == action)
    if since is not None:
        query = query.where(AuditEntry.time >= since)
    with catalog.session() as s:
        return [{"time": r.time, "user": r.user, "action": r.action, "object": r.object, "detail": r.detail}
                for r in s.scalars(query)]
