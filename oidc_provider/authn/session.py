"""The IdP session: who logged in, when, and with which factors.

The browser holds only an opaque random id in an HttpOnly cookie; the state lives
in the ephemeral store. The id is replaced at every completed factor, so an id seen
before a login (session fixation) is worthless after it. `sid`, the public id put in
ID tokens, stays the same for the life of the session and reveals nothing of the cookie.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, field

from .acr import achieved_acr, amr_values, level_met

COOKIE = "op_session"


@dataclass
class FactorUse:
    factor: str  # factor id
    amr: str
    flow: str
    at: float  # when it was completed (epoch seconds)


@dataclass
class IdpSession:
    id: str
    sid: str
    sub: str
    created_at: int
    expires_at: int
    factors: list[FactorUse] = field(default_factory=list)
    clients: list[str] = field(default_factory=list)  # clients that got tokens in this session

    @property
    def auth_time(self) -> int:
        """OIDC Core 2: time of the most recent authentication of the user."""
        return auth_time(self.factors)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> IdpSession:
        data = dict(data)
        data["factors"] = [FactorUse(**use) for use in data.get("factors", [])]
        return cls(**data)


def auth_time(factors: list[FactorUse]) -> int:
    return int(max(use.at for use in factors))


def auth_context(op, factors: list[FactorUse], sid: str | None, level=None, now: float | None = None):
    """acr, amr and auth_time that tell the truth about these factors: the acr of the level they
    meet (the requested one first), never more; amr lists each method once, plus `mfa` for two
    distinct flows (the Transmit guide's example: ["webauthn", "eml", "mfa"])."""
    from ..oauth.tokens import AuthContext

    now = now or time.time()
    return AuthContext(
        auth_time=auth_time(factors),
        acr=achieved_acr(op.levels, factors, now, op.settings.single_factor_acr, level),
        amr=amr_values(factors, op.settings.acr.vocabulary),
        sid=sid,
        factors=[asdict(use) for use in factors],
    )


def current_acr(op, context, now: float | None = None) -> str | None:
    """The acr a stored login still earns now: a level with a max_age falls back when its
    factors age out (also on refresh). Never more than was first claimed."""
    if not context.factors:
        return context.acr
    factors = [FactorUse(**use) for use in context.factors]
    now = now or time.time()
    requested = next((level for level in op.levels if level.value == context.acr), None)
    acr = achieved_acr(op.levels, factors, now, op.settings.single_factor_acr, requested)
    ranks = {level.value: level.rank for level in op.levels}
    if acr in ranks and (context.acr not in ranks or ranks[acr] > ranks[context.acr]):
        if context.acr not in ranks:
            return context.acr
        # Capped at the first claim, which counts only while it still holds (its max_age may have
        # passed while a higher level still holds): else the best lower level that does.
        held = [level for level in op.levels if level.rank <= ranks[context.acr] and level_met(level, factors, now)]
        if requested in held:
            return requested.value
        if held:
            return max(held, key=lambda level: level.rank).value
        single = op.settings.single_factor_acr
        return None if single in ranks else single
    return acr


class SessionService:
    def __init__(self, store, lifetime: int):
        self.store = store
        self.lifetime = lifetime

    def load(self, session_id: str | None) -> IdpSession | None:
        if not session_id or len(session_id) > 100:
            return None
        data = self.store.get(f"sess:{session_id}")
        if data is None:
            return None
        session = IdpSession.from_dict(data)
        if session.expires_at <= time.time():
            return None
        return session

    def _save(self, session: IdpSession) -> None:
        ttl = session.expires_at - time.time()
        self.store.set(f"sess:{session.id}", session.to_dict(), max(ttl, 1))

    def record_factor(self, current: IdpSession | None, sub: str, use: FactorUse) -> IdpSession:
        """Add a completed factor; a different user starts a new session. Always a new id."""
        now = int(time.time())
        if current is None or current.sub != sub:
            session = IdpSession(
                id="", sid=secrets.token_urlsafe(16), sub=sub, created_at=now, expires_at=now + self.lifetime
            )
        else:
            session = current
        if current is not None:
            self.store.delete(f"sess:{current.id}")
        session.id = secrets.token_urlsafe(32)
        session.factors = [f for f in session.factors if f.factor != use.factor] + [use]
        self._save(session)
        return session

    def add_client(self, session: IdpSession, client_id: str) -> None:
        if client_id not in session.clients:
            session.clients.append(client_id)
            self._save(session)

    def end(self, session: IdpSession) -> None:
        self.store.delete(f"sess:{session.id}")
