"""API bearer tokens: the plaintext is shown once; only its sha256 is stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.base import utcnow
from db.models import ApiToken
from db.repositories._common import DEFAULT_LIMIT, paginate

# last_used_at is refreshed at most this often, so authenticated reads do not each become a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_token(plaintext: str) -> str:
    """sha256 hex of a token. A plain hash suffices: tokens are 256-bit random, not guessable passwords."""
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def create_token(*, session: Session, name: str) -> str:
    """Store a new token named `name` and return its plaintext (the only time it exists)."""
    plaintext = secrets.token_urlsafe(32)
    session.add(ApiToken(name=name, token_hash=hash_token(plaintext)))
    session.flush()
    return plaintext


create = create_token


def verify(*, session: Session, plaintext: str) -> ApiToken | None:
    """The token `plaintext` belongs to (its last_used_at updated), or None."""
    if not plaintext:
        return None
    digest = hash_token(plaintext)
    # Lookup by the hash: response time cannot reveal how much of a guessed token matched.
    token = session.scalar(select(ApiToken).where(ApiToken.token_hash == digest))
    if token is None or not hmac.compare_digest(token.token_hash, digest):
        return None
    now = utcnow()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        token.last_used_at = now
        session.flush()
    return token


def get(*, session: Session, token_id: int) -> ApiToken | None:
    return session.get(ApiToken, token_id)


def get_by_name(*, session: Session, name: str) -> ApiToken | None:
    return session.scalar(select(ApiToken).where(ApiToken.name == name))


def list(*, session: Session, limit: int = DEFAULT_LIMIT, offset: int = 0) -> Sequence[ApiToken]:
    return paginate(session, select(ApiToken), ApiToken.id, limit=limit, offset=offset)


def delete(*, session: Session, token: ApiToken) -> None:
    session.delete(token)
    session.flush()
