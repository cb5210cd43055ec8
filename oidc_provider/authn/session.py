"""The IdP session: who logged in, when, and with which factors.

The browser holds only an opaque random id in an HttpOnly cookie; the state lives
in the ephemeral store. The id is replaced at every completed factor, so an id seen
before a login (session fixation) is worthless after it. `sid`, the public id put in
ID tokens, stays the same for the life of the session and reveals nothing of the cookie.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import asdict, dataclass, field

from .acr import achieved_acr, amr_values, level_met

log = logging.getLogger(__name__)


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
    started: float = 0.0  # created_at to the fraction of a second (end_all); 0: an older record

    @property
    def auth_time(self) -> int:
        """OIDC Core 2: time of the most recent authentication of the user."""
        return auth_time(self.factors)

    def to_dict(self) -> dict:
        # what asdict gives, without its deep copy (the dict is serialized at once)
        return {**vars(self), "factors": [vars(use) for use in self.factors]}

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
    """Sessions by cookie id, plus what outlives a session for logout (Back-Channel Logout 1.0):

    - `sess-sid:{sid}`: a copy of the session kept `AFTERLIFE` seconds past its expiry, so an
      admin can end it by sid and a sweep can still notify its clients once it has expired;
      whoever *takes* this copy ends the session, so its clients are told exactly once;
    - `sess-user:{sub}:{n}`: the sids of a user's live sessions, for "sign out everywhere"
      (expired ones are the sweep's): a ring of `PER_USER` slots, a new session takes the next
      (beyond `PER_USER` live sessions of one user, a new one pushes out the oldest);
    - `sess-due:{minute}` (a counter) and `sess-due:{minute}:{n}`: sids by expiry minute, read
      by `sweep`. The store has no scan, so these are written with atomic increments and adds.
    `end_hooks` are called with (session, reason) for every session that ends.
    """

    AFTERLIFE = 24 * 3600  # an expired session can still be swept this long
    PER_USER = 64  # sessions of one user that "sign out everywhere" can find

    def __init__(self, store, lifetime: int):
        self.store = store
        self.lifetime = lifetime
        self.end_hooks: list = []

    def load(self, session_id: str | None) -> IdpSession | None:
        if not session_id or len(session_id) > 100:
            return None
        data = self.store.get(f"sess:{session_id}")
        if data is None:
            return None
        session = IdpSession.from_dict(data)
        if session.expires_at <= time.time():
            return None
        ended = self.store.get(f"sess-ended:{session.sub}")
        if ended is not None and (session.started or session.created_at) <= ended:
            return None  # begun before end_all (e.g. a password reset)
        return session

    def end_all(self, sub: str) -> None:
        """End every session of this user at once (no index of them is kept): sessions begun
        before now stop loading. The marker lives as long as a session can."""
        self.store.set(f"sess-ended:{sub}", time.time(), self.lifetime)

    def _save(self, session: IdpSession, batch) -> None:
        ttl, data = max(session.expires_at - time.time(), 1), session.to_dict()
        batch.set(f"sess:{session.id}", data, ttl)
        batch.set(f"sess-sid:{session.sid}", data, ttl + self.AFTERLIFE)

    def _index(self, session: IdpSession, batch) -> None:
        """Make a new session findable by its user and by its expiry minute (two round trips,
        with the session's own writes queued in `batch`)."""
        ttl = session.expires_at - time.time()
        minute = session.expires_at // 60
        due_ttl = (minute + 1) * 60 - time.time() + self.AFTERLIFE  # the same end for all of a minute
        # the user's sessions fill a ring of PER_USER slots; its counter lives as long as the newest
        batch.incr(f"sess-user:{session.sub}", ttl, extend=True)
        batch.incr(f"sess-due:{minute}", due_ttl)
        *_, user_count, due_count = batch.run()
        slot = (user_count - 1) % self.PER_USER
        batch = self.store.batch().set(f"sess-user:{session.sub}:{slot}", session.sid, ttl)
        batch.set(f"sess-due:{minute}:{due_count}", session.sid, due_ttl).run()

    def record_factor(self, current: IdpSession | None, sub: str, use: FactorUse) -> IdpSession:
        """Add a completed factor; a different user starts a new session. Always a new id."""
        now = int(time.time())
        if current is not None and current.sub != sub:
            self.end(current, "replaced")  # another user signs in on this browser
            current = None
        batch = self.store.batch()
        if current is None:
            session = IdpSession(
                id="", sid=secrets.token_urlsafe(16), sub=sub, created_at=now, expires_at=now + self.lifetime,
                started=time.time(),
            )
        else:
            session = current
            batch.delete(f"sess:{current.id}")
        session.id = secrets.token_urlsafe(32)
        session.factors = [f for f in session.factors if f.factor != use.factor] + [use]
        self._save(session, batch)
        if current is None:
            self._index(session, batch)
        else:
            batch.run()
        return session

    def add_client(self, session: IdpSession, client_id: str, batch=None) -> None:
        """A client got a code or tokens in this session: it will be told when the session ends.
        Written in `batch` when given (the caller runs it)."""
        if client_id not in session.clients:
            session.clients.append(client_id)
            own = batch is None
            batch = batch or self.store.batch()
            self._save(session, batch)
            if own:
                batch.run()

    def by_sid(self, sid: str) -> IdpSession | None:
        """The session (live or expired but not yet swept) with this public id."""
        data = self.store.get(f"sess-sid:{sid}") if sid and len(sid) <= 100 else None
        return IdpSession.from_dict(data) if data else None

    def sids_of(self, sub: str) -> list[str]:
        batch = self.store.batch()
        for slot in range(self.PER_USER):
            batch.get(f"sess-user:{sub}:{slot}")
        return list(dict.fromkeys(sid for sid in batch.run() if sid))

    def end(self, session: IdpSession, reason: str = "logout") -> bool:
        """End a session; its end hooks run once, for whoever ends it first (False: already ended)."""
        self.store.delete(f"sess:{session.id}")
        claimed = self.store.take(f"sess-sid:{session.sid}")
        if claimed is None:
            return False
        ended = IdpSession.from_dict(claimed)  # the latest copy: the id may have rotated since
        if ended.id != session.id:
            self.store.delete(f"sess:{ended.id}")
        self._run_hooks(ended, reason)
        return True

    def sweep(self, now: float | None = None) -> int:
        """End expired sessions that still have their copy (their clients are not told yet).
        Several sweepers may run at once: `take` hands each session to one of them."""
        now = now or time.time()
        current = int(now // 60)
        cursor = self.store.get("sess-due:cursor")  # every minute up to this one is swept
        first = cursor + 1 if isinstance(cursor, int) else current - self.AFTERLIFE // 60
        ended = 0
        for minute in range(max(first, current - self.AFTERLIFE // 60), current + 1):
            for number in range(1, (self.store.get(f"sess-due:{minute}") or 0) + 1):
                sid = self.store.get(f"sess-due:{minute}:{number}")
                data = self.store.get(f"sess-sid:{sid}") if sid else None
                if data is None or data["expires_at"] > now:
                    continue
                claimed = self.store.take(f"sess-sid:{sid}")
                if claimed is not None:
                    self._run_hooks(IdpSession.from_dict(claimed), "expired")
                    ended += 1
            if (minute + 1) * 60 <= now:
                self.store.set("sess-due:cursor", minute, self.AFTERLIFE)
        return ended

    def _run_hooks(self, session: IdpSession, reason: str) -> None:
        for hook in self.end_hooks:
            try:
                hook(session, reason)
            except Exception:  # noqa: BLE001 - a failing listener must not keep a session alive
                log.exception("session end hook failed for sid %s", session.sid)
